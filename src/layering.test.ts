// The layers of src/ as the design map draws them, checked on every relative import of every .ts
// file (no GPU). RULES below is the whole intended layering; read top-down, each layer may import
// the ones below it, never one above:
//
//   index.ts, node.ts, create_engine.ts, cli/, pages/, bench/   entries and tools (no rule)
//   server/    webmoe serve: the OpenAI HTTP API over an Engine (no Worker, page or kernel)
//   remote/    the Engine API over an OpenAI-compatible server (no GPU, no kernel, no server/)
//   worker/    the engine in a Worker: protocol, host, client   (uses runtime/)
//   runtime/   the engine: sessions, scheduler, generation, chat (knows no Worker and no kernel)
//   model/     the forward pass, weights, the latent cache
//   kernels/   WGSL wrappers and CPU references: gpu/, errors.ts and config.ts only
//   io/, text/ checkpoint bytes; tokenizer and chat template (text/ uses no GPU)
//   gpu/       device, buffers, pipelines
//   errors.ts, config.ts, testing/                               the bottom (no rule)
//
// An arrow never points up, and there are no import cycles. What counts as an import: static
// `import ... from`, `import type`, `export ... from`, side-effect `import '...'`, dynamic
// `import('...')` (a type-position `import('...').T` too) and a Worker's `new URL('./x.ts',
// import.meta.url)`, which bundlers follow like an import. Package imports and `?raw` shader
// imports are not edges.
//
// Test files (*.test.ts) follow their folder's rules, with one exception: they may import test
// helpers from anywhere (isTestHelper: src/testing/, any testing.ts or *_testing.ts, the CPU
// references *.ref.ts and src/model/reference/), since a test needs its oracle and fixtures
// wherever they live. The helpers themselves are ordinary source files and obey their folder's
// rules. The cycle check runs over every file, tests included: nothing may import a test file, so
// a test is a leaf of the graph and can only be on a cycle when something imports it, which is
// itself a fault worth reporting.

import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/** A layer: a folder of src/ ('kernels') or a top-level file ('errors.ts'). */
type Layer = string;

interface Rule {
  layer: Layer;
  /** The layers it may import from (its own is always allowed). */
  only?: Layer[];
  /** The layers it must not import from. */
  not?: Layer[];
}

const RULES: Rule[] = [
  { layer: 'kernels', only: ['kernels', 'gpu', 'errors.ts', 'config.ts'] },
  { layer: 'gpu', not: ['kernels', 'model', 'runtime', 'worker', 'bench', 'cli', 'pages', 'io', 'text'] },
  { layer: 'model', not: ['runtime', 'worker', 'cli', 'pages', 'bench'] },
  { layer: 'runtime', not: ['kernels', 'worker', 'cli', 'pages', 'bench'] },
  { layer: 'worker', not: ['cli', 'pages', 'bench'] },
  { layer: 'server', not: ['kernels', 'worker', 'cli', 'pages', 'bench'] },
  { layer: 'remote', not: ['kernels', 'gpu', 'worker', 'server', 'cli', 'pages', 'bench'] },
  { layer: 'io', not: ['model', 'runtime', 'worker', 'kernels', 'cli', 'pages', 'bench'] },
  { layer: 'text', not: ['model', 'runtime', 'worker', 'kernels', 'gpu', 'cli', 'bench'] },
];

/** What a test file may import from any layer (paths relative to src/). */
function isTestHelper(file: string): boolean {
  const name = posix.basename(file);
  return file.startsWith('testing/') || file.startsWith('model/reference/') || name === 'testing.ts' || name.endsWith('_testing.ts') || name.endsWith('.ref.ts');
}

const SRC = resolve(import.meta.dirname);

/** Every .ts file under src/ (no .d.ts), relative to src/ with '/' separators. */
function sourceFiles(): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) files.push(relative(SRC, path).split('\\').join('/'));
    }
  };
  walk(SRC);
  return files.sort();
}

