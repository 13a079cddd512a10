// createRemoteEngine against small servers written here (plain node:http) that answer as vLLM and
// SGLang do, and as broken or busy servers do: reasoning text under either name, usage only when
// asked (or on the finish chunk, or never), 429 with Retry-After then success, a connection reset
// before the reply, 500 and the older error bodies, malformed and cut streams, error events,
// finish_reason 'abort', a server without /tokenize. No GPU.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AbortError, FetchError, RemoteError, RemoteUnsupportedError } from '../errors.ts';
import type { Engine, GenerateChunk } from '../runtime/types.ts';
import { REPO_ROOT } from '../testing/fixtures.ts';
import { createRemoteEngine } from './engine.ts';

type Body = Record<string, any>;
type Handler = (req: IncomingMessage, body: Body, res: ServerResponse, attempt: number) => void;

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

/** A server that lists `model` owned by `ownedBy` and answers every other request with `handler`; `requests` records the bodies. */
async function fake(ownedBy: string, handler: Handler, model = 'deepseek-ai/DeepSeek-V3') {
  const requests: { url: string; body: Body }[] = [];
  const server = createServer(async (req, res) => {
    let text = '';
    for await (const chunk of req) text += chunk;
    if (req.url === '/v1/models') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [{ id: model, object: 'model', created: 1, owned_by: ownedBy, max_model_len: 163840 }] }));
      return;
    }
    requests.push({ url: req.url ?? '', body: text ? JSON.parse(text) : {} });
    handler(req, requests.at(-1)!.body, res, requests.length);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  const handle = { close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))) };
  open.push(handle);
  return { baseURL, requests, engine: (options: { maxRetries?: number; config?: string } = {}) => createRemoteEngine({ baseURL, model, ...options }) };
}

const sse = (res: ServerResponse, events: unknown[], done = true) => {
  res.writeHead(200, { 'Content-Type': 'text/event-stream' });
  for (const e of events) res.write(`data: ${typeof e === 'string' ? e : JSON.stringify(e)}\n\n`);
  res.end(done ? 'data: [DONE]\n\n' : '');
};
const json = (res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(value));
};
const chunk = (delta: Body, finish: string | null = null, usage?: Body) => ({ id: 'c1', object: 'chat.completion.chunk', created: 7, model: 'm', choices: [{ index: 0, delta, finish_reason: finish }], ...(usage ? { usage } : {}) });
const usageChunk = (usage: Body) => ({ id: 'c1', object: 'chat.completion.chunk', created: 7, model: 'm', choices: [], usage });
const USAGE = { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12, prompt_tokens_details: { cached_tokens: 4 } };
const MESSAGES = [{ role: 'user' as const, content: 'Why is the sky blue?' }];

/** vLLM 0.11+: `reasoning`, usage in a chunk of its own only when stream_options.include_usage. */
const vllmChat: Handler = (_req, body, res) => {
  if (!body.stream) {
    json(res, 200, { id: 'w', object: 'chat.completion', created: 7, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'Rayleigh.', reasoning: 'Light scatters.' }, finish_reason: 'stop' }], usage: USAGE });
    return;
  }
  const events = [chunk({ role: 'assistant', content: '' }), chunk({ reasoning: 'Light ' }), chunk({ reasoning: 'scatters.' }), chunk({ content: 'Ray' }), chunk({ content: 'leigh.' }, 'stop')];
  if (body.stream_options?.include_usage) events.push(usageChunk(USAGE));
  sse(res, events);
};

/** SGLang: `reasoning_content`, usage on the finish chunk itself. */
const sglangChat: Handler = (_req, body, res) => {
  if (!body.stream) {
    json(res, 200, { id: 'w', object: 'chat.completion', created: 7, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'Rayleigh.', reasoning_content: 'Light scatters.' }, finish_reason: 'stop' }], usage: USAGE });
    return;
  }
  sse(res, [chunk({ role: 'assistant', content: '' }), chunk({ reasoning_content: 'Light scatters.' }), chunk({ content: 'Rayleigh.' }, 'stop', USAGE)]);
};

async function streamChat(engine: Engine) {
  const chunks = [];
  for await (const c of await engine.chat.completions.create({ messages: MESSAGES, stream: true })) chunks.push(c);
  return chunks;
}

async function collect(chunks: AsyncIterable<GenerateChunk>) {
  let text = '';
  let done: GenerateChunk['done'];
  for await (const c of chunks) {
    text += c.text;
    done = c.done ?? done;
  }
  return { text, done };
}

