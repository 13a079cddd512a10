// createEngine: the engine in a dedicated Worker (the default in browsers: the page stays
// responsive while the GPU is fed), or in this thread (worker: false, or a Gpu given by the caller).

import { openBrowserGpu } from '../gpu/browser.ts';
import type { Gpu } from '../gpu/device.ts';
import { createWorkerEngine } from '../worker/client.ts';
import { createLocalEngine, type LocalEngineOptions } from './engine.ts';
import { resolveModelSource, type ModelSource } from './model_source.ts';
import type { Engine } from './types.ts';

export interface CreateEngineOptions extends Omit<LocalEngineOptions, 'gpu' | 'dir' | 'ownsGpu'> {
  /** A URL of the checkpoint folder, browser Files or a directory handle, or a CheckpointDir (in-thread only). */
  model: ModelSource;
  /** Host the engine in a Worker. Default: true where Workers exist and no `gpu` is given. */
  worker?: boolean;
  /** In-thread only: a device opened by the caller (it stays the caller's to destroy). */
  gpu?: Gpu;
  /** Keep downloaded shards in IndexedDB (default true in browsers). */
  cacheShards?: boolean;
}

export async function createEngine(options: CreateEngineOptions): Promise<Engine> {
  const inWorker = options.worker ?? (typeof Worker !== 'undefined' && options.gpu === undefined);
  if (inWorker) return createWorkerEngine(options);
  const dir = resolveModelSource(options.model, { cacheShards: options.cacheShards });
  const gpu = options.gpu ?? (await openBrowserGpu());
  try {
    return await createLocalEngine({ ...options, gpu, dir, ownsGpu: options.gpu === undefined });
  } catch (err) {
    if (options.gpu === undefined) gpu.destroy();
    throw err;
  }
}