/** The module specifiers a file names, in every form listed at the top. */
function importSpecifiers(text: string, fileName = 'file.ts'): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const literal = (node: ts.Node | undefined) => {
    if (node && ts.isStringLiteralLike(node)) found.push(node.text);
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) literal(node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) literal(node.moduleReference.expression);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) literal(node.arguments[0]);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) literal(node.argument.literal);
    else if (ts.isNewExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'URL' && node.arguments?.length === 2) {
      const base = node.arguments[1];
      if (ts.isPropertyAccessExpression(base) && ts.isMetaProperty(base.expression) && base.name.text === 'url') literal(node.arguments[0]);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The src/-relative .ts file a relative specifier names, or undefined for packages, `?raw` and non-.ts targets. */
function resolveImport(from: string, specifier: string, known: Set<string>): string | undefined {
  if (!specifier.startsWith('./') && !specifier.startsWith('../')) return undefined;
  const [path, query] = specifier.split('?');
  if (query !== undefined && query.split('&').includes('raw')) return undefined;
  const base = posix.normalize(posix.join(posix.dirname(from), path));
  for (const candidate of [base, `${base}.ts`, `${base}/index.ts`]) if (known.has(candidate)) return candidate;
  return undefined;
}

/** The layer of a src/-relative path: its folder, or the file itself at the top of src/. */
function layerOf(file: string): Layer {
  const slash = file.indexOf('/');
  return slash < 0 ? file : file.slice(0, slash);
}

type Graph = Map<string, string[]>;

function importGraph(): Graph {
  const files = sourceFiles();
  const known = new Set(files);
  const graph: Graph = new Map();
  for (const file of files) {
    const text = readFileSync(join(SRC, file), 'utf8');
    const targets = importSpecifiers(text, file).map((s) => resolveImport(file, s, known)).filter((t): t is string => t !== undefined && t !== file);
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

function describeRule(rule: Rule): string {
  return rule.only ? `${rule.layer} imports only from ${rule.only.join(', ')}` : `${rule.layer} imports nothing from ${rule.not!.join(', ')}`;
}

/** Every import that breaks RULES, as `src/a.ts -> src/b.ts (rule)`. */
function layerViolations(graph: Graph): string[] {
  const out: string[] = [];
  for (const [file, targets] of graph) {
    const layer = layerOf(file);
    const rule = RULES.find((r) => r.layer === layer);
    if (!rule) continue;
    const isTest = file.endsWith('.test.ts');
    for (const target of targets) {
      const to = layerOf(target);
      if (to === layer || (isTest && isTestHelper(target))) continue;
      const broken = rule.only ? !rule.only.includes(to) : rule.not!.includes(to);
      if (broken) out.push(`src/${file} -> src/${target} (${describeRule(rule)})`);
    }
  }
  return out.sort();
}

/**
 * The import cycles: for every edge a -> b inside a strongly connected component, the shortest way
 * back from b to a, as `src/a.ts -> src/b.ts -> ... -> src/a.ts` (each cycle once).
 */
function importCycles(graph: Graph): string[] {
  // Tarjan's strongly connected components.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const component = new Map<string, number>();
  let counter = 0;
  let components = 0;
  const strong = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.set(w, components);
      } while (w !== v);
      components++;
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) strong(v);

  const seen = new Set<string>();
  const cycles: string[] = [];
  for (const [a, targets] of graph) {
    for (const b of targets) {
      if (component.get(a) !== component.get(b)) continue;
      // Breadth-first from b back to a, inside the component.
      const previous = new Map<string, string>([[b, b]]);
      const queue = [b];
      while (queue.length > 0 && !previous.has(a)) {
        const v = queue.shift()!;
        for (const w of graph.get(v) ?? []) {
          if (component.get(w) !== component.get(a) || previous.has(w)) continue;
          previous.set(w, v);
          queue.push(w);
        }
      }
      const back: string[] = [];
      for (let v = a; v !== b; v = previous.get(v)!) back.unshift(v);
      const cycle = [a, b, ...back.slice(0, -1)];
      // One spelling per cycle: rotated to start at its smallest file.
      const first = cycle.indexOf([...cycle].sort()[0]);
      const rotated = [...cycle.slice(first), ...cycle.slice(0, first)];
      const key = rotated.join(' ');
      if (seen.has(key)) continue;
      seen.add(key);
      cycles.push([...rotated, rotated[0]].map((f) => `src/${f}`).join(' -> '));
    }
  }
  return cycles.sort();
}

describe('layering of src/', () => {
  const graph = importGraph();

  it('finds the imports of every form (and skips packages and ?raw shaders)', () => {
    const text = [
      "import { a } from './a.ts';",
      "import type { B } from '../b.ts';",
      "export { c } from './c.ts';",
      "export * from './d.ts';",
      "import './e.ts';",
      "const f = await import('./f.ts');",
      "type G = import('./g.ts').G;",
      "const worker = new URL('./h.ts', import.meta.url);",
      "import shader from '../../shaders/x.wgsl?raw';",
      "import { wrap } from 'comlink';",
      "// import { no } from './comment.ts';",
      "const s = \"import { no } from './string.ts'\";",
    ].join('\n');
    expect(importSpecifiers(text)).toEqual(['./a.ts', '../b.ts', './c.ts', './d.ts', './e.ts', './f.ts', './g.ts', './h.ts', '../../shaders/x.wgsl?raw', 'comlink']);
    const known = new Set(['kernels/a.ts', 'kernels/x.ts', 'gpu/device.ts']);
    expect(resolveImport('kernels/x.ts', './a.ts', known)).toBe('kernels/a.ts');
    expect(resolveImport('kernels/x.ts', '../gpu/device.ts', known)).toBe('gpu/device.ts');
    expect(resolveImport('kernels/x.ts', '../../shaders/x.wgsl?raw', known)).toBeUndefined();
    expect(resolveImport('kernels/x.ts', 'comlink', known)).toBeUndefined();
  });

  it('reports a broken rule and a cycle in the expected form', () => {
    const toy: Graph = new Map([
      ['gpu/device.ts', ['model/a.ts']],
      ['model/a.ts', ['model/b.ts', 'runtime/r.ts']],
      ['model/b.ts', ['model/a.ts']],
      ['runtime/r.ts', ['gpu/device.ts']],
      ['kernels/k.test.ts', ['testing/random.ts', 'model/reference/forward.ts', 'io/x.ts']],
    ]);
    expect(layerViolations(toy)).toEqual([
      'src/gpu/device.ts -> src/model/a.ts (gpu imports nothing from kernels, model, runtime, worker, bench, cli, pages, io, text)',
      'src/kernels/k.test.ts -> src/io/x.ts (kernels imports only from kernels, gpu, errors.ts, config.ts)',
      'src/model/a.ts -> src/runtime/r.ts (model imports nothing from runtime, worker, cli, pages, bench)',
    ]);
    expect(importCycles(toy)).toEqual(['src/gpu/device.ts -> src/model/a.ts -> src/runtime/r.ts -> src/gpu/device.ts', 'src/model/a.ts -> src/model/b.ts -> src/model/a.ts']);
  });

  it('reads the whole tree', () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(graph.get('index.ts')).toContain('errors.ts');
  });

  it('every import follows the layer rules', () => {
    const violations = layerViolations(graph);
    expect(violations, `imports against the layer rules:\n  ${violations.join('\n  ')}\n`).toEqual([]);
  });

  it('no import cycles', () => {
    const cycles = importCycles(graph);
    expect(cycles, `import cycles:\n  ${cycles.join('\n  ')}\n`).toEqual([]);
  });
});
