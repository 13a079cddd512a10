// createRemoteEngine against webmoe serve on a loopback port, on the shipped checkpoint: the same
// answers as the local engine behind the server (chat whole and streamed, generate, tokenize, the
// model's info), sessions kept on the client, AbortSignal, unload, and the typed errors: a
// refused request (RemoteError with the server's status and words), a server that is not there
// (FetchError after bounded retries), what HTTP cannot give (RemoteUnsupportedError).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, ArgumentError, FetchError, RemoteError, RemoteUnsupportedError, WebmoeError } from '../errors.ts';
import type { Engine, GenerateChunk } from '../runtime/types.ts';
import { shippedEngine, startServer, type WebmoeServer } from '../server/testing.ts';
import { createRemoteEngine } from './engine.ts';

const MODEL = 'kjv';
const MESSAGES = [{ role: 'user' as const, content: 'In the beginning' }];

let local: Engine;
let server: WebmoeServer;
let remote: Engine;
let loadedBuffers: number;

beforeAll(async () => {
  local = await shippedEngine();
  loadedBuffers = (await local.stats()).gpuBuffers;
  server = await startServer({ engine: local, modelId: MODEL, port: 0 });
  remote = await createRemoteEngine({ baseURL: server.baseURL, model: MODEL });
});
afterAll(async () => {
  await remote?.unload();
  await server?.close();
  await local?.unload();
});

async function collect(chunks: AsyncIterable<GenerateChunk>) {
  let text = '';
  const ids: number[] = [];
  let last: GenerateChunk | undefined;
  for await (const chunk of chunks) {
    text += chunk.text;
    ids.push(...chunk.ids);
    last = chunk;
  }
  return { text, ids, done: last?.done };
}

async function expectServerClean() {
  await server.idle();
  const stats = await local.stats();
  expect(stats.sessions).toBe(0);
  expect(stats.gpuBuffers).toBe(loadedBuffers);
}

