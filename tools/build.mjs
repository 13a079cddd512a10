#!/usr/bin/env node
// Builds the npm package into dist/. Run by `npm run build` and before `npm pack`:
//   dist/index.js   the browser-safe entry `webmoe` (ESM, shaders inlined, no node: imports);
//   dist/node.js    the Node entry `webmoe/node` (the same library plus createNodeEngine);
//   dist/assets/    the engine's Worker, one self-contained file found next to the entries;
//   dist/types/     .d.ts for both entries (tsc, tools/tsconfig.build.json);
//   dist/cli/bin.js the `webmoe` command.
import { build } from 'vite';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const external = [...Object.keys(pkg.dependencies ?? {}), 'webgpu', /^node:/];

// Both entries in one build, so they share one copy of the library (an error thrown by an engine
// from `webmoe/node` is an instance of the class exported by `webmoe`).
const [library] = await build({
  configFile: false,
  root,
  publicDir: false,
  logLevel: 'warn',
  // Relative asset URLs: the bundled Worker is found next to dist/index.js, wherever the package lives.
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    lib: { entry: { index: 'src/index.ts', node: 'src/node.ts' }, formats: ['es'] },
    rollupOptions: { external, output: { chunkFileNames: 'chunks/webmoe-[hash].js' } },
  },
});
assertBrowserSafe(library.output, 'index.js');

await build({
  configFile: false,
  root,
  publicDir: false,
  logLevel: 'warn',
  build: {
    outDir: 'dist/cli',
    emptyOutDir: false,
    target: 'node20',
    ssr: 'src/cli/bin.ts',
    rollupOptions: { external, output: { entryFileNames: 'bin.js' } },
  },
});
chmodSync(join(root, 'dist/cli/bin.js'), 0o755);

execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tools/tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
console.log('built dist/index.js, dist/node.js, the worker, dist/types and dist/cli/bin.js');

/** Fails the build when the browser entry, or a chunk it loads, imports node:* or the Dawn package. */
function assertBrowserSafe(output, entry) {
  const chunks = new Map(output.filter((o) => o.type === 'chunk').map((c) => [c.fileName, c]));
  const seen = new Set();
  const visit = (fileName) => {
    if (seen.has(fileName)) return;
    seen.add(fileName);
    const chunk = chunks.get(fileName);
    for (const id of [...chunk.imports, ...chunk.dynamicImports]) {
      if (chunks.has(id)) visit(id);
      else if (id.startsWith('node:') || id === 'webgpu') throw new Error(`dist/${entry} must run in browsers, but ${fileName} imports ${id}`);
    }
  };
  visit(entry);
}
