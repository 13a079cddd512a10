// POST /v1/chat/completions on the engine's chat API: whole, or streamed as server-sent events.
// The engine's last chunk carries the usage; on the wire it travels in a chunk of its own, with no
// choices, and only when the client asked with stream_options.include_usage (as OpenAI sends it).

import type { WireChatChunk, WireChatCompletion } from '../remote/wire.ts';
import type { ChatCompletion, ChatCompletionChunk } from '../runtime/types.ts';
import { parseChatRequest } from './chat_request.ts';
import { checkModel, responseId, sendJson, type Route } from './route.ts';
import { EventStream, heldUntil } from './sse.ts';

export const chatCompletions: Route = async ({ res, body, engine, modelId, signal, admit }) => {
  const { request, stream, includeUsage } = parseChatRequest(body);
  checkModel(body, modelId);
  await admit();
  const id = responseId('chatcmpl');
  if (!stream) {
    const reply = await engine.chat.completions.create({ ...request, stream: false, signal });
    sendJson(res, 200, wholeReply(reply, id, modelId));
    return;
  }
  const chunks = await engine.chat.completions.create({ ...request, stream: true, signal });
  // The role chunk comes before any engine work: hold it until the first token (or the end).
  const held = await heldUntil(chunks, (c) => c.webmoe !== undefined || c.choices[0].finish_reason !== null);
  const events = new EventStream(res);
  events.start();
  for await (const chunk of held) {
    await events.send(wireChunk(chunk, id, modelId));
    if (chunk.usage && includeUsage) {
      const usageChunk: WireChatChunk = { id, object: 'chat.completion.chunk', created: chunk.created, model: modelId, choices: [], usage: chunk.usage };
      await events.send(usageChunk);
    }
  }
  events.end();
};

function wireChunk(chunk: ChatCompletionChunk, id: string, model: string): WireChatChunk {
  const [choice] = chunk.choices;
  return {
    id,
    object: 'chat.completion.chunk',
    created: chunk.created,
    model,
    choices: [{ index: 0, delta: choice.delta, logprobs: null, finish_reason: choice.finish_reason }],
    ...(chunk.webmoe ? { webmoe: chunk.webmoe } : {}),
  };
}

function wholeReply(reply: ChatCompletion, id: string, model: string): WireChatCompletion {
  const [choice] = reply.choices;
  return {
    id,
    object: 'chat.completion',
    created: reply.created,
    model,
    choices: [{ index: 0, message: choice.message, logprobs: null, finish_reason: choice.finish_reason }],
    usage: reply.usage,
    webmoe: reply.webmoe,
  };
}
