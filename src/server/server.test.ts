// webmoe serve's HTTP server on the shipped checkpoint, driven by the official `openai` client on a
// loopback port: chat completions whole and streamed (with and without stream_options.include_usage),
// completions, finish_reason length and stop, seeded sampling, a client that disconnects, CORS, and
// every error status with OpenAI's body. The engine's own answers are the oracle: the server must
// send what the engine said, in OpenAI's shape.

import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError, EngineBusyError, NonFiniteError } from '../errors.ts';
import type { ChatCompletionChunk, Engine } from '../runtime/types.ts';
import { startServer, type WebmoeServer } from './server.ts';
import { recordingEngine, shippedEngine, type Ending } from './testing.ts';

const MODEL = 'webmoe-kjv-12m';
const MESSAGES = [{ role: 'user' as const, content: 'In the beginning' }];

let engine: Engine;
let endings: Ending[];
let server: WebmoeServer;
let client: OpenAI;
/** GPU buffers of the loaded model, before any request. */
let loadedBuffers: number;

beforeAll(async () => {
  const local = await shippedEngine();
  loadedBuffers = (await local.stats()).gpuBuffers;
  ({ engine, endings } = recordingEngine(local));
  server = await startServer({ engine, modelId: MODEL, port: 0 });
  client = new OpenAI({ baseURL: server.baseURL, apiKey: 'not-checked', maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
  await engine?.unload();
});

/** Nothing left of the requests: none in flight, no session, the GPU buffers of the loaded model. */
async function expectNothingLeft(s: WebmoeServer = server) {
  await s.idle();
  expect(s.requestsInFlight).toBe(0);
  const stats = await engine.stats();
  expect(stats.sessions).toBe(0);
  expect(stats.gpuBuffers).toBe(loadedBuffers);
}

async function statusOf(promise: Promise<unknown>): Promise<APIError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(APIError);
  return err as APIError;
}

describe('webmoe serve with the openai client', () => {
  it('lists the model (GET /v1/models) and retrieves it by id', async () => {
    const models = [];
    for await (const m of client.models.list()) models.push(m);
    expect(models).toEqual([expect.objectContaining({ id: MODEL, object: 'model', owned_by: 'webmoe', max_model_len: 1024 })]);
    expect((await client.models.retrieve(MODEL)).id).toBe(MODEL);
    expect((await statusOf(client.models.retrieve('gpt-4'))).status).toBe(404);
  });

  it('a whole chat completion is the engine\'s reply: content, finish_reason, usage', async () => {
    const request = { messages: MESSAGES, max_tokens: 8, temperature: 0 };
    const local = await engine.chat.completions.create(request);
    const reply = await client.chat.completions.create({ model: MODEL, ...request });
    expect(reply.object).toBe('chat.completion');
    expect(reply.model).toBe(MODEL);
    expect(reply.choices).toHaveLength(1);
    expect(reply.choices[0].message).toMatchObject({ role: 'assistant', content: local.choices[0].message.content });
    expect(reply.choices[0].finish_reason).toBe(local.choices[0].finish_reason);
    expect(reply.usage).toEqual(local.usage);
    expect(reply.usage!.completion_tokens).toBe(8);
  });

  it('a streamed chat sends the same text in deltas; usage only with stream_options.include_usage, in a last chunk without choices', async () => {
    const request = { messages: MESSAGES, max_tokens: 8, temperature: 0 };
    const whole = await client.chat.completions.create({ model: MODEL, ...request });
    const read = async (includeUsage: boolean) => {
      const chunks = [];
      const stream = await client.chat.completions.create({ model: MODEL, ...request, stream: true, ...(includeUsage ? { stream_options: { include_usage: true } } : {}) });
      for await (const chunk of stream) chunks.push(chunk);
      return chunks;
    };
    const withUsage = await read(true);
    const text = withUsage.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(whole.choices[0].message.content);
    expect(withUsage[0].choices[0].delta.role).toBe('assistant');
    const last = withUsage.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(whole.usage);
    expect(withUsage.at(-2)!.choices[0].finish_reason).toBe('length');
    expect(withUsage.slice(0, -2).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    const without = await read(false);
    expect(without.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(text);
    expect(without.some((c) => c.usage)).toBe(false);
    expect(without.at(-1)!.choices[0].finish_reason).toBe('length');
  });

  it('completions, whole and streamed, continue a text as engine.generate does; finish_reason length at max_tokens', async () => {
    let expected = '';
    for await (const chunk of engine.generate('And God said', { maxTokens: 6, temperature: 0, ignoreEos: true })) expected += chunk.text;
    const whole = await client.completions.create({ model: MODEL, prompt: 'And God said', max_tokens: 6, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(whole.object).toBe('text_completion');
    expect(whole.choices[0].text).toBe(expected);
    expect(whole.choices[0].finish_reason).toBe('length');
    expect(whole.usage).toMatchObject({ completion_tokens: 6, total_tokens: whole.usage!.prompt_tokens + 6 });
    let streamed = '';
    let usage;
    const stream = await client.completions.create({ model: MODEL, prompt: 'And God said', max_tokens: 6, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } } as OpenAI.CompletionCreateParamsStreaming);
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.text ?? '';
      usage = chunk.usage ?? usage;
    }
    expect(streamed).toBe(expected);
    expect(usage).toEqual(whole.usage);
    // Token ids as the prompt: the same continuation.
    const ids = await engine.tokenize('And God said');
    const fromIds = await client.completions.create({ model: MODEL, prompt: ids, max_tokens: 6, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(fromIds.choices[0].text).toBe(expected);
  });

  it('response_format json_schema: the reply parses and follows the schema', async () => {
    const schema = { type: 'object', properties: { book: { enum: ['Genesis', 'Exodus'] }, chapter: { type: 'integer', minimum: 1, maximum: 50 } }, required: ['book', 'chapter'], additionalProperties: false };
    const reply = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 40, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'verse', schema, strict: true } } });
    expect(reply.choices[0].finish_reason).toBe('stop');
    const value = JSON.parse(reply.choices[0].message.content ?? '') as { book: string; chapter: number };
    expect(['Genesis', 'Exodus']).toContain(value.book);
    expect(Number.isInteger(value.chapter) && value.chapter >= 1 && value.chapter <= 50, JSON.stringify(value)).toBe(true);
    expect(Object.keys(value).sort()).toEqual(['book', 'chapter']);
  });

  it('stop ends the reply before the stop string, with finish_reason stop', async () => {
    const full = await client.completions.create({ model: MODEL, prompt: 'In the beginning', max_tokens: 16, temperature: 0 });
    const text = full.choices[0].text;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    const cut = text.indexOf(stop);
    expect(cut).toBeGreaterThan(0); // the test needs a stop string after the first character
    const stopped = await client.completions.create({ model: MODEL, prompt: 'In the beginning', max_tokens: 16, temperature: 0, stop: [stop] });
    expect(stopped.choices[0].text).toBe(text.slice(0, cut));
    expect(stopped.choices[0].finish_reason).toBe('stop');
  });

  it('the same seed gives the same sampled reply', async () => {
    const request = { model: MODEL, messages: MESSAGES, max_tokens: 8, temperature: 1, seed: 1234 };
    const a = await client.chat.completions.create(request);
    const b = await client.chat.completions.create(request);
    expect(b.choices[0].message.content).toBe(a.choices[0].message.content);
  });

  it('a client that disconnects aborts its request: the engine stops, nothing is left', async () => {
    const before = endings.length;
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 400, ignore_eos: true, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming, {
      signal: controller.signal,
    });
    let received = 0;
    let finish: string | null = null;
    // The openai client ends the iteration quietly when its own signal aborts it.
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) received++;
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (received === 2) controller.abort();
    }
    expect(received).toBe(2);
    expect(finish).toBeNull();
    await expectNothingLeft();
    const ending = endings[before];
    expect(ending.how).toBe('AbortError');
    expect(ending.chunks).toBeLessThan(400);
  });

  it('answers CORS preflights and sets Access-Control-Allow-Origin on every answer', async () => {
    const preflight = await fetch(`${server.baseURL}/chat/completions`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://example.test', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization, content-type, x-stainless-os' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('*');
    expect(preflight.headers.get('access-control-allow-methods')).toContain('POST');
    expect(preflight.headers.get('access-control-allow-headers')).toBe('authorization, content-type, x-stainless-os');
    const missing = await fetch(`${server.url}/nowhere`);
    expect(missing.headers.get('access-control-allow-origin')).toBe('*');
  });
});

