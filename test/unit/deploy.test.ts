// The deployment material (deploy/kubernetes, deploy/compose.yaml) checked offline against the
// schemas that the real tools use, and against the daemon itself: its routes, its configuration
// schema, its Dockerfile and its alert rules. Nothing here needs a cluster or a Docker engine.
//
// - Kubernetes manifests: kubernetes-models (the Kubernetes OpenAPI schemas, compiled to validators)
//   and @kubernetes-models/prometheus-operator (the monitoring.coreos.com CRD schemas). Those
//   validators do not reject unknown fields, which the API server does (kubectl's default
//   --validate=strict), so every manifest is also type-checked as an object literal against the
//   packages' TypeScript interfaces, whose excess-property check catches misspelt fields.
// - deploy/compose.yaml: the Compose Specification JSON schema shipped in the npm package `dclint`
//   (with ajv), and dclint's correctness and security rules.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, matchesGlob, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { DCLinter } from 'dclint';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { FIELDS, type FieldName } from '../../src/config/fields.js';
import { loadConfig, PACKAGE_ROOT } from '../../src/config/load.js';
import { parseDuration } from '../../src/core/units.js';
import { tempDir } from '../support/temp.js';

const ROOT = PACKAGE_ROOT;
const K8S_DIR = join(ROOT, 'deploy', 'kubernetes');
const COMPOSE_FILE = join(ROOT, 'deploy', 'compose.yaml');
const RULES_FILE = join(ROOT, 'deploy', 'prometheus', 'pg-maintd.rules.yaml');
const GENERATOR = join(K8S_DIR, 'generate-prometheusrule.mjs');
const read = (path: string) => readFileSync(path, 'utf8');

// ---------------------------------------------------------------------------------------------
// The facts the deployment must agree with
// ---------------------------------------------------------------------------------------------

const serverSource = read(join(ROOT, 'src', 'http', 'server.ts'));
const dockerfile = read(join(ROOT, 'Dockerfile'));
const pkg = JSON.parse(read(join(ROOT, 'package.json'))) as { version: string };
const HTTP_PORT = FIELDS.HTTP_PORT.default;
const SHUTDOWN_GRACE_MS = parseDuration(FIELDS.SHUTDOWN_GRACE_PERIOD.default)!;
const dockerInstr = (name: string) =>
  dockerfile
    .split('\n')
    .filter((l) => l.startsWith(`${name} `))
    .map((l) => l.slice(name.length + 1).trim());
const [DOCKER_UID, DOCKER_GID] = dockerInstr('USER')[0]!.split(':').map(Number) as [number, number];

/** Variables the deployment may set that are not pg-maintd settings: libpq's and the AWS SDK's. */
const EXTERNAL_ENV = /^(PGPASSWORD|AWS_[A-Z0-9_]+)$/;
const isField = (key: string): key is FieldName => Object.hasOwn(FIELDS, key);

type Labels = Record<string, string>;
const selects = (selector: Labels | undefined, labels: Labels | undefined) =>
  !!selector &&
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** Kubernetes quantities as used here: 512Mi, 1Gi, 100m, 2. */
function quantity(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?$/.exec(q);
  if (!m) throw new Error(`unsupported quantity ${q}`);
  const unit = { m: 1e-3, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

/* eslint-disable @typescript-eslint/no-explicit-any -- manifests are parsed YAML, checked below */
type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Labels; annotations?: Labels };
  [k: string]: any;
};

