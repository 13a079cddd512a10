import { defineConfig } from 'vitest/config';
import { resolve } from 'node:path';

// One config for the dev server (`npm start`: the demo at /, the kernel bench at /bench/),
// the library build and vitest (unit tests beside the code, *.test.ts).
export default defineConfig({
  root: 'src/pages',
  publicDir: resolve(import.meta.dirname, 'public'),
  server: { port: 5173, strictPort: false, fs: { allow: [resolve(import.meta.dirname)] } },
  preview: { port: 4173 },
  // Pre-bundle the browser dependencies at start, so the dev server never reloads a page that
  // is already running (it would when it discovered one on first import).
  // onnxruntime-web (the bench page's peer) is served as shipped: its wasm is found by a `?url` import.
  optimizeDeps: { include: ['@huggingface/tokenizers', '@mlc-ai/web-xgrammar', '@huggingface/jinja', 'idb-keyval', 'comlink', '@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-webgpu'], exclude: ['onnxruntime-web'] },
  build: {
    outDir: resolve(import.meta.dirname, 'dist/pages'),
    emptyOutDir: true,
    rollupOptions: {
      input: {
        demo: resolve(import.meta.dirname, 'src/pages/index.html'),
        bench: resolve(import.meta.dirname, 'src/pages/bench/index.html'),
      },
    },
  },
  test: {
    root: import.meta.dirname,
    include: ['src/**/*.test.ts', 'tools/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
