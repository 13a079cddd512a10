// The engine's Worker entry, spawned by createWorkerEngine (client.ts): opens the browser's GPU in
// this thread, loads the model from a URL, Files or a directory handle, and serves the page's
// client through comlink.

import { expose } from 'comlink';
import { openBrowserGpu } from '../gpu/browser.ts';
import { createLocalEngine } from '../runtime/engine.ts';
import { progressWithRetries, resolveModelSource } from '../runtime/model_source.ts';
import { createHost } from './host.ts';

expose(
  createHost(async ({ model, cacheShards, ...limits }, { onProgress, signal }) => {
    const progress = progressWithRetries(onProgress);
    const dir = resolveModelSource(model, { cacheShards, onRetry: progress.onRetry });
    const gpu = await openBrowserGpu();
    try {
      // The load request's engine options (maxContext, cacheBudgetBytes, prefillChunk, numerics, weights) as the page gave them.
      const engine = await createLocalEngine({ ...limits, gpu, dir, onProgress: progress.onProgress, signal, ownsGpu: true });
      return { engine, lost: gpu.lost };
    } catch (err) {
      gpu.destroy();
      throw err;
    }
  }),
);
