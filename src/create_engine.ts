// createEngine: the engine in a dedicated Worker (the default in browsers: the page stays
// responsive while the GPU is fed), or in this thread (worker: false, or a Gpu given by the caller).
// It sits above both runtime/ (the engine) and worker/ (the engine in a Worker), so neither of
// those imports the other's way up: worker/ uses runtime/, runtime/ knows nothing of workers.

import { openBrowserGpu } from './gpu/browser.ts';
import { createLocalEngine, type CreateEngineOptions } from './runtime/engine.ts';
import { progressWithRetries, resolveModelSource } from './runtime/model_source.ts';
import type { Engine } from './runtime/types.ts';
import { createWorkerEngine } from './worker/client.ts';

export type { CreateEngineOptions } from './runtime/engine.ts';

export async function createEngine(options: CreateEngineOptions): Promise<Engine> {
  const inWorker = options.worker ?? (typeof Worker !== 'undefined' && options.gpu === undefined);
  if (inWorker) return createWorkerEngine(options);
  const progress = progressWithRetries(options.onProgress);
  const dir = resolveModelSource(options.model, { cacheShards: options.cacheShards, onRetry: progress.onRetry });
  const gpu = options.gpu ?? (await openBrowserGpu());
  try {
    return await createLocalEngine({ ...options, onProgress: progress.onProgress, gpu, dir, ownsGpu: options.gpu === undefined });
  } catch (err) {
    if (options.gpu === undefined) gpu.destroy();
    throw err;
  }
}
