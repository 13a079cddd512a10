// The worker client and host end to end over a real MessageChannel (comlink as in the browser),
// with a small scripted engine on the host's side: streaming in batches, abort (by signal and by
// breaking out of the loop) sent once, errors in their classes, transferred logits, chat, device
// loss, a crashed worker, unload. The browser test (e2e/engine.spec.ts) runs the real engine.

import { expose } from 'comlink';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AbortError, ArgumentError, DeviceLostError, MissingFileError, TokenizerError, WebmoeError } from '../errors.ts';
import { createChat } from '../runtime/chat.ts';
import type { ChatCompletion, ChatCompletionChunk, Engine, GenerateChunk, GenerateOptions, ModelInfo, Session } from '../runtime/types.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import { connectWorkerEngine, loadRequest, type WorkerLike } from './client.ts';
import { createHost, type OpenEngine } from './host.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Generates (id * 7 + 3) % 100 after the last prompt id, one token per `stepMs`. */
class ScriptedEngine implements Engine {
  readonly info = { name: 'scripted', config: { vocab_size: 100 }, parameters: 1, hasMtp: false } as unknown as ModelInfo;
  readonly chat = createChat({ generateIds: (ids, o) => this.generate(ids, o) }, () => ({ encodeChat: () => [1, 2, 3] }) as unknown as Tokenizer, 'scripted');
  stepMs = 0;
  sessions = 0;
  aborted = 0;
  unloads = 0;
  stopped = false;
  lastOptions: GenerateOptions | undefined;
  lastRows: Float32Array[] = [];
  loseDevice: (error: DeviceLostError) => void = () => {};

