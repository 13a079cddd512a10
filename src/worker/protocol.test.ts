// The protocol's pure pieces: errors survive structured cloning in their classes, streamed chunks
// leave the worker in batches (by count, by time, the final one at once), and the page's queue
// gives them back in order, then the error.

import { afterEach, describe, expect, it, vi } from 'vitest';
import * as errors from '../errors.ts';
import type { ChatCompletionChunk, GenerateChunk } from '../runtime/types.ts';
import { ChunkQueue, fromWireError, mergeChatChunks, mergeGenerateChunks, StreamBatcher, toWireError } from './protocol.ts';

const roundTrip = (err: unknown) => fromWireError(structuredClone(toWireError(err)));

describe('errors across the worker boundary', () => {
  it('every WebmoeError subclass comes back as itself, with its message, code and fields', () => {
    const cases: [errors.WebmoeError, Record<string, unknown>][] = [
      [new errors.FetchError('http://x/a.safetensors', 'HTTP 500', 500), { url: 'http://x/a.safetensors', status: 500 }],
      [new errors.MissingFileError('config.json', 'http://x/'), { file: 'config.json' }],
      [new errors.DeviceLostError('unknown', 'driver reset'), { reason: 'unknown' }],
      [new errors.ConfigError('bad hidden_size', 'hidden_size'), { key: 'hidden_size' }],
      [new errors.CheckpointError('bad header', 'model.safetensors'), { file: 'model.safetensors' }],
      [new errors.AbortError(), {}],
      [new errors.WebmoeError('BAD_ARGUMENT', 'this engine was unloaded'), {}],
    ];
    for (const [original, fields] of cases) {
      const back = roundTrip(original);
      expect(back).toBeInstanceOf(original.constructor);
      expect(back).toBeInstanceOf(errors.WebmoeError);
      expect(back).toBeInstanceOf(Error);
      expect(back).toMatchObject({ name: original.name, message: original.message, code: original.code, ...fields });
      expect(back.stack).toBe(original.stack);
    }
  });

  it('other errors keep their name and message; thrown non-errors become an Error', () => {
    const type = roundTrip(new TypeError('x is not a function'));
    expect(type).not.toBeInstanceOf(errors.WebmoeError);
    expect(type).toMatchObject({ name: 'TypeError', message: 'x is not a function' });
    // A DOMException-like error named like one of ours, without a code, is not taken for ours.
    const abortLike = new Error('signal is aborted');
    abortLike.name = 'AbortError';
    expect(roundTrip(abortLike)).not.toBeInstanceOf(errors.AbortError);
    expect(roundTrip('boom')).toMatchObject({ name: 'Error', message: 'boom' });
  });

  it('a cause that cannot be cloned is left behind', () => {
    const err = new errors.FetchError('http://x/', 'network error', undefined, { cause: new Error('inner') });
    expect(() => structuredClone(toWireError(err))).not.toThrow();
    expect(roundTrip(err)).toBeInstanceOf(errors.FetchError);
  });
});

