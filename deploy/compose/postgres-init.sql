-- Runs once, when the local stack's PostgreSQL volume is first initialised (in the database `app`).
-- The library itself is preloaded by the server's command line in deploy/compose.yaml.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