  async *generate(prompt: string | number[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk> {
    this.lastOptions = options;
    if (typeof prompt === 'string') throw new TokenizerError('scripted has no tokenizer.json: give token ids instead of text');
    for (const id of prompt) if (id >= 100) throw new ArgumentError(`token id ${id} is not in [0, 100)`);
    this.sessions++;
    try {
      let id = prompt[prompt.length - 1];
      const maxTokens = options.maxTokens ?? 5;
      for (let i = 0; i < maxTokens && !this.stopped; i++) {
        await sleep(this.stepMs);
        if (options.signal?.aborted) {
          this.aborted++;
          throw new AbortError('The generation was aborted.');
        }
        id = (id * 7 + 3) % 100;
        yield { text: `<${id}>`, ids: [id] };
      }
      const stats = { promptTokens: prompt.length, prefilledTokens: prompt.length, generatedTokens: maxTokens, ttftMs: 0, prefillTokensPerS: 0, decodeTokensPerS: 0, totalMs: 0 };
      yield { text: '', ids: [], done: { finishReason: 'length', stats } };
    } finally {
      this.sessions--;
    }
  }

  async logits(ids: number[]): Promise<Float32Array[]> {
    this.lastRows = ids.map((id) => Float32Array.from({ length: 100 }, (_, j) => id + j / 100));
    return this.lastRows;
  }
  async tokenize(): Promise<number[]> {
    throw new TokenizerError('scripted has no tokenizer.json');
  }
  async detokenize(ids: number[]): Promise<string> {
    return ids.map((id) => `<${id}>`).join('');
  }
  async createSession(): Promise<Session> {
    return { id: 7 };
  }
  async closeSession(): Promise<void> {}
  async stats() {
    return { sessions: this.sessions, cacheBytes: 0, cacheBytesPerToken: 0, cachedTokens: 0, weightBytes: 0, gpuBytes: 0, gpuBuffers: 0, limits: { maxContext: 64, cacheBudgetBytes: 0 }, adapter: 'scripted' };
  }
  async unload(): Promise<void> {
    this.unloads++;
    // As a real device does when the engine destroys it.
    this.loseDevice(new DeviceLostError('destroyed', ''));
  }
}

interface Harness {
  worker: WorkerLike & { terminated: boolean; crash(message: string): void };
  fake: ScriptedEngine;
  host: ReturnType<typeof createHost>;
}

const channels: MessageChannel[] = [];
afterEach(() => channels.splice(0).forEach((c) => (c.port1.close(), c.port2.close())));

/** A host serving `fake` on one end of a MessageChannel; the other end, with terminate(), is the "worker". */
function harness(open?: OpenEngine): Harness {
  const fake = new ScriptedEngine();
  const lost = new Promise<DeviceLostError>((resolve) => (fake.loseDevice = resolve));
  const host = createHost(open ?? (async (_request, { onProgress }) => (onProgress?.({ phase: 'ready', bytesDone: 1, bytesTotal: 1 }), { engine: fake, lost })));
  const channel = new MessageChannel();
  channels.push(channel);
  expose(host, channel.port2);
  const errors = new EventTarget();
  const worker: Harness['worker'] = {
    terminated: false,
    postMessage: (message, transfer) => channel.port1.postMessage(message, transfer ?? []),
    addEventListener: (type, listener) => (type === 'message' ? channel.port1 : errors).addEventListener(type, listener),
    removeEventListener: (type, listener) => (type === 'message' ? channel.port1 : errors).removeEventListener(type, listener),
    start: () => channel.port1.start(),
    terminate() {
      this.terminated = true;
      fake.stopped = true;
      channel.port1.close();
    },
    crash: (message) => errors.dispatchEvent(Object.assign(new Event('error'), { message })),
  };
  return { worker, fake, host };
}

async function connect(h: Harness): Promise<Engine> {
  return connectWorkerEngine(h.worker, { model: 'http://localhost/models/x/' });
}

async function collect<T>(chunks: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const c of chunks) all.push(c);
  return all;
}

describe('worker client over a MessageChannel', () => {
  it('loads with progress and streams every id in order, in fewer messages than tokens', async () => {
    const h = harness();
    const progress: string[] = [];
    const engine = await connectWorkerEngine(h.worker, { model: 'http://localhost/models/x/' }, { onProgress: (p) => progress.push(p.phase) });
    expect(progress).toEqual(['ready']); // arrives before the load resolves
    expect(engine.info.name).toBe('scripted');
    const chunks = await collect(engine.generate([5], { maxTokens: 20, session: { id: 7 } }));
    const expected: number[] = [];
    for (let id = 5, i = 0; i < 20; i++) expected.push((id = (id * 7 + 3) % 100));
    expect(chunks.flatMap((c) => c.ids)).toEqual(expected);
    expect(chunks.map((c) => c.text).join('')).toBe(expected.map((id) => `<${id}>`).join(''));
    expect(chunks.length).toBeLessThan(20);
    expect(chunks[chunks.length - 1].done?.finishReason).toBe('length');
    expect(h.fake.lastOptions?.session).toEqual({ id: 7 });
    await engine.unload();
  });

  it('an abort stops the request once in the worker and the consumer gets AbortError', async () => {
    const h = harness();
    const abortSpy = vi.spyOn(h.host, 'abort');
    const engine = await connect(h);
    h.fake.stepMs = 2;
    const controller = new AbortController();
    const seen: number[] = [];
    const run = async () => {
      for await (const chunk of engine.generate([1], { maxTokens: 200, signal: controller.signal })) {
        seen.push(...chunk.ids);
        if (seen.length >= 3) controller.abort();
      }
    };
    const error = await run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortError);
    expect((error as AbortError).code).toBe('ABORTED');
    expect(seen.length).toBeLessThan(200);
    expect(abortSpy).toHaveBeenCalledTimes(1);
    expect(h.fake.aborted).toBe(1);
    expect((await engine.stats()).sessions).toBe(0);
    // An already-aborted signal fails before the worker hears of it.
    await expect(collect(engine.generate([1], { signal: controller.signal }))).rejects.toBeInstanceOf(AbortError);
    expect(abortSpy).toHaveBeenCalledTimes(1);
    await engine.unload();
  });

  it('breaking out of the loop aborts the request in the worker (once, with a signal that fires too)', async () => {
    const h = harness();
    const abortSpy = vi.spyOn(h.host, 'abort');
    const engine = await connect(h);
    h.fake.stepMs = 2;
    const controller = new AbortController();
    for await (const chunk of engine.generate([1], { maxTokens: 200, signal: controller.signal })) {
      if (chunk.ids.length > 0) break;
    }
    controller.abort();
    await vi.waitFor(async () => expect((await engine.stats()).sessions).toBe(0));
    expect(h.fake.aborted).toBe(1);
    expect(abortSpy).toHaveBeenCalledTimes(1);
    await engine.unload();
  });

  it('errors thrown in the worker arrive in their classes with message and code', async () => {
    const h = harness();
    const engine = await connect(h);
    const bad = await collect(engine.generate([100])).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ArgumentError);
    expect(bad).toMatchObject({ code: 'BAD_ARGUMENT', message: 'token id 100 is not in [0, 100)' });
    await expect(engine.tokenize('hi')).rejects.toBeInstanceOf(TokenizerError);
    await engine.unload();

    const failing = harness(async () => {
      throw new MissingFileError('config.json', 'http://localhost/models/x/');
    });
    const error = await connect(failing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MissingFileError);
    expect(error).toMatchObject({ code: 'MISSING_FILE', file: 'config.json', message: 'config.json not found in http://localhost/models/x/' });
    expect(failing.worker.terminated).toBe(true);
  });