const MODELS: Record<string, { new (data: any): { validate(): void } }> = {
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
};
/** The TypeScript interface of each kind, for the excess-property check. */
const TYPES: Record<string, [module: string, type: string]> = {
  'v1/ServiceAccount': ['kubernetes-models/v1/ServiceAccount', 'IServiceAccount'],
  'v1/ConfigMap': ['kubernetes-models/v1/ConfigMap', 'IConfigMap'],
  'v1/Secret': ['kubernetes-models/v1/Secret', 'ISecret'],
  'v1/Service': ['kubernetes-models/v1/Service', 'IService'],
  'apps/v1/Deployment': ['kubernetes-models/apps/v1/Deployment', 'IDeployment'],
  'policy/v1/PodDisruptionBudget': [
    'kubernetes-models/policy/v1/PodDisruptionBudget',
    'IPodDisruptionBudget',
  ],
  'networking.k8s.io/v1/NetworkPolicy': [
    'kubernetes-models/networking.k8s.io/v1/NetworkPolicy',
    'INetworkPolicy',
  ],
  'monitoring.coreos.com/v1/ServiceMonitor': [
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor',
    'IServiceMonitor',
  ],
  'monitoring.coreos.com/v1/PrometheusRule': [
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule',
    'IPrometheusRule',
  ],
};
const typeKey = (m: { apiVersion: string; kind: string }) => `${m.apiVersion}/${m.kind}`;

const kustomization = parse(read(join(K8S_DIR, 'kustomization.yaml'))) as {
  resources: string[];
  images?: { name: string; newTag?: string }[];
};

