// The one typed protocol between the page and the engine's Worker (comlink), and the pure pieces
// both ends use: errors as data and back, and the batching of streamed chunks. Everything that
// crosses is structured-clonable: an AbortSignal becomes a request id (WorkerHost.abort),
// callbacks are comlink proxies, and errors travel as WireError (postMessage keeps an Error's
// message but not its class or `code`).

import * as errors from '../errors.ts';
import type { CreateEngineOptions } from '../runtime/engine.ts';
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  EngineProgress,
  EngineStats,
  GenerateChunk,
  GenerateOptions,
  LogitsOptions,
  ModelInfo,
  Session,
} from '../runtime/types.ts';

/** A model source that can cross to the worker: an absolute URL, browser Files or a directory handle. */
export type WireModelSource = string | File[] | FileSystemDirectoryHandle;

export type LoadRequest = Pick<CreateEngineOptions, 'maxContext' | 'cacheBudgetBytes' | 'prefillChunk' | 'cacheShards' | 'numerics' | 'weights' | 'maxBindingMib' | 'gpuBudgetMib' | 'expertSlots' | 'expertStore' | 'draftVocab'> & {
  model: WireModelSource;
};

export type WireGenerateOptions = Omit<GenerateOptions, 'signal'>;
export type WireChatRequest = Omit<ChatCompletionRequest, 'signal' | 'stream'>;
export type WireLogitsOptions = Omit<LogitsOptions, 'signal'>;

/** Receives streamed chunks, a batch at a time (a comlink proxy of the page's queue). */
export type ChunkSink<T> = (batch: T[]) => unknown;

/**
 * What the worker exposes. Methods that take a request `id` can be stopped by abort(id). Every
 * method rejects with a WireError, which the page turns back into its class (fromWireError).
 */
export interface WorkerHost {
  /** Opens the GPU and loads the model (once per worker). */
  load(id: number, request: LoadRequest, onProgress?: (progress: EngineProgress) => unknown): Promise<ModelInfo>;
  /** Streams the generation into `sink`; resolves after the last batch (the one with `done`) was received. */
  generate(id: number, prompt: string | number[], options: WireGenerateOptions, sink: ChunkSink<GenerateChunk>): Promise<void>;
  chatStream(id: number, request: WireChatRequest, sink: ChunkSink<ChatCompletionChunk>): Promise<void>;
  chat(id: number, request: WireChatRequest): Promise<ChatCompletion>;
  /** The rows' buffers are transferred, not copied. */
  logits(id: number, ids: number[], options: WireLogitsOptions): Promise<Float32Array[]>;
  tokenize(text: string, options?: { addBos?: boolean }): Promise<number[]>;
  detokenize(ids: number[]): Promise<string>;
  createSession(): Promise<Session>;
  closeSession(session: Session): Promise<void>;
  stats(): Promise<EngineStats>;
  /** Stops request `id` (its engine call throws AbortError); nothing when it already ended. */
  abort(id: number): void;
  /** Resolves with the DeviceLostError when the GPU device is lost; pending while it lives. */
  deviceLost(): Promise<WireError>;
  unload(): Promise<void>;
}

// ---- errors as data -------------------------------------------------------------------------

type Primitive = string | number | boolean | null | undefined;

export interface WireError {
  wireError: true;
  name: string;
  message: string;
  stack?: string;
  /** The error's own plain fields: `code`, and the subclass's (`file`, `url`, `status`, `reason`, ...). */
  fields: Record<string, Primitive>;
}

export function toWireError(error: unknown): WireError {
  if (!(error instanceof Error)) return { wireError: true, name: 'Error', message: String(error), fields: {} };
  const fields: Record<string, Primitive> = {};
  for (const [key, value] of Object.entries(error)) {
    if (key !== 'name' && key !== 'message' && key !== 'stack' && (value === null || typeof value !== 'object') && typeof value !== 'function') fields[key] = value as Primitive;
  }
  return { wireError: true, name: error.name, message: error.message, stack: error.stack, fields };
}

export function isWireError(value: unknown): value is WireError {
  return typeof value === 'object' && value !== null && (value as WireError).wireError === true;
}

/** The error again, as an instance of its WebmoeError subclass (found in src/errors.ts by `name`) when it was one. */
export function fromWireError(wire: WireError): Error {
  const Class = webmoeErrorClass(wire.name);
  const code = wire.fields.code;
  let error: Error;
  if (Class && typeof code === 'string') {
    // Subclass constructors format their own messages (FetchError prefixes the URL): build the
    // base class with the message as it was, then give it the subclass's prototype.
    error = new errors.WebmoeError(code as errors.WebmoeErrorCode, wire.message);
    Object.setPrototypeOf(error, Class.prototype);
  } else {
    error = new Error(wire.message);
  }
  Object.assign(error, wire.fields);
  error.name = wire.name;
  if (wire.stack) error.stack = wire.stack;
  return error;
}

