# syntax=docker/dockerfile:1
# pg-maintd runtime image: Node 24 LTS on Debian slim, the newest PostgreSQL client (18: pg_dump must
# be at least the server's major version, and backs up every older server), tini as PID 1 for signal
# handling, and a non-root user. PITR drills and `pitr restore --start` run a PostgreSQL server of the
# database's own major version: PG_SERVER_MAJORS names the server binaries to carry (no cluster is
# created; build with e.g. --build-arg PG_SERVER_MAJORS="16 18" for a 16 database, or "" for none).

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN npm ci --ignore-scripts
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim AS runtime
ARG PG_CLIENT_MAJOR=18
ARG PG_SERVER_MAJORS=18
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg tini; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_CLIENT_MAJOR}"; \
    install -d /etc/postgresql-common; echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf; \
    for major in ${PG_SERVER_MAJORS}; do apt-get install -y --no-install-recommends "postgresql-${major}"; done; \
    apt-get purge -y curl gnupg; apt-get autoremove -y; rm -rf /var/lib/apt/lists/*; \
    pg_dump --version; \
    groupadd --system --gid 10001 pgmaintd; \
    useradd --system --uid 10001 --gid pgmaintd --home-dir /app --shell /usr/sbin/nologin pgmaintd

ENV NODE_ENV=production \
    LOG_FORMAT=json \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=9188
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
COPY migrations ./migrations

USER 10001:10001
EXPOSE 9188
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9188/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/bin/pg-maintd.js"]
CMD ["run"]
