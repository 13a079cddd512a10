// createEngine: the engine in a dedicated Worker (the default in browsers: the page stays
// responsive while the GPU is fed), or in this thread (worker: false, or a Gpu given by the caller).
// It sits above both runtime/ (the engine) and worker/ (the engine in a Worker), so neither of
// those imports the other's way up: worker/ uses runtime/, runtime/ knows nothing of workers.
//
// With `fallback`, a machine that cannot run the model locally gets the same Engine over an
// OpenAI-compatible server instead: when there is no WebGPU, or the memory plan (checked from the
// headers, before the download) does not fit the GPU. `info.backend` says which, and why.

import { GpuLimitError, GpuOutOfMemoryError, NoWebGPUError, WebmoeError } from './errors.ts';
import { openBrowserGpu } from './gpu/browser.ts';
import { createRemoteEngine, type RemoteEngineOptions } from './remote/engine.ts';
import { createLocalEngine, type CreateEngineOptions as LocalCreateOptions } from './runtime/engine.ts';
import { delegateEngine } from './runtime/delegate_engine.ts';
import { progressWithRetries, resolveModelSource } from './runtime/model_source.ts';
import type { Engine, EngineBackend } from './runtime/types.ts';
import { createWorkerEngine } from './worker/client.ts';

/** The server to use when the model cannot run here (createRemoteEngine's options). */
export type EngineFallback = RemoteEngineOptions;

export interface CreateEngineOptions extends LocalCreateOptions {
  /**
   * An OpenAI-compatible server (webmoe serve, vLLM, SGLang) serving the same model family, used
   * when this machine has no WebGPU or the model does not fit its GPU.
   */
  fallback?: EngineFallback;
}

export async function createEngine(options: CreateEngineOptions): Promise<Engine> {
  const { fallback, ...local } = options;
  if (!fallback) return createHere(local);
  let engine: Engine;
  try {
    engine = await createHere(local);
  } catch (err) {
    if (!rulesOutLocal(err)) throw err;
    const remote = await createRemoteEngine({ ...fallback, signal: fallback.signal ?? options.signal });
    const backend = remote.info.backend as Extract<EngineBackend, { kind: 'remote' }>;
    return withBackend(remote, { ...backend, reason: `not run locally: ${err.message}`, localRefusal: err.code });
  }
  return withBackend(engine, { kind: 'local', reason: 'WebGPU is available and the memory plan fits this GPU' });
}

async function createHere(options: LocalCreateOptions): Promise<Engine> {
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

/** The failures that say this machine cannot run the model, as opposed to a bad checkpoint or argument. */
function rulesOutLocal(err: unknown): err is WebmoeError {
  return err instanceof NoWebGPUError || err instanceof GpuOutOfMemoryError || err instanceof GpuLimitError;
}

/** The engine with `info.backend` set (the info's other fields as they are, getters included). */
function withBackend(engine: Engine, backend: EngineBackend): Engine {
  const info = Object.freeze(Object.defineProperties({}, { ...Object.getOwnPropertyDescriptors(engine.info), backend: { value: backend, enumerable: true } })) as Engine['info'];
  return delegateEngine(engine, { info });
}
