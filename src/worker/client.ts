// The page's end of the engine in a Worker, with the same Engine API as the engine in this thread.
// An AbortSignal stays here and becomes a request id (host.abort, once); streamed chunks arrive in
// batches and wait in a queue for the consumer; errors come back in their own classes; when the
// worker dies or its GPU device is lost, every pending and later call fails with a typed error.

import { proxy, wrap, type Endpoint, type Remote } from 'comlink';
import { AbortError, ArgumentError, DeviceLostError, throwIfAborted, WebmoeError } from '../errors.ts';
import type { CreateEngineOptions } from '../runtime/engine.ts';
import { isCheckpointDir } from '../runtime/model_source.ts';
import type { ChatCompletionChunk, ChatCompletionRequest, Engine, EngineProgress, GenerateChunk, ModelInfo } from '../runtime/types.ts';
import { ChunkQueue, fromWireError, isWireError, type ChunkSink, type LoadRequest, type WireModelSource, type WorkerHost } from './protocol.ts';

/** What the client needs of a Worker (a MessagePort with a terminate() in tests). */
export interface WorkerLike extends Endpoint {
  terminate(): void;
}

export async function createWorkerEngine(options: CreateEngineOptions): Promise<Engine> {
  const request = loadRequest(options);
  const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'webmoe-engine' });
  return connectWorkerEngine(worker, request, options);
}

/** Checks before a worker starts that the options can cross to it. */
export function loadRequest(options: CreateEngineOptions): LoadRequest {
  if (options.gpu) throw new ArgumentError('a GPU device opened in this thread cannot move to the engine\'s Worker: pass worker: false with gpu');
  const { maxContext, cacheBudgetBytes, prefillChunk, cacheShards, numerics, weights, maxBindingMib, gpuBudgetMib, expertSlots, expertStore, draftVocab } = options;
  return { model: wireModel(options.model), maxContext, cacheBudgetBytes, prefillChunk, cacheShards, numerics, weights, maxBindingMib, gpuBudgetMib, expertSlots, expertStore, draftVocab };
}

function wireModel(model: CreateEngineOptions['model']): WireModelSource {
  if (isCheckpointDir(model)) {
    throw new ArgumentError('a CheckpointDir holds functions and cannot be sent to the engine\'s Worker: pass worker: false to load it in this thread, or give a URL, Files or a directory handle');
  }
  if (typeof model === 'string' || model instanceof URL) {
    // Relative to the page, not to the worker's script.
    try {
      return new URL(String(model), globalThis.location?.href).href;
    } catch {
      return String(model); // the worker's resolveModelSource says why it is not a URL
    }
  }
  if (typeof FileSystemDirectoryHandle !== 'undefined' && model instanceof FileSystemDirectoryHandle) return model;
  if (typeof model === 'object' && model !== null && 'length' in model) return Array.from(model);
  throw new ArgumentError('model must be a URL, a list of Files, a directory handle or a CheckpointDir');
}

/**
 * How long an abort or unload waits for the worker to answer before terminating it: a worker
 * stuck in a long computation (a hostile template, a huge config) never reads its messages.
 */
export const WORKER_GRACE_MS = 2000;

/** The engine over a worker that runs worker.ts (or any endpoint serving createHost). */
export async function connectWorkerEngine(
  worker: WorkerLike,
  request: LoadRequest,
  options: Pick<CreateEngineOptions, 'onProgress' | 'signal'> & { graceMs?: number } = {},
): Promise<Engine> {
  const link = new Link(worker, options.graceMs ?? WORKER_GRACE_MS);
  const { host } = link;
  const onProgress = options.onProgress;
  let info: ModelInfo;
  try {
    info = await link.request(options.signal, (id) => host.load(id, request, onProgress && proxy((p: EngineProgress) => onProgress(p))));
  } catch (err) {
    link.close(err as Error); // a failed load leaves no worker behind
    throw err;
  }

  let unloading: Promise<void> | undefined;
  link.call(host.deviceLost()).then(
    (wire) => {
      if (!unloading) link.close(fromWireError(wire)); // an unload destroys the device on purpose
    },
    () => undefined,
  );

  const create = (async (request: ChatCompletionRequest) => {
    const { signal, stream, ...rest } = request;
    if (stream) return link.stream<ChatCompletionChunk>(signal, (id, sink) => host.chatStream(id, rest, sink));
    return link.request(signal, (id) => host.chat(id, rest));
  }) as Engine['chat']['completions']['create'];

  return {
    info,
    chat: { completions: { create } },
    generate(prompt, generateOptions = {}) {
      const { signal, ...rest } = generateOptions;
      return link.stream<GenerateChunk>(signal, (id, sink) => host.generate(id, prompt, rest, sink));
    },
    logits(ids, logitsOptions = {}) {
      const { signal, ...rest } = logitsOptions;
      return link.request(signal, (id) => host.logits(id, ids, rest));
    },
    tokenize: (text, tokenizeOptions) => link.call(host.tokenize(text, tokenizeOptions)),
    detokenize: (ids) => link.call(host.detokenize(ids)),
    createSession: () => link.call(host.createSession()),
    closeSession: (session) => link.call(host.closeSession(session)),
    stats: () => link.call(host.stats()),
    unload() {
      unloading ??= (async () => {
        try {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([link.call(host.unload()), new Promise((resolve) => (timer = setTimeout(resolve, link.graceMs)))]).finally(() => clearTimeout(timer));
        } catch {
          // Terminating the worker below frees whatever its unload could not.
        }
        link.close(new WebmoeError('BAD_ARGUMENT', 'this engine was unloaded; create a new one'));
      })();
      return unloading;
    },
  };
}