describe('remote engine against servers that answer as vLLM and SGLang', () => {
  it.each([
    ['vllm', vllmChat],
    ['sglang', sglangChat],
  ])('%s: reasoning text as reasoning_content, usage and stats on the last chunk, whole and streamed', async (name, handler) => {
    const server = await fake(name, handler);
    const engine = await server.engine();
    expect(engine.info.backend).toMatchObject({ kind: 'remote', server: name });
    expect((await engine.stats()).limits.maxContext).toBe(163840);
    const whole = await engine.chat.completions.create({ messages: MESSAGES });
    expect(whole.choices[0]).toEqual({ index: 0, message: { role: 'assistant', content: 'Rayleigh.', reasoning_content: 'Light scatters.' }, finish_reason: 'stop' });
    expect(whole.usage).toEqual({ prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 });
    expect(whole.webmoe).toMatchObject({ ids: [], stats: { promptTokens: 9, prefilledTokens: 5, generatedTokens: 3 } });
    const chunks = await streamChat(engine);
    expect(chunks.map((c) => c.choices[0].delta.reasoning_content ?? '').join('')).toBe('Light scatters.');
    expect(chunks.map((c) => c.choices[0].delta.content ?? '').join('')).toBe('Rayleigh.');
    const last = chunks.at(-1)!;
    expect(last.choices[0].finish_reason).toBe('stop');
    expect(last.usage).toEqual({ prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 });
    expect(last.webmoe?.stats).toMatchObject({ promptTokens: 9, generatedTokens: 3 });
    // The engine always asks a stream for its usage, and sends its own defaults.
    expect(server.requests.at(-1)!.body).toMatchObject({ model: 'deepseek-ai/DeepSeek-V3', stream: true, stream_options: { include_usage: true }, max_tokens: 256, temperature: 0.7, top_p: 0.95 });
    expect(server.requests.at(-1)!.body).not.toHaveProperty('top_k');
  });

  it('a server that sends no usage: the counts are the pieces streamed', async () => {
    const server = await fake('vllm', (_req, _body, res) => sse(res, [chunk({ content: 'a' }), chunk({ content: 'b' }), chunk({ content: 'c' }, 'length')]));
    const last = (await streamChat(await server.engine())).at(-1)!;
    expect(last.choices[0].finish_reason).toBe('length');
    expect(last.usage).toEqual({ prompt_tokens: 0, completion_tokens: 3, total_tokens: 3 });
  });

  it('completions: text streamed, finish and stats on the last chunk; vLLM\'s extensions in the body', async () => {
    const server = await fake('vllm', (_req, _body, res) =>
      sse(res, [
        { id: 'x', object: 'text_completion', created: 1, model: 'm', choices: [{ index: 0, text: ' the', finish_reason: null }] },
        { id: 'x', object: 'text_completion', created: 1, model: 'm', choices: [{ index: 0, text: ' end', finish_reason: 'length' }] },
        { id: 'x', object: 'text_completion', created: 1, model: 'm', choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } },
      ]),
    );
    const engine = await server.engine();
    const got = await collect(engine.generate('In', { maxTokens: 2, topK: 5, repetitionPenalty: 1.1, stopTokenIds: [7], ignoreEos: true, addBos: false, seed: 3 }));
    expect(got).toMatchObject({ text: ' the end', done: { finishReason: 'length', stats: { promptTokens: 3, generatedTokens: 2 } } });
    expect(server.requests[0]).toEqual({
      url: '/v1/completions',
      body: { model: 'deepseek-ai/DeepSeek-V3', prompt: 'In', stream: true, stream_options: { include_usage: true }, max_tokens: 2, temperature: 0.7, top_p: 0.95, top_k: 5, seed: 3, stop_token_ids: [7], repetition_penalty: 1.1, ignore_eos: true, add_special_tokens: false },
    });
    // A session of token ids needs the reply's ids, which vLLM does not send.
    const session = await engine.createSession();
    await expect(collect(engine.generate([1, 2], { session }))).rejects.toBeInstanceOf(RemoteUnsupportedError);
  });

  it('info needs the config from the caller when the server does not describe the model', async () => {
    const server = await fake('vllm', vllmChat);
    const bare = await server.engine();
    expect(() => bare.info.config).toThrow(RemoteUnsupportedError);
    expect(() => bare.info.parameters).toThrow(/pass the checkpoint's config.json as createRemoteEngine\(\{ config \}\)/);
    expect(JSON.parse(JSON.stringify(bare.info))).toMatchObject({ name: 'deepseek-ai/DeepSeek-V3', backend: { server: 'vllm' } });
    const config = readFileSync(resolve(REPO_ROOT, 'public/models/webmoe-kjv-12m/config.json'), 'utf8');
    const described = await server.engine({ config });
    expect(described.info).toMatchObject({ hasMtp: true, weights: 'fp8', moeLayers: [1, 2, 3, 4], config: { vocab_size: 8192 } });
    await expect(server.engine({ config: '{"vocab_size": -1}' })).rejects.toThrow(/config.json given for/);
  });
});