describe('StreamBatcher', () => {
  afterEach(() => vi.useRealTimers());
  const chunk = (id: number): GenerateChunk => ({ text: `<${id}>`, ids: [id] });

  it('sends 8 chunks at once, merged into one', () => {
    const sent: GenerateChunk[][] = [];
    const batcher = new StreamBatcher<GenerateChunk>((b) => void sent.push(b), mergeGenerateChunks);
    for (let i = 0; i < 7; i++) batcher.push(chunk(i));
    expect(sent).toHaveLength(0);
    batcher.push(chunk(7));
    expect(sent).toEqual([[{ text: '<0><1><2><3><4><5><6><7>', ids: [0, 1, 2, 3, 4, 5, 6, 7] }]]);
  });

  it('sends what waits 30 ms after the first chunk, and the final chunk at once', () => {
    vi.useFakeTimers();
    const sent: GenerateChunk[][] = [];
    const batcher = new StreamBatcher<GenerateChunk>((b) => void sent.push(b), mergeGenerateChunks);
    batcher.push(chunk(1));
    vi.advanceTimersByTime(20);
    batcher.push(chunk(2));
    expect(sent).toHaveLength(0);
    vi.advanceTimersByTime(10);
    expect(sent).toEqual([[{ text: '<1><2>', ids: [1, 2] }]]);
    batcher.push(chunk(3));
    const done = { finishReason: 'length' as const, stats: {} as never };
    batcher.push({ text: '!', ids: [], done }, true);
    expect(sent[1]).toEqual([{ text: '<3>!', ids: [3], done }]);
    vi.advanceTimersByTime(100);
    expect(sent).toHaveLength(2);
  });

  it('merges the experts of each token too', () => {
    const sent: GenerateChunk[][] = [];
    const batcher = new StreamBatcher<GenerateChunk>((b) => void sent.push(b), mergeGenerateChunks);
    batcher.push({ text: 'a', ids: [1], experts: [{ token: 1, experts: [[0, 3]] }] });
    batcher.push({ text: 'b', ids: [2], experts: [{ token: 2, experts: [[1, 2]] }] });
    batcher.flush();
    expect(sent).toEqual([[{ text: 'ab', ids: [1, 2], experts: [{ token: 1, experts: [[0, 3]] }, { token: 2, experts: [[1, 2]] }] }]]);
  });

  it('without a merge, a batch is the list of chunks; drain waits for the last send', async () => {
    const received: number[][] = [];
    let deliver!: () => void;
    const batcher = new StreamBatcher<number>(
      (b) =>
        new Promise<void>((resolve) => {
          deliver = () => {
            received.push(b);
            resolve();
          };
        }),
    );
    batcher.push(1);
    batcher.push(2);
    let drained = false;
    const draining = batcher.drain().then(() => (drained = true));
    await Promise.resolve();
    expect(drained).toBe(false);
    deliver();
    await draining;
    expect(received).toEqual([[1, 2]]);
    // A page that stopped listening does not fail the stream.
    const failing = new StreamBatcher<number>(() => Promise.reject(new Error('port closed')));
    failing.push(1, true);
    await expect(failing.drain()).resolves.toBeUndefined();
  });

  it('chat chunks: content deltas merge, the role and final chunks stay apart', () => {
    const base = { id: 'c', object: 'chat.completion.chunk' as const, created: 0, model: 'm' };
    const role: ChatCompletionChunk = { ...base, choices: [{ index: 0, delta: { role: 'assistant' }, finish_reason: null }] };
    const content = (text: string): ChatCompletionChunk => ({ ...base, choices: [{ index: 0, delta: { content: text }, finish_reason: null }] });
    const final: ChatCompletionChunk = { ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } };
    const sent: ChatCompletionChunk[][] = [];
    const batcher = new StreamBatcher<ChatCompletionChunk>((b) => void sent.push(b), mergeChatChunks);
    for (const c of [role, content('Hel'), content('lo'), final]) batcher.push(c, c === final);
    expect(sent).toEqual([[role, content('Hello'), final]]);
  });

  it('chat chunks: the webmoe ids and experts of merged deltas are joined', () => {
    const base = { id: 'c', object: 'chat.completion.chunk' as const, created: 0, model: 'm' };
    const content = (text: string, ids: number[]): ChatCompletionChunk => ({
      ...base,
      choices: [{ index: 0, delta: { content: text }, finish_reason: null }],
      webmoe: { ids, experts: ids.map((token) => ({ token, experts: [[token]] })) },
    });
    expect(mergeChatChunks(content('a', [1]), content('b', [2, 3]))).toEqual(content('ab', [1, 2, 3]));
  });
});

describe('ChunkQueue', () => {
  it('yields pushed chunks in order, before and after the consumer waits, then the error', async () => {
    const queue = new ChunkQueue<number>();
    queue.push([1, 2]);
    const seen: number[] = [];
    const consuming = (async () => {
      for await (const n of queue) seen.push(n);
    })();
    await new Promise((r) => setTimeout(r, 1));
    queue.push([3]);
    queue.end(new errors.AbortError());
    queue.push([4]); // after the end: dropped
    await expect(consuming).rejects.toBeInstanceOf(errors.AbortError);
    expect(seen).toEqual([1, 2, 3]);
    expect(queue.ended).toBe(true);
  });

  it('ends cleanly without an error', async () => {
    const queue = new ChunkQueue<string>();
    queue.push(['a']);
    queue.end();
    const seen: string[] = [];
    for await (const s of queue) seen.push(s);
    expect(seen).toEqual(['a']);
  });
});
