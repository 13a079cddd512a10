// The load test of `webmoe serve` (bounded, loopback only): a fixed count of streamed chat
// requests from N concurrent clients (the official openai client), a third of them disconnecting
// at a random moment (before the first token or after a few), against the server on the shipped
// checkpoint in this process. At the end nothing may be left: no request in flight, no session,
// the GPU buffers of the loaded model; and every request must have ended in a reply or a typed
// error (an HTTP status with OpenAI's body). Prints requests/s, tokens/s, latency percentiles and
// the leak check; exits 1 if anything leaked or ended untyped.
//
//   npx tsx --import ./tools/register-raw.mjs tools/serve_load.ts [--clients 32] [--requests 96]
//       [--max-tokens 16] [--max-concurrent N] [--seed S] [--model DIR] [--json]

import OpenAI, { APIError } from 'openai';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createNodeEngine, startServer } from '../src/node.ts';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '32' },
    requests: { type: 'string', default: '96' },
    'max-tokens': { type: 'string', default: '16' },
    'max-concurrent': { type: 'string' },
    seed: { type: 'string', default: '1' },
    model: { type: 'string', default: resolve(import.meta.dirname, '../public/models/webmoe-kjv-12m') },
    json: { type: 'boolean', default: false },
  },
});
const clients = Number(values.clients);
const total = Number(values.requests);
const maxTokens = Number(values['max-tokens']);
const maxConcurrent = Number(values['max-concurrent'] ?? clients);

/** mulberry32: the same disconnects for the same --seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
const rand = random(Number(values.seed));

/** How a client leaves: never, after a delay (perhaps before its first token), or after some pieces. */
type Leave = { kind: 'stay' } | { kind: 'timer'; ms: number } | { kind: 'pieces'; n: number };
const leaves: Leave[] = Array.from({ length: total }, () => ({ kind: 'stay' }));
const order = Array.from({ length: total }, (_, i) => i).sort(() => rand() - 0.5);
for (const [k, i] of order.slice(0, Math.floor(total / 3)).entries()) {
  leaves[i] = k % 2 === 0 ? { kind: 'timer', ms: Math.floor(rand() * 1500) } : { kind: 'pieces', n: 1 + Math.floor(rand() * (maxTokens - 1)) };
}

interface Outcome {
  kind: 'reply' | 'disconnected' | 'http-error' | 'untyped';
  detail?: string;
  tokens: number;
  latencyMs: number;
  ttftMs?: number;
}

const engine = await createNodeEngine({ model: values.model });
const loaded = (await engine.stats()).gpuBuffers;
const server = await startServer({ engine, modelId: 'load', port: 0, maxConcurrent });
const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'x', maxRetries: 0 });

async function one(i: number): Promise<Outcome> {
  const leave = leaves[i];
  const controller = new AbortController();
  const timer = leave.kind === 'timer' ? setTimeout(() => controller.abort(), leave.ms) : undefined;
  const started = performance.now();
  let ttftMs: number | undefined;
  let pieces = 0;
  let finish: string | null = null;
  let tokens = 0;
  try {
    const stream = await client.chat.completions.create(
      { model: 'load', messages: [{ role: 'user', content: `Verse ${i}: and the` }], max_tokens: maxTokens, temperature: 0.8, seed: i, ignore_eos: true, stream: true, stream_options: { include_usage: true } } as OpenAI.ChatCompletionCreateParamsStreaming,
      { signal: controller.signal },
    );
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) {
        ttftMs ??= performance.now() - started;
        if (leave.kind === 'pieces' && ++pieces === leave.n) controller.abort();
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
      tokens = chunk.usage?.completion_tokens ?? tokens;
    }
    const latencyMs = performance.now() - started;
    if (controller.signal.aborted && finish === null) return { kind: 'disconnected', tokens: 0, latencyMs };
    return finish ? { kind: 'reply', detail: finish, tokens, latencyMs, ttftMs } : { kind: 'untyped', detail: 'a stream without finish_reason', tokens, latencyMs };
  } catch (err) {
    const latencyMs = performance.now() - started;
    if (controller.signal.aborted) return { kind: 'disconnected', tokens: 0, latencyMs };
    if (err instanceof APIError && typeof err.status === 'number') return { kind: 'http-error', detail: `${err.status} ${err.code ?? ''}`.trim(), tokens: 0, latencyMs };
    return { kind: 'untyped', detail: String(err), tokens: 0, latencyMs };
  } finally {
    clearTimeout(timer);
  }
}

const started = performance.now();
let next = 0;
const outcomes: Outcome[] = [];
await Promise.all(
  Array.from({ length: clients }, async () => {
    while (next < total) outcomes.push(await one(next++));
  }),
);
const wallS = (performance.now() - started) / 1000;
await server.idle();
const stats = await engine.stats();
const leaks = { requestsInFlight: server.requestsInFlight, sessions: stats.sessions, gpuBuffers: stats.gpuBuffers - loaded };
await server.close();
await engine.unload();

const replies = outcomes.filter((o) => o.kind === 'reply');
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const count = (kind: Outcome['kind']) => outcomes.filter((o) => o.kind === kind).length;
const tokens = replies.reduce((n, o) => n + o.tokens, 0);
const report = {
  adapter: stats.adapter,
  clients,
  requests: total,
  max_tokens: maxTokens,
  max_concurrent: maxConcurrent,
  wall_s: +wallS.toFixed(2),
  outcomes: { reply: count('reply'), disconnected: count('disconnected'), http_error: count('http-error'), untyped: count('untyped') },
  http_errors: outcomes.filter((o) => o.kind === 'http-error').map((o) => o.detail),
  requests_per_s: +(replies.length / wallS).toFixed(3),
  completion_tokens_per_s: +(tokens / wallS).toFixed(2),
  latency_ms: { p50: Math.round(pct(replies.map((o) => o.latencyMs), 50)), p95: Math.round(pct(replies.map((o) => o.latencyMs), 95)) },
  ttft_ms: { p50: Math.round(pct(replies.map((o) => o.ttftMs ?? NaN), 50)), p95: Math.round(pct(replies.map((o) => o.ttftMs ?? NaN), 95)) },
  leaks,
};
if (values.json) console.log(JSON.stringify(report, null, 2));
else {
  console.log(`webmoe serve load test on ${report.adapter}: ${total} streamed chat requests, ${clients} clients, max_tokens ${maxTokens}, --max-concurrent ${maxConcurrent}`);
  console.log(`  outcomes: ${report.outcomes.reply} replies, ${report.outcomes.disconnected} disconnected by their client, ${report.outcomes.http_error} HTTP errors${report.http_errors.length ? ` (${[...new Set(report.http_errors)].join(', ')})` : ''}, ${report.outcomes.untyped} untyped`);
  console.log(`  ${report.requests_per_s} replies/s, ${report.completion_tokens_per_s} completion tokens/s over ${report.wall_s} s`);
  console.log(`  latency of a reply: p50 ${report.latency_ms.p50} ms, p95 ${report.latency_ms.p95} ms; first token: p50 ${report.ttft_ms.p50} ms, p95 ${report.ttft_ms.p95} ms`);
  console.log(`  left behind: ${leaks.requestsInFlight} requests in flight, ${leaks.sessions} sessions, ${leaks.gpuBuffers} GPU buffers over the loaded model's ${loaded}`);
}
const failed = report.outcomes.untyped > 0 || leaks.requestsInFlight !== 0 || leaks.sessions !== 0 || leaks.gpuBuffers !== 0;
process.exitCode = failed ? 1 : 0;