describe('remote engine retries and failures', () => {
  it('429 with Retry-After, then success: retried once', async () => {
    const server = await fake('vllm', (req, body, res, attempt) => (attempt === 1 ? json(res, 429, { error: { message: 'slow down', type: 'rate_limit_error', param: null, code: 429 } }, { 'Retry-After': '0' }) : vllmChat(req, body, res, attempt)));
    const reply = await (await server.engine()).chat.completions.create({ messages: MESSAGES });
    expect(reply.choices[0].message.content).toBe('Rayleigh.');
    expect(server.requests).toHaveLength(2);
  });

  it('a connection reset before any byte of the reply is retried', async () => {
    const server = await fake('vllm', (req, body, res, attempt) => (attempt === 1 ? req.socket.destroy() : vllmChat(req, body, res, attempt)));
    const reply = await (await server.engine()).chat.completions.create({ messages: MESSAGES });
    expect(reply.choices[0].message.content).toBe('Rayleigh.');
    expect(server.requests).toHaveLength(2);
  });

  it.each([
    ['a 500', (res: ServerResponse) => json(res, 500, { error: { message: 'CUDA out of memory', type: 'InternalServerError', param: null, code: 500 } }), 500, 'CUDA out of memory'],
    ['a 429 without Retry-After', (res: ServerResponse) => json(res, 429, { error: { message: 'queue full', type: 'rate_limit_error', param: null, code: 429 } }), 429, 'queue full'],
    ['a 503 whose Retry-After is too far', (res: ServerResponse) => json(res, 503, { error: { message: 'overloaded', type: 'server_error', param: null, code: 503 } }, { 'Retry-After': '120' }), 503, 'overloaded'],
    ['the older error body', (res: ServerResponse) => json(res, 400, { object: 'error', message: 'max_tokens is too large', type: 'BadRequestError', param: null, code: 400 }), 400, 'max_tokens is too large'],
    ['plain text', (res: ServerResponse) => (res.writeHead(502), res.end('Bad Gateway')), 502, 'Bad Gateway'],
  ])('%s is a RemoteError with the status and the server\'s words, not retried', async (_, answer, status, message) => {
    const server = await fake('sglang', (_req, _body, res) => answer(res));
    const err = await (await server.engine()).chat.completions.create({ messages: MESSAGES }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ status, serverMessage: message });
    expect(server.requests).toHaveLength(1);
    if (status === 503) expect((err as RemoteError).retryAfterMs).toBe(120_000);
  });

  it.each([
    ['malformed data', (res: ServerResponse) => sse(res, [chunk({ content: 'a' }), '{"choices": [']), RemoteError, /malformed server-sent event/],
    ['an error event', (res: ServerResponse) => sse(res, [chunk({ content: 'a' }), { error: { message: 'the engine died', type: 'InternalServerError', param: null, code: 500 } }]), RemoteError, /the engine died/],
    ['finish_reason abort', (res: ServerResponse) => sse(res, [chunk({ content: 'a' }, 'abort')]), RemoteError, /aborted the request/],
    ['a stream that ends before its finish', (res: ServerResponse) => sse(res, [chunk({ content: 'a' })], false), FetchError, /ended before the reply was finished/],
    ['a connection cut mid-stream', (res: ServerResponse) => (res.writeHead(200, { 'Content-Type': 'text/event-stream' }), res.write(`data: ${JSON.stringify(chunk({ content: 'a' }))}\n\n`), setTimeout(() => res.socket?.destroy(), 20)), FetchError, /connection was lost/],
    ['a reply that is not a stream of chunks', (res: ServerResponse) => sse(res, [{ hello: 'world' }]), RemoteError, /not OpenAI's shape/],
  ])('%s ends the stream in a typed error, after the pieces that came', async (_, answer, type, message) => {
    const server = await fake('sglang', (_req, _body, res) => answer(res));
    const engine = await server.engine();
    const pieces: string[] = [];
    const err = await (async () => {
      for await (const c of await engine.chat.completions.create({ messages: MESSAGES, stream: true })) pieces.push(c.choices[0].delta.content ?? '');
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(type);
    expect((err as Error).message).toMatch(message);
    expect(server.requests).toHaveLength(1);
    expect((await engine.stats()).remote?.requestsInFlight).toBe(0);
  });

  it('an abort during a Retry-After wait ends it at once, as AbortError', async () => {
    const server = await fake('vllm', (_req, _body, res) => json(res, 503, { error: { message: 'busy', type: 'server_error', param: null, code: 503 } }, { 'Retry-After': '20' }));
    const engine = await server.engine();
    const controller = new AbortController();
    const reply = engine.chat.completions.create({ messages: MESSAGES, signal: controller.signal });
    while (server.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    await expect(reply).rejects.toBeInstanceOf(AbortError);
  });

  it('a server without /tokenize: RemoteUnsupportedError saying so', async () => {
    const server = await fake('sglang', (_req, _body, res) => json(res, 404, { detail: 'Not Found' }));
    await expect((await server.engine()).tokenize('hello')).rejects.toMatchObject({ feature: 'tokenize', message: expect.stringMatching(/has no \/tokenize endpoint/) });
  });
});