function webmoeErrorClass(name: string): typeof errors.WebmoeError | undefined {
  const value = (errors as Record<string, unknown>)[name];
  if (typeof value !== 'function') return undefined;
  return value === errors.WebmoeError || value.prototype instanceof errors.WebmoeError ? (value as typeof errors.WebmoeError) : undefined;
}

// ---- streamed chunks --------------------------------------------------------------------------

export interface BatchOptions {
  /** Send once this many chunks are waiting. */
  maxChunks: number;
  /** Send this long after the first waiting chunk. */
  maxDelayMs: number;
}

/** One message per token would cost more than a decode step of a small model; 30 ms is below what a reader notices. */
export const STREAM_BATCH: BatchOptions = { maxChunks: 8, maxDelayMs: 30 };

/**
 * The worker's end of a stream: chunks wait until `maxChunks` of them are pending or `maxDelayMs`
 * has passed since the first; the final chunk leaves at once. Consecutive chunks are merged where
 * `merge` can (it returns undefined where it cannot).
 */
export class StreamBatcher<T> {
  private pending: T[] = [];
  private count = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private lastSend: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly send: ChunkSink<T>,
    private readonly merge: (a: T, b: T) => T | undefined = () => undefined,
    private readonly options: BatchOptions = STREAM_BATCH,
  ) {}

  push(chunk: T, final = false): void {
    const last = this.pending.length > 0 ? this.pending[this.pending.length - 1] : undefined;
    const merged = last === undefined ? undefined : this.merge(last, chunk);
    if (merged === undefined) this.pending.push(chunk);
    else this.pending[this.pending.length - 1] = merged;
    this.count++;
    if (final || this.count >= this.options.maxChunks) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.options.maxDelayMs);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.count = 0;
    // Batches go out in order on one port, so the last one received means all were. A page that
    // stopped listening is no error of the stream's.
    this.lastSend = (async () => this.send(batch))().catch(() => undefined);
  }

  /** Sends what is pending; resolves once every batch was received. */
  async drain(): Promise<void> {
    this.flush();
    await this.lastSend;
  }
}

export function mergeGenerateChunks(a: GenerateChunk, b: GenerateChunk): GenerateChunk | undefined {
  if (a.done) return undefined;
  const merged: GenerateChunk = { text: a.text + b.text, ids: [...a.ids, ...b.ids] };
  if (a.experts || b.experts) merged.experts = [...(a.experts ?? []), ...(b.experts ?? [])];
  if (b.done) merged.done = b.done;
  return merged;
}

/** Merges content deltas only: the role chunk and the final chunk (finish_reason, usage) stay apart. */
export function mergeChatChunks(a: ChatCompletionChunk, b: ChatCompletionChunk): ChatCompletionChunk | undefined {
  const isContent = (c: ChatCompletionChunk) => c.choices[0].finish_reason === null && c.choices[0].delta.role === undefined && c.usage === undefined;
  if (!isContent(a) || !isContent(b)) return undefined;
  const content = (a.choices[0].delta.content ?? '') + (b.choices[0].delta.content ?? '');
  const merged: ChatCompletionChunk = { ...a, choices: [{ index: 0, delta: content ? { content } : {}, finish_reason: null }] };
  if (a.webmoe || b.webmoe) {
    const experts = [...(a.webmoe?.experts ?? []), ...(b.webmoe?.experts ?? [])];
    merged.webmoe = { ids: [...(a.webmoe?.ids ?? []), ...(b.webmoe?.ids ?? [])], ...(experts.length > 0 ? { experts } : {}) };
  }
  return merged;
}

/**
 * The page's end of a stream: batches from the worker wait here until the consumer takes them;
 * end() (with an error or not) comes after the last batch.
 */
export class ChunkQueue<T> {
  private readonly chunks: T[] = [];
  private finished: { error?: unknown } | undefined;
  private wake: (() => void) | undefined;

  get ended(): boolean {
    return this.finished !== undefined;
  }

  push(batch: T[]): void {
    if (this.finished) return;
    this.chunks.push(...batch);
    this.wake?.();
  }

  end(error?: unknown): void {
    if (this.finished) return;
    this.finished = error === undefined ? {} : { error };
    this.wake?.();
  }

  /** Yields every chunk pushed, then returns (or throws the error end() was given). */
  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      while (this.chunks.length > 0) yield this.chunks.shift()!;
      if (this.finished) {
        if ('error' in this.finished) throw this.finished.error;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}