describe('remote engine over webmoe serve', () => {
  it('describes the model as the local engine does, and says it is remote', async () => {
    const { backend, name, ...described } = remote.info;
    const { name: _, ...expected } = local.info;
    expect(described).toEqual(expected);
    expect(name).toBe(MODEL);
    expect(backend).toEqual({ kind: 'remote', baseURL: server.baseURL, model: MODEL, server: 'webmoe' });
    const stats = await remote.stats();
    expect(stats).toMatchObject({ sessions: 0, gpuBytes: 0, gpuBuffers: 0, weightBytes: 0, limits: { maxContext: 1024 }, remote: { baseURL: server.baseURL, model: MODEL, requestsInFlight: 0 } });
  });

  it('chat whole and streamed give the local engine\'s reply, ids and usage; the last chunk has finish_reason and usage', async () => {
    const request = { messages: MESSAGES, max_tokens: 8, temperature: 0 };
    const expected = await local.chat.completions.create(request);
    const whole = await remote.chat.completions.create(request);
    expect(whole.choices[0]).toEqual(expected.choices[0]);
    expect(whole.usage).toEqual(expected.usage);
    expect(whole.webmoe.ids).toEqual(expected.webmoe.ids);
    const chunks = [];
    for await (const chunk of await remote.chat.completions.create({ ...request, stream: true })) chunks.push(chunk);
    expect(chunks.map((c) => c.choices[0].delta.content ?? '').join('')).toBe(expected.choices[0].message.content);
    expect(chunks.flatMap((c) => c.webmoe?.ids ?? [])).toEqual(expected.webmoe.ids);
    const last = chunks.at(-1)!;
    expect(last.choices[0].finish_reason).toBe('length');
    expect(last.usage).toEqual(expected.usage);
    expect(last.webmoe?.stats?.generatedTokens).toBe(8);
    expect(chunks.slice(0, -1).every((c) => c.usage === undefined && c.choices[0].finish_reason === null)).toBe(true);
  });

  it('generate gives the local text and ids, from text or from ids, with done on the last chunk', async () => {
    const options = { maxTokens: 6, temperature: 0, ignoreEos: true };
    const expected = await collect(local.generate('And God said', options));
    const got = await collect(remote.generate('And God said', options));
    expect(got.text).toBe(expected.text);
    expect(got.ids).toEqual(expected.ids);
    expect(got.done).toMatchObject({ finishReason: 'length', stats: { generatedTokens: 6, promptTokens: expected.done!.stats.promptTokens } });
    const ids = await local.tokenize('And God said');
    expect(await remote.tokenize('And God said')).toEqual(ids);
    expect(await remote.detokenize(expected.ids)).toBe(expected.text);
    expect((await collect(remote.generate(ids, options))).ids).toEqual(expected.ids);
  });

  it('a text session holds the conversation: the next prompt continues it', async () => {
    const session = await remote.createSession();
    const first = await collect(remote.generate('In the beginning', { session, maxTokens: 4, temperature: 0, ignoreEos: true }));
    const second = await collect(remote.generate(' and', { session, maxTokens: 4, temperature: 0, ignoreEos: true }));
    // The same as one request over the whole text.
    const whole = await collect(local.generate(`In the beginning${first.text} and`, { maxTokens: 4, temperature: 0, ignoreEos: true }));
    expect(second.text).toBe(whole.text);
    expect((await remote.stats()).sessions).toBe(1);
    await expect(collect(remote.generate([5, 6], { session }))).rejects.toBeInstanceOf(ArgumentError);
    await remote.closeSession(session);
    expect((await remote.stats()).sessions).toBe(0);
    await expect(collect(remote.generate('x', { session }))).rejects.toThrow(/session \d+ does not exist/);
  });

  it('a session runs one request at a time, and closing it aborts its request', async () => {
    const session = await remote.createSession();
    const running = remote.generate('In the beginning', { session, maxTokens: 400, ignoreEos: true })[Symbol.asyncIterator]();
    await running.next();
    await expect(collect(remote.generate('x', { session }))).rejects.toThrow(/already generating/);
    await remote.closeSession(session);
    await expect((async () => {
      for (;;) if ((await running.next()).done) return;
    })()).rejects.toThrow(/Session \d+ was closed during the request/);
    expect((await remote.stats()).sessions).toBe(0);
    await expectServerClean();
  });

  it('an AbortSignal stops a stream (AbortError), and the server frees the request', async () => {
    const controller = new AbortController();
    const stream = await remote.chat.completions.create({ messages: MESSAGES, max_tokens: 400, ignore_eos: true, stream: true, signal: controller.signal });
    let pieces = 0;
    await expect(
      (async () => {
        for await (const chunk of stream) if (chunk.choices[0].delta.content && ++pieces === 2) controller.abort();
      })(),
    ).rejects.toBeInstanceOf(AbortError);
    expect((await remote.stats()).remote?.requestsInFlight).toBe(0);
    await expectServerClean();
    // Aborted before it starts: no request at all.
    await expect(remote.chat.completions.create({ messages: MESSAGES, signal: AbortSignal.abort() })).rejects.toBeInstanceOf(AbortError);
  });

  it('the server\'s refusals are RemoteErrors with its status and words', async () => {
    const err = await remote.chat.completions.create({ messages: MESSAGES, temperature: -1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ status: 400, param: 'temperature', errorType: 'invalid_request_error', serverMessage: expect.stringMatching(/temperature must be a number >= 0/) });
    const long = await collect(remote.generate('word '.repeat(3000))).catch((e: unknown) => e);
    expect(long).toMatchObject({ status: 400, serverMessage: expect.stringMatching(/context/) });
  });

  it('passes response_format through: the local engine\'s JSON, in chat and generate; a refused schema is a 400 RemoteError', async () => {
    const schema = { type: 'object', properties: { tribe: { enum: ['Judah', 'Levi', 'Dan'] }, count: { type: 'integer', minimum: 1, maximum: 12 } }, required: ['tribe', 'count'] };
    const response_format = { type: 'json_schema' as const, json_schema: { name: 'tribe', schema } };
    const request = { messages: MESSAGES, max_tokens: 30, temperature: 0, response_format };
    const [here, there] = [await local.chat.completions.create(request), await remote.chat.completions.create(request)];
    expect(there.choices[0].message.content).toBe(here.choices[0].message.content);
    const value = JSON.parse(there.choices[0].message.content) as { tribe: string; count: number };
    expect(['Judah', 'Levi', 'Dan']).toContain(value.tribe);
    const generated = await collect(remote.generate('And God said', { maxTokens: 30, temperature: 0, responseFormat: response_format }));
    expect(generated.done?.finishReason).toBe('stop');
    const here2 = await collect(local.generate('And God said', { maxTokens: 30, temperature: 0, responseFormat: response_format }));
    expect({ text: generated.text, ids: generated.ids }).toEqual({ text: here2.text, ids: here2.ids });
    expect(['Judah', 'Levi', 'Dan']).toContain((JSON.parse(generated.text) as { tribe: string }).tribe);
    const refused = await remote.chat.completions.create({ ...request, response_format: { type: 'json_schema', json_schema: { schema: { type: 'string', pattern: '((' } } } }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RemoteError);
    expect(refused).toMatchObject({ status: 400, param: 'response_format', serverMessage: expect.stringMatching(/cannot be compiled for constrained decoding/) });
    await expectServerClean();
  });

  it('what HTTP cannot give is a RemoteUnsupportedError', async () => {
    await expect(remote.logits([1, 2, 3])).rejects.toBeInstanceOf(RemoteUnsupportedError);
    await expect(remote.chat.completions.create({ messages: MESSAGES, experts: true })).rejects.toMatchObject({ feature: 'experts' });
    await expect(collect(remote.generate('x', { experts: true }))).rejects.toBeInstanceOf(RemoteUnsupportedError);
  });

  it('refuses a model the server does not serve, a wrong API key, and a server that is not there (FetchError after bounded retries)', async () => {
    await expect(createRemoteEngine({ baseURL: server.baseURL, model: 'gpt-4' })).rejects.toMatchObject({ status: 404, serverMessage: expect.stringMatching(/does not serve the model "gpt-4"; it serves "kjv"/) });
    const locked = await startServer({ engine: local, modelId: MODEL, port: 0, apiKey: 'sesame' });
    const gone = await startServer({ engine: local, modelId: MODEL, port: 0 });
    await gone.close();
    try {
      await expect(createRemoteEngine({ baseURL: locked.baseURL, model: MODEL, apiKey: 'open' })).rejects.toMatchObject({ status: 401 });
      const unlocked = await createRemoteEngine({ baseURL: locked.baseURL, model: MODEL, apiKey: 'sesame' });
      expect((await unlocked.chat.completions.create({ messages: MESSAGES, max_tokens: 1 })).usage.completion_tokens).toBe(1);
      let attempts = 0;
      const counting: typeof fetch = (input, init) => {
        attempts++;
        return fetch(input, init);
      };
      const refused = await createRemoteEngine({ baseURL: gone.baseURL, model: MODEL, fetch: counting, maxRetries: 2 }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(FetchError);
      expect((refused as FetchError).message).toMatch(/no answer after 3 attempts \(ECONNREFUSED\)/);
      expect(attempts).toBe(3);
    } finally {
      await locked.close();
    }
  });

  it('unload aborts the requests in flight; later calls are refused', async () => {
    const other = await createRemoteEngine({ baseURL: server.baseURL, model: MODEL });
    const running = other.generate('In the beginning', { maxTokens: 400, ignoreEos: true })[Symbol.asyncIterator]();
    await running.next();
    await other.unload();
    await expect(running.next()).rejects.toThrow(/unloaded during the request/);
    await expect(other.createSession()).rejects.toBeInstanceOf(WebmoeError);
    await expectServerClean();
  });
});
