// The layers of src/ import only downward. LAYERS is the README's "Architecture" list, bottom to
// top (a check below keeps the two the same): a folder (or daemon.ts) may import only what comes
// before it. Every relative import of every src/**/*.ts is read, type-only ones too, and so are
// import() calls; a folder missing from the list fails, so a new one has to be placed.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/config/load.js';

const LAYERS = [
  'core',
  'cron',
  'config',
  'log',
  'lifecycle',
  'db',
  'programs',
  'metrics',
  'health',
  'schedule',
  'status',
  'http',
  'backup',
  'pitr',
  'migrate',
  'maintenance',
  'doctor',
  'embedded',
  'daemon-status.ts',
  'daemon.ts',
  'cli',
];

const SRC = join(PACKAGE_ROOT, 'src');

interface Import {
  from: string; // file, relative to src/
  to: string; // file, relative to src/
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

const IMPORT_RE =
  /(?:^|[\s;])(?:import|export)\s[^'"]*?\bfrom\s*['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** The relative imports in a file's code (comments are blanked first, so an example in one is not read). */
function importsOf(file: string, text: string): Import[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return [...code.matchAll(IMPORT_RE)].map((m) => {
    const target = resolve(dirname(file), m[1] ?? m[2]!).replace(/\.js$/, '.ts');
    return { from: relative(SRC, file), to: relative(SRC, target) };
  });
}

/** The layer of a file: its top folder under src/, or the file itself at the top. */
const layerOf = (file: string) => file.split(sep)[0]!;

const files = sourceFiles(SRC);
const imports = files.flatMap((f) => importsOf(f, readFileSync(f, 'utf8')));

describe('layers of src/', () => {
  it('reads the imports it checks', () => {
    expect(files.length).toBeGreaterThan(100);
    expect(imports.length).toBeGreaterThan(300);
    expect(imports).toContainEqual({ from: join('cli', 'main.ts'), to: 'daemon.ts' });
    expect(imports).toContainEqual({
      from: join('backup', 'storage', 'index.ts'),
      to: join('backup', 'storage', 's3.ts'),
    });
  });

  it('places every folder of src/ in the list', () => {
    const unplaced = [...new Set(files.map((f) => layerOf(relative(SRC, f))))].filter(
      (l) => !LAYERS.includes(l),
    );
    expect(unplaced, 'add each to LAYERS here and to the README list, where it belongs').toEqual([]);
  });

  it('has no import of a layer above the importing one', () => {
    const upward = imports
      .filter((i) => LAYERS.indexOf(layerOf(i.to)) > LAYERS.indexOf(layerOf(i.from)))
      .map((i) => `${i.from} imports ${i.to}: ${layerOf(i.from)} is below ${layerOf(i.to)}`);
    expect(upward).toEqual([]);
  });

  it('has no two folders importing each other, and no files importing each other in a loop', () => {
    const edges = new Set(imports.map((i) => `${layerOf(i.from)} ${layerOf(i.to)}`));
    const mutual = [...edges].filter((e) => {
      const [a, b] = e.split(' ');
      return a !== b && edges.has(`${b} ${a}`);
    });
    expect(mutual).toEqual([]);
    expect(cycles(imports)).toEqual([]);
  });

  it('is the list the README shows, in its order', () => {
    const readme = readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8');
    const section = readme.slice(
      readme.indexOf('\n## Architecture\n'),
      readme.indexOf('\n## ', readme.indexOf('\n## Architecture\n') + 1),
    );
    const listed = [...section.matchAll(/^\d+\. `([^`]+?)\/?`/gm)].map((m) => m[1]);
    expect(listed).toEqual(LAYERS);
  });

  it('catches an import that runs up, and a loop of files', () => {
    const file = join(SRC, 'db', 'x.ts');
    const up = importsOf(
      file,
      "import type { Config } from '../cli/y.js';\n// import { no } from '../http/z.js';",
    );
    expect(up).toEqual([{ from: join('db', 'x.ts'), to: join('cli', 'y.ts') }]);
    expect(
      cycles([
        { from: 'a.ts', to: 'b.ts' },
        { from: 'b.ts', to: 'c.ts' },
        { from: 'c.ts', to: 'a.ts' },
        { from: 'c.ts', to: 'd.ts' },
      ]),
    ).toEqual([['a.ts', 'b.ts', 'c.ts']]);
  });
});

/** The files that import each other in a loop (each strongly connected set of two or more, sorted). */
function cycles(edges: Import[]): string[][] {
  const next = new Map<string, string[]>();
  for (const e of edges) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
  // Tarjan's algorithm
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const set: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        set.push(w);
      } while (w !== v);
      if (set.length > 1) found.push(set.sort());
    }
  };
  for (const v of [...next.keys()].sort()) if (!index.has(v)) visit(v);
  return found;
}