function loadManifests(): { file: string; doc: Manifest }[] {
  const out: { file: string; doc: Manifest }[] = [];
  for (const file of kustomization.resources) {
    for (const d of parseAllDocuments(read(join(K8S_DIR, file)))) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0]!.message}`);
      const doc = d.toJS() as Manifest | null;
      if (doc) out.push({ file, doc });
    }
  }
  return out;
}

/** Type-checks object literals against the models' interfaces; returns the diagnostics by name. */
function typecheck(objects: { name: string; doc: Manifest }[]): Map<string, string[]> {
  const virtual = join(ROOT, 'test', 'unit', '__deploy_manifest_types__.ts');
  const imports = new Map<string, string>();
  const lines: string[] = [];
  const starts: { name: string; line: number }[] = [];
  for (const { doc } of objects) {
    const t = TYPES[typeKey(doc)];
    if (!t) throw new Error(`no type for ${typeKey(doc)}`);
    imports.set(t[1], t[0]);
  }
  for (const [type, mod] of imports) lines.push(`import type { ${type} } from '${mod}';`);
  let line = lines.length; // physical lines so far: one per import
  for (const [i, { name, doc }] of objects.entries()) {
    const statement = `export const m${i}: ${TYPES[typeKey(doc)]![1]} = ${JSON.stringify(doc, null, 2)};`;
    starts.push({ name, line });
    lines.push(statement);
    line += statement.split('\n').length;
  }
  const source = lines.join('\n');
  const { config } = ts.readConfigFile(join(ROOT, 'tsconfig.json'), ts.sys.readFile);
  const { options } = ts.parseJsonConfigFileContent(config, ts.sys, ROOT);
  const host = ts.createCompilerHost({ ...options, noEmit: true });
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (file, lang, ...rest) =>
    resolve(file) === virtual
      ? ts.createSourceFile(file, source, lang, true)
      : getSourceFile(file, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (file) => resolve(file) === virtual || fileExists(file);
  const program = ts.createProgram([virtual], { ...options, noEmit: true }, host);
  const sf = program.getSourceFile(virtual)!;
  const byName = new Map<string, string[]>(objects.map((o) => [o.name, []]));
  for (const d of [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]) {
    const at = d.start === undefined ? 0 : sf.getLineAndCharacterOfPosition(d.start).line;
    const owner = starts.filter((s) => s.line <= at).at(-1)?.name ?? '(imports)';
    const list = byName.get(owner) ?? [];
    list.push(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    byName.set(owner, list);
  }
  return byName;
}

describe('Kubernetes base (deploy/kubernetes)', () => {
  const manifests = loadManifests();
  const find = (kind: string) => {
    const found = manifests.filter((m) => m.doc.kind === kind);
    expect(found, kind).toHaveLength(1);
    return found[0]!.doc;
  };
  const deployment = find('Deployment');
  const service = find('Service');
  const serviceMonitor = find('ServiceMonitor');
  const configMap = find('ConfigMap');
  const secret = find('Secret');
  const podSpec = deployment.spec.template.spec;
  const podLabels = deployment.spec.template.metadata.labels as Labels;
  const container = podSpec.containers.find((c: any) => c.name === 'pg-maintd');

  it('lists every manifest in kustomization.yaml, and every listed file exists', () => {
    for (const f of kustomization.resources) expect(existsSync(join(K8S_DIR, f)), f).toBe(true);
    const onDisk = readdirSync(K8S_DIR).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml');
    expect([...onDisk].sort()).toEqual([...kustomization.resources].sort());
    expect(new Set(manifests.map((m) => m.doc.kind))).toEqual(
      new Set([
        'ServiceAccount',
        'ConfigMap',
        'Secret',
        'Deployment',
        'Service',
        'PodDisruptionBudget',
        'NetworkPolicy',
        'ServiceMonitor',
        'PrometheusRule',
      ]),
    );
  });

  it('every manifest validates against the Kubernetes API / Prometheus Operator CRD schemas', () => {
    for (const { file, doc } of manifests) {
      const Model = MODELS[typeKey(doc)];
      expect(Model, `${file}: ${typeKey(doc)} has no schema`).toBeDefined();
      const model = new Model!(doc);
      expect(() => model.validate(), `${file} (${doc.kind})`).not.toThrow();
      expect(doc.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
  });

  it('the schema validation is not vacuous: broken manifests are refused', () => {
    const broken = structuredClone(deployment);
    broken.spec.replicas = 'two';
    expect(() => new MODELS['apps/v1/Deployment']!(broken).validate()).toThrow(/replicas/);
    const badInterval = structuredClone(serviceMonitor);
    badInterval.spec.endpoints[0].interval = '30 seconds';
    expect(() => new MODELS['monitoring.coreos.com/v1/ServiceMonitor']!(badInterval).validate()).toThrow(
      /interval/,
    );
  });

  it('no manifest has a field the API does not know (strict field validation)', () => {
    const misspelt = structuredClone(deployment);
    misspelt.spec.template.spec.containers[0].livenessprobe =
      misspelt.spec.template.spec.containers[0].livenessProbe;
    // the control goes first, so an error in it cannot be blamed on a manifest or the reverse
    const diagnostics = typecheck([
      { name: 'negative control', doc: misspelt },
      ...manifests.map(({ file, doc }) => ({ name: `${file} ${doc.kind}`, doc })),
    ]);
    expect(diagnostics.get('negative control')!.join('\n')).toMatch(/livenessprobe/);
    diagnostics.delete('negative control');
    for (const [name, messages] of diagnostics) expect(messages, name).toEqual([]);
  }, 60_000);

  it('kustomize builds the base (when kubectl is installed)', (ctx) => {
    const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
    if (kubectl.status !== 0) return ctx.skip('kubectl is not installed');
    const built = execFileSync('kubectl', ['kustomize', K8S_DIR], { encoding: 'utf8' });
    const docs = parseAllDocuments(built).map((d) => d.toJS() as Manifest);
    expect(docs.map(typeKey).sort()).toEqual(manifests.map((m) => typeKey(m.doc)).sort());
    for (const doc of docs) expect(() => new MODELS[typeKey(doc)]!(doc).validate()).not.toThrow();
    const image = docs.find((d) => d.kind === 'Deployment')!.spec.template.spec.containers[0].image;
    expect(image).toBe(`ghcr.io/pg-maintd/pg-maintd:${pkg.version}`);
  });

  describe('Deployment', () => {
    it('runs 2 replicas of the released image', () => {
      expect(deployment.spec.replicas).toBe(2);
      expect(container.image).toBe(`ghcr.io/pg-maintd/pg-maintd:${pkg.version}`);
      expect(kustomization.images).toContainEqual({
        name: 'ghcr.io/pg-maintd/pg-maintd',
        newTag: pkg.version,
      });
      expect(selects(deployment.spec.selector.matchLabels, podLabels)).toBe(true);
    });

    it('exposes the HTTP port of the config and the Dockerfile as the named port `metrics`', () => {
      expect(container.ports).toEqual([{ name: 'metrics', containerPort: HTTP_PORT, protocol: 'TCP' }]);
      expect(dockerInstr('EXPOSE')).toEqual([String(HTTP_PORT)]);
      expect(Number(configMap.data.HTTP_PORT ?? HTTP_PORT)).toBe(HTTP_PORT);
      expect(configMap.data.HTTP_HOST).toBe('0.0.0.0');
    });

    it('probes the routes the server serves, on the metrics port', () => {
      for (const route of ['/healthz', '/readyz', '/metrics']) {
        expect(serverSource, route).toContain(`this.app.get('${route}'`);
      }
      expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
      if (container.startupProbe)
        expect(container.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      // liveness must tolerate a stall up to LIVENESS_MAX_LAG before the kubelet restarts the pod
      const lp = container.livenessProbe;
      expect(lp.periodSeconds * lp.failureThreshold * 1000).toBeGreaterThan(
        parseDuration(FIELDS.LIVENESS_MAX_LAG.default)!,
      );
    });

    it('gives the daemon more time to stop than its own SHUTDOWN_GRACE_PERIOD', () => {
      const effective = parseDuration(
        configMap.data.SHUTDOWN_GRACE_PERIOD ?? FIELDS.SHUTDOWN_GRACE_PERIOD.default,
      )!;
      expect(podSpec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(SHUTDOWN_GRACE_MS);
      expect(podSpec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(effective);
    });

    it('runs as the Dockerfile user, non-root, read-only, without capabilities, under seccomp', () => {
      expect(podSpec.securityContext).toMatchObject({
        runAsNonRoot: true,
        runAsUser: DOCKER_UID,
        runAsGroup: DOCKER_GID,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      expect(container.securityContext).toMatchObject({
        runAsNonRoot: true,
        runAsUser: DOCKER_UID,
        runAsGroup: DOCKER_GID,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ['ALL'] },
        seccompProfile: { type: 'RuntimeDefault' },
      });
      expect(container.securityContext.privileged ?? false).toBe(false);
      expect(container.securityContext.capabilities.add ?? []).toEqual([]);
      const tmp = container.volumeMounts.find((v: any) => v.mountPath === '/tmp');
      expect(tmp).toBeDefined();
      expect(podSpec.volumes.find((v: any) => v.name === tmp.name).emptyDir).toBeDefined();
      // backups go to S3 here; a local BACKUP_DIR would need a writable volume
      if (!configMap.data.S3_BUCKET) {
        const dir = configMap.data.BACKUP_DIR ?? FIELDS.BACKUP_DIR.default;
        expect(container.volumeMounts.map((v: any) => v.mountPath)).toContain(resolve('/app', dir));
      }
    });

    it('has resources that fit a backup, and compression threads within the CPU limit', () => {
      const { requests, limits } = container.resources;
      expect(quantity(limits.memory)).toBeGreaterThanOrEqual(256 * 1024 ** 2);
      expect(quantity(requests.memory)).toBeLessThanOrEqual(quantity(limits.memory));
      expect(quantity(requests.cpu)).toBeGreaterThan(0);
      // 0 means one thread per core of the node, whatever the pod's CPU limit
      const threads = Number(
        configMap.data.BACKUP_COMPRESSION_THREADS ?? FIELDS.BACKUP_COMPRESSION_THREADS.default,
      );
      expect(threads).toBeGreaterThan(0);
      if (limits.cpu !== undefined) expect(threads).toBeLessThanOrEqual(Math.ceil(quantity(limits.cpu)));
    });

    it('takes its environment from the ConfigMap and the Secret, as the ServiceAccount', () => {
      expect(container.envFrom).toEqual([
        { configMapRef: { name: configMap.metadata.name } },
        { secretRef: { name: secret.metadata.name } },
      ]);
      expect(container.env ?? []).toEqual([]);
      expect(podSpec.serviceAccountName).toBe(find('ServiceAccount').metadata.name);
    });
  });

  describe('configuration', () => {
    it('ConfigMap and Secret keys are pg-maintd settings (or PGPASSWORD / AWS_*)', () => {
      for (const key of [...Object.keys(configMap.data), ...Object.keys(secret.stringData ?? secret.data)]) {
        expect(isField(key) || EXTERNAL_ENV.test(key), key).toBe(true);
      }
      for (const key of Object.keys(configMap.data))
        expect(FIELDS[key as FieldName], key).toHaveProperty('doc');
    });

    it('the daemon accepts the whole environment (its own configuration loader)', () => {
      const env = { ...configMap.data, ...secret.stringData } as Record<string, string>;
      const { config } = loadConfig({ env });
      expect(config.http.port).toBe(HTTP_PORT);
    });

    it('keeps secrets in the Secret, as marked placeholders', () => {
      const data = secret.stringData as Record<string, string>;
      for (const key of Object.keys(configMap.data)) {
        expect(isField(key) && 'secret' in FIELDS[key] && FIELDS[key].secret, `${key} is secret`).toBeFalsy();
      }
      expect(new URL(data.DATABASE_URL!).password).toBe('');
      expect(data.PGPASSWORD).toBe('change-me');
      expect(Object.values(secret.metadata.annotations ?? {}).join(' ')).toMatch(/placeholder/);
    });

    it('has an IRSA annotation example on the ServiceAccount', () => {
      const sa = find('ServiceAccount');
      expect(sa.metadata.annotations?.['eks.amazonaws.com/role-arn']).toMatch(
        /^arn:aws:iam::\d{12}:role\/[\w+=,.@-]+$/,
      );
    });
  });

  describe('scraping', () => {
    it('the Service selects the pods and names the metrics port', () => {
      expect(selects(service.spec.selector, podLabels)).toBe(true);
      const port = service.spec.ports.find((p: any) => p.name === 'metrics');
      expect(port).toMatchObject({ port: HTTP_PORT, targetPort: 'metrics' });
      expect(container.ports.map((p: any) => p.name)).toContain(port.targetPort);
      // a database outage makes every pod unready; Prometheus must still scrape pg_up=0
      expect(service.spec.publishNotReadyAddresses).toBe(true);
    });

    it('the ServiceMonitor selects the Service and scrapes its named port', () => {
      const spec = serviceMonitor.spec;
      expect(selects(spec.selector.matchLabels, service.metadata.labels)).toBe(true);
      expect(spec.namespaceSelector ?? {}).toEqual({});
      expect(spec.endpoints).toHaveLength(1);
      const [ep] = spec.endpoints;
      expect(service.spec.ports.map((p: any) => p.name)).toContain(ep.port);
      expect(ep).toMatchObject({ port: 'metrics', path: '/metrics', interval: '30s', honorLabels: true });
      expect(parseDuration(ep.scrapeTimeout ?? '10s')!).toBeLessThan(parseDuration(ep.interval)!);
      // the operator names the scrape job after the Service (or its jobLabel label); PgMaintdDown
      // matches up{job=~".*pg-maintd.*"}
      const jobName = spec.jobLabel ? service.metadata.labels?.[spec.jobLabel] : service.metadata.name;
      expect(jobName).toContain('pg-maintd');
    });

    it('the PodDisruptionBudget and the NetworkPolicy select the pods', () => {
      const pdb = find('PodDisruptionBudget');
      expect(selects(pdb.spec.selector.matchLabels, podLabels)).toBe(true);
      expect(pdb.spec.maxUnavailable === 1 || pdb.spec.minAvailable === 1).toBe(true);
      const np = find('NetworkPolicy');
      expect(selects(np.spec.podSelector.matchLabels, podLabels)).toBe(true);
    });

    it('the NetworkPolicy lets in only Prometheus on the metrics port, and out only DNS, PostgreSQL, HTTPS', () => {
      const np = find('NetworkPolicy').spec;
      expect([...np.policyTypes].sort()).toEqual(['Egress', 'Ingress']);
      expect(np.ingress).toHaveLength(1);
      const [rule] = np.ingress;
      expect(rule.ports).toEqual([{ port: 'metrics', protocol: 'TCP' }]);
      expect(rule.from.length).toBeGreaterThan(0);
      for (const peer of rule.from) {
        expect(Object.keys(peer.namespaceSelector?.matchLabels ?? {}).length).toBeGreaterThan(0);
        expect(Object.keys(peer.podSelector?.matchLabels ?? {}).length).toBeGreaterThan(0);
      }
      const egress = np.egress.flatMap((r: any) => r.ports.map((p: any) => `${p.port}/${p.protocol}`)).sort();
      expect(egress).toEqual(['443/TCP', '53/TCP', '53/UDP', '5432/TCP']);
    });
  });

  describe('PrometheusRule', () => {
    it('holds exactly the groups of deploy/prometheus/pg-maintd.rules.yaml', () => {
      const rules = parse(read(RULES_FILE)) as { groups: unknown[] };
      const pr = find('PrometheusRule');
      expect(pr.spec).toEqual({ groups: rules.groups });
      expect(rules.groups.length).toBeGreaterThan(0);
    });

    it('is exactly what generate-prometheusrule.mjs generates from the rules file', () => {
      const generated = execFileSync(process.execPath, [GENERATOR, '--stdout'], { encoding: 'utf8' });
      expect(read(join(K8S_DIR, 'prometheusrule.yaml'))).toBe(generated);
    });
  });
});
/* eslint-enable @typescript-eslint/no-explicit-any */

// ---------------------------------------------------------------------------------------------
// Compose
// ---------------------------------------------------------------------------------------------

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string };
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  user?: string;
  read_only?: boolean;
  tmpfs?: string[];
  cap_drop?: string[];
  stop_grace_period?: string;
}

describe('local stack (deploy/compose.yaml)', () => {
  const text = read(COMPOSE_FILE);
  const compose = parse(text) as { services: Record<string, ComposeService> };
  const services = compose.services;
  const daemon = services['pg-maintd']!;
  const env = daemon.environment!;
  const deployDir = dirname(COMPOSE_FILE);
  const require = createRequire(import.meta.url);
  const schemaPath = join(dirname(require.resolve('dclint/package.json')), 'schemas', 'compose.schema.json');

  it('validates against the Compose Specification schema', () => {
    // draft-07, ajv's default; its `$schema` is spelt https://json-schema.org/draft-07/schema (no
    // fragment), an alias ajv does not know, so it is dropped
    const { $schema: _draft, ...schema } = JSON.parse(read(schemaPath)) as Record<string, unknown>;
    expect(_draft).toMatch(/draft-07/);
    const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true });
    const validate = ajv.compile(schema);
    expect(validate(compose) ? [] : validate.errors).toEqual([]);
    // and the schema is strict enough to catch a misspelt key
    expect(validate({ services: { x: { image: 'x', enviroment: {} } } })).toBe(false);
  });

  it("passes dclint's correctness and security rules", () => {
    const style = [
      'service-dependencies-alphabetical-order',
      'service-keys-order',
      'service-ports-alphabetical-order',
      'services-alphabetical-order',
      'top-level-properties-order',
    ];
    const linter = new DCLinter({
      rules: Object.fromEntries(style.map((r) => [r, 0])),
      quiet: false,
      debug: false,
      exclude: [],
    });
    // (dclint's declarations use extensionless imports, which NodeNext cannot follow: typed here)
    const [result] = linter.lintFiles([COMPOSE_FILE], false) as {
      messages: { line: number; message: string; rule: string }[];
    }[];
    expect(result!.messages.map((m) => `${m.line}: ${m.message} (${m.rule})`)).toEqual([]);
  });

  it('has every service of the stack, ports on 127.0.0.1 only', () => {
    expect(Object.keys(services).sort()).toEqual(
      ['grafana', 'minio', 'minio-bucket', 'pg-maintd', 'postgres', 'prometheus'].sort(),
    );
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) expect(p, name).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
    }
  });

  it('runs PostgreSQL 17 with pg_stat_statements preloaded, I/O timing on, and a health check', () => {
    const pg = services.postgres!;
    expect(pg.image).toBe('postgres:17');
    expect(pg.command).toContain('shared_preload_libraries=pg_stat_statements');
    expect(pg.command).toContain('track_io_timing=on');
    expect(pg.healthcheck?.test.join(' ')).toMatch(/pg_isready/);
  });

  it('builds pg-maintd from the Dockerfile, as its user, on its port', () => {
    expect(resolve(deployDir, daemon.build!.context)).toBe(ROOT);
    expect(existsSync(join(ROOT, daemon.build!.dockerfile ?? 'Dockerfile'))).toBe(true);
    expect(daemon.user).toBe(`${DOCKER_UID}:${DOCKER_GID}`);
    expect(daemon.ports).toEqual([`127.0.0.1:${HTTP_PORT}:${HTTP_PORT}`]);
    expect(Number(env.HTTP_PORT ?? HTTP_PORT)).toBe(HTTP_PORT);
    expect(dockerfile).toContain(`HTTP_PORT=${HTTP_PORT}`);
    expect(daemon.read_only).toBe(true);
    expect(daemon.tmpfs).toContain('/tmp');
    expect(daemon.cap_drop).toEqual(['ALL']);
  });

  it('waits for a healthy database and the bucket, and stops within its grace', () => {
    expect(daemon.depends_on).toMatchObject({
      postgres: { condition: 'service_healthy' },
      'minio-bucket': { condition: 'service_completed_successfully' },
    });
    expect(services['minio-bucket']!.depends_on).toMatchObject({ minio: { condition: 'service_healthy' } });
    expect(services.minio!.healthcheck).toBeDefined();
    // Compose's default stop grace is 10 s: the drain needs SHUTDOWN_GRACE_PERIOD
    const grace = parseDuration(env.SHUTDOWN_GRACE_PERIOD ?? FIELDS.SHUTDOWN_GRACE_PERIOD.default)!;
    expect(parseDuration(daemon.stop_grace_period ?? '10s')!).toBeGreaterThan(grace);
  });

  it('configures pg-maintd with real settings, for MinIO and a TLS-less local database', () => {
    for (const key of Object.keys(env)) expect(isField(key) || EXTERNAL_ENV.test(key), key).toBe(true);
    const { config } = loadConfig({ env });
    expect(config.http.port).toBe(HTTP_PORT);
    expect(env).toMatchObject({
      DB_SSL_MODE: 'disable',
      S3_ENDPOINT: 'http://minio:9000',
      S3_FORCE_PATH_STYLE: 'true',
    });
    expect(new URL(env.DATABASE_URL!).hostname).toBe('postgres');
    expect(new URL(env.DATABASE_URL!).password).toBe('');
    expect(env.PGPASSWORD).toBe(services.postgres!.environment!.POSTGRES_PASSWORD);
    // MinIO's credentials, and the bucket the one-shot container makes
    const minio = services.minio!.environment!;
    expect([env.AWS_ACCESS_KEY_ID, env.AWS_SECRET_ACCESS_KEY]).toEqual([
      minio.MINIO_ROOT_USER,
      minio.MINIO_ROOT_PASSWORD,
    ]);
    const mc = services['minio-bucket']!;
    expect(mc.command).toContain(`local/${env.S3_BUCKET}`);
    const mcHost = new URL(mc.environment!.MC_HOST_local!);
    expect([mcHost.username, mcHost.password, mcHost.host]).toEqual([
      minio.MINIO_ROOT_USER,
      minio.MINIO_ROOT_PASSWORD,
      'minio:9000',
    ]);
  });

  const mounts = (s: ComposeService) =>
    (s.volumes ?? [])
      .filter((v) => v.startsWith('.'))
      .map((v) => {
        const [source, target] = v.split(':') as [string, string];
        return { source: resolve(deployDir, source), target };
      });

  it('mounts files that exist in the repository', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const m of mounts(s)) expect(existsSync(m.source), `${name}: ${m.source}`).toBe(true);
    }
  });

  it('Prometheus scrapes pg-maintd with honor_labels and loads the rules file', () => {
    const prom = services.prometheus!;
    const promMounts = mounts(prom);
    const configMount = promMounts.find((m) => m.target === '/etc/prometheus/prometheus.yml')!;
    expect(configMount.source).toBe(join(deployDir, 'compose', 'prometheus.yml'));
    const rulesMount = promMounts.find((m) => m.source === RULES_FILE)!;
    expect(rulesMount).toBeDefined();
    const cfg = parse(read(configMount.source)) as {
      rule_files: string[];
      scrape_configs: { job_name: string; honor_labels?: boolean; static_configs: { targets: string[] }[] }[];
    };
    expect(cfg.rule_files.some((g) => matchesGlob(rulesMount.target, g))).toBe(true);
    const job = cfg.scrape_configs.find((j) =>
      j.static_configs.some((s) => s.targets.includes(`pg-maintd:${HTTP_PORT}`)),
    );
    expect(job?.honor_labels).toBe(true);
    // PgMaintdDown matches up{job=~".*pg-maintd.*"}
    expect(job?.job_name).toContain('pg-maintd');
  });

  it('the Prometheus config passes promtool check config (when promtool is installed)', (ctx) => {
    if (spawnSync('promtool', ['--version']).status !== 0) return ctx.skip('promtool is not installed');
    const dir = tempDir('pgmaintd-compose-prom-');
    try {
      const cfg = parse(read(join(deployDir, 'compose', 'prometheus.yml'))) as { rule_files: string[] };
      cfg.rule_files = [RULES_FILE]; // where the container finds it, /etc/prometheus/rules/, is mounted from here
      writeFileSync(join(dir, 'prometheus.yml'), JSON.stringify(cfg));
      const r = spawnSync('promtool', ['check', 'config', join(dir, 'prometheus.yml')], { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('Grafana gets the provisioning files and the dashboards where the provider looks', () => {
    const gm = mounts(services.grafana!);
    const target = (source: string) => gm.find((m) => m.source === join(ROOT, source))?.target;
    expect(target('dashboards/provisioning/datasource.yaml')).toMatch(
      /^\/etc\/grafana\/provisioning\/datasources\//,
    );
    expect(target('dashboards/provisioning/dashboards.yaml')).toMatch(
      /^\/etc\/grafana\/provisioning\/dashboards\//,
    );
    const dashboardsDir = target('dashboards');
    expect(dashboardsDir).toBeDefined();
    const provider = parse(read(join(ROOT, 'dashboards', 'provisioning', 'dashboards.yaml'))) as {
      providers: { options?: { path?: string } }[];
    };
    const paths = provider.providers.map((p) => p.options?.path);
    expect(
      paths.some((p) => p !== undefined && (p === dashboardsDir || p.startsWith(`${dashboardsDir}/`))),
    ).toBe(true);
    const ds = parse(read(join(ROOT, 'dashboards', 'provisioning', 'datasource.yaml'))) as {
      datasources: { type: string; url?: string }[];
    };
    const prom = ds.datasources.find((d) => d.type === 'prometheus');
    expect(prom?.url && new URL(prom.url).host).toBe('prometheus:9090');
  });
});
