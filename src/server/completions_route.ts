// POST /v1/completions on the engine's generate(): a text (or token ids) continued, whole or
// streamed. Usage as in chat: on the whole reply, and in a chunk of its own when a stream asks.

import type { WireCompletion, WireCompletionChunk, WireUsage } from '../remote/wire.ts';
import type { FinishReason, GenerateChunk, GenerationStats } from '../runtime/types.ts';
import { parseCompletionRequest } from './completion_request.ts';
import { checkModel, responseId, sendJson, type Route } from './route.ts';
import { EventStream, heldUntil } from './sse.ts';

export const completions: Route = async ({ res, body, engine, modelId, signal, admit }) => {
  const { prompt, options, stream, includeUsage } = parseCompletionRequest(body);
  checkModel(body, modelId);
  await admit();
  const base = { id: responseId('cmpl'), object: 'text_completion' as const, created: Math.floor(Date.now() / 1000), model: modelId };
  const chunks = engine.generate(prompt, { ...options, signal });
  if (!stream) {
    let text = '';
    const ids: number[] = [];
    let done: { finishReason: FinishReason; stats: GenerationStats } | undefined;
    for await (const chunk of chunks) {
      text += chunk.text;
      ids.push(...chunk.ids);
      done = chunk.done ?? done;
    }
    // A generation that returns ends with `done` (an abort throws instead).
    const reply: WireCompletion = { ...base, choices: [{ index: 0, text, logprobs: null, finish_reason: done!.finishReason }], usage: usageOf(done!.stats), webmoe: { ids, stats: done!.stats } };
    sendJson(res, 200, reply);
    return;
  }
  const held = await heldUntil(chunks, () => true);
  const events = new EventStream(res);
  events.start();
  for await (const chunk of held) {
    await events.send(wireChunk(base, chunk));
    if (chunk.done && includeUsage) await events.send({ ...base, choices: [], usage: usageOf(chunk.done.stats) } satisfies WireCompletionChunk);
  }
  events.end();
};

function wireChunk(base: Omit<WireCompletionChunk, 'choices'>, chunk: GenerateChunk): WireCompletionChunk {
  return {
    ...base,
    choices: [{ index: 0, text: chunk.text, logprobs: null, finish_reason: chunk.done?.finishReason ?? null }],
    webmoe: { ids: chunk.ids, ...(chunk.done ? { stats: chunk.done.stats } : {}) },
  };
}

function usageOf(stats: GenerationStats): WireUsage {
  return { prompt_tokens: stats.promptTokens, completion_tokens: stats.generatedTokens, total_tokens: stats.promptTokens + stats.generatedTokens };
}