/** The comlink link to the worker, with request ids, abort and the worker's death in one place. */
class Link {
  readonly host: Remote<WorkerHost>;
  private nextId = 1;
  private closed = false;
  private readonly failed: Promise<never>;
  private fail!: (error: Error) => void;

  constructor(
    private readonly worker: WorkerLike,
    readonly graceMs: number,
  ) {
    this.host = wrap<WorkerHost>(worker);
    this.failed = new Promise<never>((_, reject) => (this.fail = reject));
    this.failed.catch(() => undefined); // observed through call(); not an unhandled rejection
    worker.addEventListener('error', (event) => {
      const detail = (event as ErrorEvent).message || 'an uncaught error or a script that failed to load';
      // The engine (and its device) went with it: the same class as a lost device, so callers need one check.
      this.close(new DeviceLostError("the engine's Worker stopped", `${detail}; create the engine again`));
    });
  }

  /** A host call: its error rebuilt in its class, or the link's error once the worker is gone. */
  call<T>(pending: Promise<T>): Promise<T> {
    const rebuilt = pending.catch((err: unknown) => {
      throw isWireError(err) ? fromWireError(err) : err;
    });
    return Promise.race([rebuilt, this.failed]);
  }

  /** A call that `signal` may stop: the signal stays here, the worker gets host.abort(id) once. */
  async request<T>(signal: AbortSignal | undefined, start: (id: number) => Promise<T>): Promise<T> {
    throwIfAborted(signal);
    const abort = this.abortOnce(signal);
    try {
      return await this.call(start(abort.id));
    } finally {
      abort.settled();
      abort.dispose();
    }
  }

  /**
   * A streamed call: the worker pushes batches into a queue this generator reads. A consumer that
   * stops early (break: the generator's return()) aborts the request in the worker.
   */
  async *stream<T>(signal: AbortSignal | undefined, start: (id: number, sink: ChunkSink<T>) => Promise<void>): AsyncGenerator<T> {
    throwIfAborted(signal);
    const abort = this.abortOnce(signal);
    const queue = new ChunkQueue<T>();
    this.call(start(abort.id, proxy((batch: T[]) => queue.push(batch)))).then(
      () => (abort.settled(), queue.end()),
      (err) => (abort.settled(), queue.end(err)),
    );
    try {
      yield* queue;
    } finally {
      if (!queue.ended) abort.now();
      abort.dispose();
    }
  }

  /** Ends the link and terminates the worker; every pending and later call fails with `error` (the first one given). */
  close(error: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.fail(error);
    this.worker.terminate();
  }

  private abortOnce(signal: AbortSignal | undefined) {
    const id = this.nextId++;
    let sent = false;
    let stuck: ReturnType<typeof setTimeout> | undefined;
    const now = () => {
      if (sent) return;
      sent = true;
      // A worker that neither answers the abort nor ends the request in time is stuck (its event
      // loop never reads messages): end it, and the engine with it. A live one answers at once,
      // even while a long GPU step finishes.
      stuck = setTimeout(() => {
        this.close(new AbortError(`the engine's Worker did not answer an abort within ${this.graceMs} ms, so it was terminated; create the engine again`));
      }, this.graceMs);
      this.host.abort(id).then(
        () => clearTimeout(stuck),
        () => undefined,
      );
    };
    signal?.addEventListener('abort', now, { once: true });
    return {
      id,
      now,
      /** The request ended (either way): no abort can be stuck any more. */
      settled: () => clearTimeout(stuck),
      dispose: () => signal?.removeEventListener('abort', now),
    };
  }
}
