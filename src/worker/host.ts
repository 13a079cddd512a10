// The worker's side of the protocol: a WorkerHost over an engine in the worker's thread. Each
// request that the page may abort gets its own AbortController under the page's request id;
// streamed chunks leave in batches; every error leaves as data (a WireError).

import { releaseProxy, transfer } from 'comlink';
import { ArgumentError, type DeviceLostError } from '../errors.ts';
import type { Engine, EngineProgress } from '../runtime/types.ts';
import { mergeChatChunks, mergeGenerateChunks, StreamBatcher, toWireError, type ChunkSink, type LoadRequest, type WorkerHost } from './protocol.ts';

export interface OpenedEngine {
  engine: Engine;
  /** Resolves when the engine's GPU device is lost. */
  lost?: Promise<DeviceLostError>;
}

export type OpenEngine = (request: LoadRequest, options: { onProgress?: (progress: EngineProgress) => void; signal: AbortSignal }) => Promise<OpenedEngine>;

export function createHost(open: OpenEngine): WorkerHost {
  let opened: OpenedEngine | undefined;
  const requests = new Map<number, AbortController>();

  /** Runs a request under its own AbortController (registered before the first await). */
  async function run<T>(id: number | undefined, body: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    if (id !== undefined) requests.set(id, controller);
    try {
      return await body(controller.signal);
    } catch (err) {
      throw toWireError(err);
    } finally {
      if (id !== undefined) requests.delete(id);
    }
  }

  function engine(): Engine {
    if (!opened) throw new ArgumentError('the engine is not loaded yet');
    return opened.engine;
  }

  async function stream<T>(chunks: AsyncIterable<T>, sink: ChunkSink<T>, merge: (a: T, b: T) => T | undefined, isFinal: (chunk: T) => boolean): Promise<void> {
    const batcher = new StreamBatcher(sink, merge);
    try {
      for await (const chunk of chunks) batcher.push(chunk, isFinal(chunk));
    } finally {
      // The chunks before an error reach the page before the error does.
      await batcher.drain();
      release(sink);
    }
  }

  return {
    load: (id, request, onProgress) =>
      run(id, async (signal) => {
        if (opened) throw new ArgumentError('this worker already holds an engine; create another one');
        // Progress calls go out on their own port: wait for the last one, so that none reaches the
        // page after the load's answer.
        let lastProgress: Promise<unknown> = Promise.resolve();
        const report = onProgress && ((p: EngineProgress) => void (lastProgress = (async () => onProgress(p))().catch(() => undefined)));
        try {
          opened = await open(request, { signal, onProgress: report });
        } finally {
          await lastProgress;
          release(onProgress);
        }
        return opened.engine.info;
      }),
    generate: (id, prompt, options, sink) =>
      run(id, (signal) => stream(engine().generate(prompt, { ...options, signal }), sink, mergeGenerateChunks, (c) => c.done !== undefined)),
    chatStream: (id, request, sink) =>
      run(id, async (signal) => {
        const chunks = await engine().chat.completions.create({ ...request, stream: true, signal });
        await stream(chunks, sink, mergeChatChunks, (c) => c.usage !== undefined);
      }),
    chat: (id, request) => run(id, (signal) => engine().chat.completions.create({ ...request, stream: false, signal })),
    logits: (id, ids, options) =>
      run(id, async (signal) => {
        const rows = await engine().logits(ids, { ...options, signal });
        return transfer(rows, [...new Set(rows.map((r) => r.buffer as ArrayBuffer))]);
      }),
    tokenize: (text, options) => run(undefined, async () => engine().tokenize(text, options)),
    detokenize: (ids) => run(undefined, async () => engine().detokenize(ids)),
    createSession: () => run(undefined, async () => engine().createSession()),
    closeSession: (session) => run(undefined, async () => engine().closeSession(session)),
    stats: () => run(undefined, async () => engine().stats()),
    abort: (id) => requests.get(id)?.abort(),
    deviceLost: async () => toWireError(await (opened?.lost ?? new Promise<never>(() => {}))),
    unload: () =>
      run(undefined, async () => {
        for (const controller of requests.values()) controller.abort();
        await opened?.engine.unload();
      }),
  };
}

/** Closes the port of a comlink proxy the page lent us (a no-op for a plain function). */
function release(remote: unknown): void {
  if (typeof remote !== 'function') return;
  const close = (remote as { [releaseProxy]?: () => void })[releaseProxy];
  if (typeof close === 'function') close();
}