  it('logits come back as Float32Array rows whose buffers were transferred', async () => {
    const h = harness();
    const engine = await connect(h);
    const rows = await engine.logits([3, 4], { positions: 'all' });
    expect(rows).toHaveLength(2);
    expect(rows[1]).toBeInstanceOf(Float32Array);
    expect(rows[1][2]).toBeCloseTo(4.02, 5);
    expect(h.fake.lastRows[0].byteLength).toBe(0); // detached on the worker's side: moved, not copied
    await engine.unload();
  });

  it('chat completions, streamed and not', async () => {
    const h = harness();
    const engine = await connect(h);
    const stream = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], stream: true, max_tokens: 4 });
    const chunks: ChatCompletionChunk[] = await collect(stream);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.map((c) => c.choices[0].delta.content ?? '').join('')).toBe('<24><71><0><3>') // after the template's ids [1, 2, 3];
    expect(chunks[chunks.length - 1].usage).toEqual({ prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
    const completion: ChatCompletion = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
    expect(completion.choices[0].message.content).toBe('<24><71>');
    await engine.unload();
  });

  it('a lost device fails the pending and later calls with DeviceLostError and ends the worker', async () => {
    const h = harness();
    const engine = await connect(h);
    h.fake.stepMs = 2;
    const pending = collect(engine.generate([1], { maxTokens: 500 }));
    await sleep(10);
    h.fake.loseDevice(new DeviceLostError('unknown', 'driver reset'));
    const error = await pending.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceLostError);
    expect((error as DeviceLostError).reason).toBe('unknown');
    await expect(engine.stats()).rejects.toBeInstanceOf(DeviceLostError);
    expect(h.worker.terminated).toBe(true);
    await engine.unload(); // still safe
  });

  it('a stuck worker cannot hold an abort or an unload: both end within the grace period, the worker terminated', async () => {
    const h = harness();
    const engine = await connectWorkerEngine(h.worker, { model: 'http://localhost/models/x/' }, { graceMs: 100 });
    // Stuck: each step takes a minute and never looks at the signal (as a hostile template would).
    h.fake.stepMs = 60_000;
    h.fake.generate = async function* () {
      await sleep(60_000);
      yield { text: '', ids: [] };
    };
    const controller = new AbortController();
    const pending = collect(engine.generate([1], { maxTokens: 5, signal: controller.signal }));
    await sleep(10);
    const worker = h.worker;
    worker.postMessage = () => {}; // its event loop no longer reads messages
    const started = performance.now();
    controller.abort();
    const error = await pending.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortError);
    expect((error as Error).message).toMatch(/did not answer an abort within 100 ms, so it was terminated/);
    expect(performance.now() - started).toBeLessThan(5000);
    expect(h.worker.terminated).toBe(true);

    const h2 = harness();
    const engine2 = await connectWorkerEngine(h2.worker, { model: 'http://localhost/models/x/' }, { graceMs: 100 });
    h2.fake.unload = () => new Promise<void>(() => {}); // never answers
    const unloadStarted = performance.now();
    await engine2.unload();
    expect(performance.now() - unloadStarted).toBeLessThan(5000);
    expect(h2.worker.terminated).toBe(true);
    await expect(engine2.stats()).rejects.toThrow(/unloaded/);
  });

  it('a live worker is never terminated for an abort, even when the caller stops pulling; a stuck one is, on break too', async () => {
    const h = harness();
    const engine = await connectWorkerEngine(h.worker, { model: 'http://localhost/models/x/' }, { graceMs: 100 });
    h.fake.stepMs = 5;
    const controller = new AbortController();
    const it = engine.generate([1], { maxTokens: 500, signal: controller.signal })[Symbol.asyncIterator]();
    await it.next();
    controller.abort();
    await sleep(400); // the caller does not pull for four grace periods
    expect(h.worker.terminated).toBe(false);
    // Chunks the worker sent before it saw the abort may come first; the stream then ends in AbortError.
    const drain = async () => {
      for (let i = 0; i < 500; i++) if ((await it.next()).done) throw new Error('the stream ended without an AbortError');
    };
    await expect(drain()).rejects.toBeInstanceOf(AbortError);
    expect((await engine.stats()).sessions).toBe(0); // the engine still answers

    const h2 = harness();
    const engine2 = await connectWorkerEngine(h2.worker, { model: 'http://localhost/models/x/' }, { graceMs: 100 });
    h2.fake.stepMs = 5;
    for await (const chunk of engine2.generate([1], { maxTokens: 500 })) {
      void chunk;
      h2.worker.postMessage = () => {}; // stuck from here on
      break;
    }
    await sleep(400);
    expect(h2.worker.terminated).toBe(true);
  });

  it('a worker that dies fails pending calls with a typed error', async () => {
    const h = harness();
    const engine = await connect(h);
    h.fake.stepMs = 2;
    const pending = collect(engine.generate([1], { maxTokens: 500 }));
    await sleep(10);
    h.worker.crash('Uncaught ReferenceError: x is not defined');
    const error = await pending.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceLostError);
    expect((error as WebmoeError).message).toContain("the engine's Worker stopped: Uncaught ReferenceError: x is not defined; create the engine again");
    expect(h.worker.terminated).toBe(true);
  });

  it('unload unloads once and terminates the worker; later calls say it was unloaded', async () => {
    const h = harness();
    const unloadSpy = vi.spyOn(h.host, 'unload');
    const engine = await connect(h);
    await Promise.all([engine.unload(), engine.unload()]);
    await engine.unload();
    expect(unloadSpy).toHaveBeenCalledTimes(1);
    expect(h.fake.unloads).toBe(1);
    expect(h.worker.terminated).toBe(true);
    // Not the DeviceLostError of the device the unload destroyed.
    const error = await engine.stats().catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(DeviceLostError);
    expect(error).toMatchObject({ code: 'BAD_ARGUMENT', message: 'this engine was unloaded; create a new one' });
  });
});

describe('loadRequest', () => {
  it('sends URLs as absolute strings and Files as an array; refuses what cannot cross', () => {
    expect(loadRequest({ model: new URL('http://localhost/m/'), maxContext: 64 })).toEqual({ model: 'http://localhost/m/', maxContext: 64 });
    // every engine option that shapes the load crosses (numerics was once dropped here)
    expect(loadRequest({ model: 'http://localhost/m/', numerics: 'w8a8', weights: 'bf16' })).toMatchObject({ numerics: 'w8a8', weights: 'bf16' });
    const files = [new File(['{}'], 'config.json')];
    expect(loadRequest({ model: { length: 1, 0: files[0] } as ArrayLike<File> }).model).toEqual(files);
    const dir = { description: 'memory', open: async () => undefined, exists: async () => false } as never;
    expect(() => loadRequest({ model: dir })).toThrow(ArgumentError);
    expect(() => loadRequest({ model: dir })).toThrow(/worker: false/);
    expect(() => loadRequest({ model: 'http://x/', gpu: {} as never })).toThrow(ArgumentError);
  });
});
