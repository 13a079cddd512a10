#!/usr/bin/env node
// Builds the npm package into dist/: the library (dist/index.js, ESM, shaders inlined) and the
// `webmoe` command for Node (dist/cli/bin.js). Run by `npm run build` and before `npm pack`.
import { build } from 'vite';
import { chmodSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const external = [...Object.keys(pkg.dependencies ?? {}), 'webgpu', /^node:/];

await build({
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
    lib: { entry: 'src/index.ts', formats: ['es'], fileName: 'index' },
    rollupOptions: { external },
  },
});

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
console.log('built dist/index.js and dist/cli/bin.js');