describe('webmoe serve errors: OpenAI\'s body and status', () => {
  it.each([
    ['a field of the wrong type', { temperature: 'hot' }, 'temperature', /temperature must be a number >= 0/],
    ['a field out of range', { top_p: 1.5 }, 'top_p', /top_p must be a number in \(0, 1\]/],
    ['a seed outside u32', { seed: -1 }, 'seed', /seed must be an integer in \[0, 2\^32\)/],
    ['n > 1', { n: 2 }, 'n', /n must be 1/],
    ['a response_format without its schema', { response_format: { type: 'json_schema', json_schema: { name: 'x' } } }, 'response_format', /json_schema\.schema is missing/],
    ['a response_format of an unknown type', { response_format: { type: 'yaml' } }, 'response_format', /response_format\.type must be/],
    ['tools', { tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools', /tools are not supported/],
    ['an image part', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages[0].content[0]', /text part/],
    ['a tool role', { messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].role', /role must be one of/],
    ['stream_options without stream', { stream_options: { include_usage: true } }, 'stream_options', /only allowed with stream: true/],
  ])('400 for %s, naming the field', async (_, fields, param, message) => {
    const err = await statusOf(client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 2, ...fields } as never));
    expect(err.status).toBe(400);
    expect(err.type).toBe('invalid_request_error');
    expect(err.param).toBe(param);
    expect(err.message).toMatch(message);
  });

  it('400 invalid_json_schema for a schema the grammar library refuses, whole or streamed', async () => {
    const response_format = { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'string', pattern: '((' } } } as const;
    for (const stream of [false, true]) {
      const err = await statusOf((async () => {
        const reply = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 4, stream, response_format } as never);
        if (stream) for await (const _ of reply as unknown as AsyncIterable<unknown>) void _;
      })());
      expect(err.status, `stream ${stream}`).toBe(400);
      expect(err.code).toBe('invalid_json_schema');
      expect(err.param).toBe('response_format');
      expect(err.message).toMatch(/parenthesis is not closed/);
    }
  });

  it('400 context_length_exceeded for a prompt over the context', async () => {
    const err = await statusOf(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'word '.repeat(3000) }], max_tokens: 2 }));
    expect(err.status).toBe(400);
    expect(err.code).toBe('context_length_exceeded');
    // Streamed too: the status is held until the first token, so the refusal is still a 400.
    const streamed = await statusOf(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'word '.repeat(3000) }], max_tokens: 2, stream: true }));
    expect(streamed.status).toBe(400);
  });

  it('404 for another model, and for an unknown route; 405 for a wrong method; 400 for a body that is not JSON', async () => {
    const other = await statusOf(client.chat.completions.create({ model: 'gpt-4', messages: MESSAGES }));
    expect(other.status).toBe(404);
    expect(other.code).toBe('model_not_found');
    const route = await fetch(`${server.baseURL}/embeddings`, { method: 'POST', body: '{}' });
    expect(route.status).toBe(404);
    expect(await route.json()).toEqual({ error: { message: expect.stringMatching(/no route POST \/v1\/embeddings/), type: 'invalid_request_error', param: null, code: 'unknown_url' } });
    const method = await fetch(`${server.baseURL}/chat/completions`);
    expect(method.status).toBe(405);
    expect(method.headers.get('allow')).toContain('POST');
    for (const body of ['{"messages": [', '[1, 2]', '']) {
      const bad = await fetch(`${server.baseURL}/chat/completions`, { method: 'POST', body, headers: { 'Content-Type': 'application/json' } });
      expect(bad.status).toBe(400);
      expect((await bad.json()).error.code).toBe('invalid_json');
    }
  });

  it('a port in use is an ArgumentError that says to choose another', async () => {
    const taken = startServer({ engine, modelId: MODEL, port: server.port });
    await expect(taken).rejects.toBeInstanceOf(ArgumentError);
    await expect(taken).rejects.toThrow(/port is in use; choose another with --port/);
    await expect(startServer({ engine, modelId: MODEL, port: 0, maxConcurrent: 0 })).rejects.toThrow(/maxConcurrent must be an integer >= 1/);
  });

  it('413 for a body over the limit', async () => {
    const small = await startServer({ engine, modelId: MODEL, port: 0, maxBodyBytes: 1024 });
    try {
      const big = await fetch(`${small.baseURL}/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(4096) }] }) });
      expect(big.status).toBe(413);
      expect((await big.json()).error.code).toBe('request_too_large');
    } finally {
      await small.close();
    }
  });

  it('401 without the API key, or with another; every route is checked', async () => {
    const locked = await startServer({ engine, modelId: MODEL, port: 0, apiKey: 'sesame' });
    try {
      const wrong = new OpenAI({ baseURL: locked.baseURL, apiKey: 'open', maxRetries: 0 });
      expect((await statusOf(wrong.models.list())).status).toBe(401);
      expect((await statusOf(wrong.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 1 }))).status).toBe(401);
      const none = await fetch(`${locked.url}/health`);
      expect(none.status).toBe(401);
      expect((await none.json()).error.code).toBe('invalid_api_key');
      const right = new OpenAI({ baseURL: locked.baseURL, apiKey: 'sesame', maxRetries: 0 });
      expect((await right.models.retrieve(MODEL)).id).toBe(MODEL);
    } finally {
      await locked.close();
    }
  });

  it('over --max-concurrent a request waits for a slot; past the waiting room, 429 with Retry-After', async () => {
    for (const maxWaiting of [0, 1]) {
      const one = await startServer({ engine, modelId: MODEL, port: 0, maxConcurrent: 1, maxWaiting });
      const oneClient = new OpenAI({ baseURL: one.baseURL, apiKey: 'x', maxRetries: 0 });
      const controller = new AbortController();
      try {
        const first = await oneClient.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 400, ignore_eos: true, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming, { signal: controller.signal });
        const it = first[Symbol.asyncIterator]();
        await it.next(); // the first request is generating
        const second = fetch(`${one.baseURL}/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'In', max_tokens: 1 }) });
        if (maxWaiting === 0) {
          const refused = await second;
          expect(refused.status).toBe(429);
          expect(refused.headers.get('retry-after')).toBe('1');
          expect((await refused.json()).error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded' });
        }
        controller.abort();
        while (!(await it.next()).done);
        // With a place to wait, the second runs once the first has gone.
        if (maxWaiting === 1) expect((await (await second).json()).usage.completion_tokens).toBe(1);
      } finally {
        await one.close();
      }
      await expectNothingLeft(one);
    }
  });

  /** A server over an engine whose chat fails with `error`, at once or after the first token. */
  async function failing(error: Error, afterFirstToken: boolean) {
    const log: string[] = [];
    const create = async () => {
      if (!afterFirstToken) throw error;
      return (async function* (): AsyncGenerator<ChatCompletionChunk> {
        const base = { id: 'x', object: 'chat.completion.chunk' as const, created: 0, model: MODEL };
        yield { ...base, choices: [{ index: 0, delta: { role: 'assistant' }, finish_reason: null }] };
        yield { ...base, choices: [{ index: 0, delta: { content: 'a' }, finish_reason: null }], webmoe: { ids: [5] } };
        throw error;
      })();
    };
    const broken: Engine = { ...engine, chat: { completions: { create: create as unknown as Engine['chat']['completions']['create'] } } };
    const s = await startServer({ engine: broken, modelId: MODEL, port: 0, log: (line) => log.push(line) });
    return { s, log, c: new OpenAI({ baseURL: s.baseURL, apiKey: 'x', maxRetries: 0 }) };
  }

  it('503 with Retry-After when the engine is busy; 500 without the detail for a fault, which is logged', async () => {
    const busy = await failing(new EngineBusyError('64 requests are already waiting'), false);
    try {
      const err = await statusOf(busy.c.chat.completions.create({ model: MODEL, messages: MESSAGES }));
      expect(err.status).toBe(503);
      expect(err.code).toBe('engine_busy');
      expect(err.headers?.get('retry-after')).toBe('1');
    } finally {
      await busy.s.close();
    }
    const fault = await failing(new TypeError('secret detail'), false);
    try {
      const err = await statusOf(fault.c.chat.completions.create({ model: MODEL, messages: MESSAGES }));
      expect(err.status).toBe(500);
      expect(err.message).not.toMatch(/secret/);
      expect(fault.log).toEqual([expect.stringMatching(/internal error on POST \/v1\/chat\/completions: TypeError: secret detail/)]);
    } finally {
      await fault.s.close();
    }
  });

  it('a failure after the first token ends the stream with an error event (the client throws an APIError)', async () => {
    const late = await failing(new NonFiniteError('the model computed NaN logits'), true);
    try {
      const stream = await late.c.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
      const got: string[] = [];
      const err = await (async () => {
        for await (const chunk of stream) got.push(chunk.choices[0]?.delta.content ?? '');
      })().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(got.join('')).toBe('a');
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).message).toMatch(/NaN logits/);
    } finally {
      await late.s.close();
    }
  });

  it('close() ends the requests in flight with a 503 error event, and nothing is left', async () => {
    const closing = await startServer({ engine, modelId: MODEL, port: 0 });
    const c = new OpenAI({ baseURL: closing.baseURL, apiKey: 'x', maxRetries: 0 });
    const stream = await c.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 400, ignore_eos: true, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    const closed = closing.close();
    const err = await (async () => {
      for (;;) if ((await it.next()).done) return undefined;
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    await closed;
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).message).toMatch(/the server is shutting down/);
    await expectNothingLeft(closing);
  });
});

describe('webmoe serve under load (small)', () => {
  it('8 streaming clients, 3 of them disconnecting: every request ends in a reply or a typed error, nothing leaks', async () => {
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, async (_, i) => {
        const controller = new AbortController();
        const stream = await client.chat.completions.create(
          { model: MODEL, messages: [{ role: 'user', content: `verse ${i}` }], max_tokens: 6, temperature: 0.7, seed: i, ignore_eos: true, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming,
          { signal: controller.signal },
        );
        let pieces = 0;
        let finish: string | null = null;
        for await (const chunk of stream) {
          if (i % 3 === 2 && ++pieces === 1 + (i % 2)) controller.abort();
          finish = chunk.choices[0]?.finish_reason ?? finish;
        }
        return finish;
      }),
    );
    // A disconnected client's stream ends without a finish_reason (the openai client stops quietly at its own abort).
    expect(outcomes).toEqual(Array.from({ length: 8 }, (_, i) => ({ status: 'fulfilled', value: i % 3 === 2 ? null : 'length' })));
    await expectNothingLeft();
  });
});
