// chat.completions.create over HTTP: the request as OpenAI's body, the reply as the local engine
// gives it. A stream always asks for usage, and its finish chunk is held until the usage chunk
// comes, so the last chunk carries finish_reason and usage together, as locally. Reasoning text
// arrives as `reasoning_content`, whichever name the server used.

import { FetchError, RemoteError, RemoteUnsupportedError } from '../errors.ts';
import { DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING } from '../runtime/generate.ts';
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionUsage, GenerationStats } from '../runtime/types.ts';
import { errorDetailsOf, type Call } from './http.ts';
import { replyPiece } from './replies.ts';
import { serverEvents } from './sse.ts';
import { RemoteTiming } from './timing.ts';
import type { WireUsage } from './wire.ts';

/** Fields without a value are left out: a server may refuse a field it does not know (OpenAI's own refuses top_k). */
function defined(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}

/** The sampling defaults are the engine's, so that a request means the same locally and remotely. */
export function chatBody(request: ChatCompletionRequest, model: string): Record<string, unknown> {
  if (request.experts) throw new RemoteUnsupportedError('experts', 'a remote engine cannot report the experts of each token: OpenAI-compatible servers do not send them');
  if (!Array.isArray(request.messages)) return { model, messages: request.messages }; // the server refuses it, with its message
  return defined({
    model,
    messages: request.messages.map((m) => ({ role: m?.role, content: m?.content })),
    stream: request.stream === true,
    stream_options: request.stream === true ? { include_usage: true } : undefined,
    max_tokens: request.max_tokens ?? DEFAULT_MAX_TOKENS,
    temperature: request.temperature ?? DEFAULT_SAMPLING.temperature,
    top_p: request.top_p ?? DEFAULT_SAMPLING.topP,
    top_k: request.top_k,
    seed: request.seed,
    stop: request.stop,
    repetition_penalty: request.repetition_penalty,
    ignore_eos: request.ignore_eos,
    // As OpenAI's: webmoe serve, vLLM and SGLang all constrain decoding to it.
    response_format: request.response_format,
  });
}

export function usageOf(usage: WireUsage | undefined, stats: GenerationStats): ChatCompletionUsage {
  if (usage) return { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens, total_tokens: usage.total_tokens };
  return { prompt_tokens: stats.promptTokens, completion_tokens: stats.generatedTokens, total_tokens: stats.promptTokens + stats.generatedTokens };
}

const idOf = (value: unknown, fallback: string) => (typeof (value as { id?: unknown })?.id === 'string' ? (value as { id: string }).id : fallback);
const createdOf = (value: unknown) => {
  const c = (value as { created?: unknown })?.created;
  return typeof c === 'number' ? c : Math.floor(Date.now() / 1000);
};

/** A whole reply (stream: false). */
export function wholeChat(value: unknown, call: Call, status: number, model: string, timing: RemoteTiming): ChatCompletion {
  const piece = replyPiece(value, 'message', call, status);
  if (piece.empty) throw new RemoteError(call.url, status, "the server's reply has no choices");
  timing.mark(true);
  const stats = timing.stats(piece.usage, piece.stats);
  const message = { role: 'assistant' as const, content: piece.content, ...(piece.reasoning ? { reasoning_content: piece.reasoning } : {}) };
  return {
    id: idOf(value, 'chatcmpl-remote'),
    object: 'chat.completion',
    created: createdOf(value),
    model,
    choices: [{ index: 0, message, finish_reason: piece.finishReason ?? 'stop' }],
    usage: usageOf(piece.usage, stats),
    webmoe: { ids: piece.ids ?? [], stats },
  };
}

/** The chunks of a streamed reply. `onPiece` sees each one's text (the session keeps the reply). */
export async function* chatChunks(response: Response, call: Call, model: string, timing: RemoteTiming, onPiece: (content: string) => void): AsyncGenerator<ChatCompletionChunk> {
  let finish: ChatCompletionChunk | undefined;
  let usage: WireUsage | undefined;
  let serverStats: GenerationStats | undefined;
  let base: Omit<ChatCompletionChunk, 'choices'> | undefined;
  for await (const { event, data } of serverEvents(response, call)) {
    if (event === 'error') throw new RemoteError(call.url, response.status, errorDetailsOf(data)?.message ?? JSON.stringify(data));
    const piece = replyPiece(data, 'delta', call, response.status);
    usage = piece.usage ?? usage;
    serverStats = piece.stats ?? serverStats;
    if (piece.empty || finish) continue; // the usage chunk; nothing comes after a finish but usage
    base ??= { id: idOf(data, 'chatcmpl-remote'), object: 'chat.completion.chunk', created: createdOf(data), model };
    if (piece.content || piece.reasoning || (piece.ids?.length ?? 0) > 0) timing.mark(piece.content !== '' || piece.reasoning !== '');
    onPiece(piece.content);
    const delta = {
      ...(piece.role ? { role: 'assistant' as const } : {}),
      ...(piece.content ? { content: piece.content } : {}),
      ...(piece.reasoning ? { reasoning_content: piece.reasoning } : {}),
    };
    const chunk: ChatCompletionChunk = { ...base, choices: [{ index: 0, delta, finish_reason: piece.finishReason }], ...(piece.ids ? { webmoe: { ids: piece.ids } } : {}) };
    if (piece.finishReason) finish = chunk;
    else yield chunk;
  }
  if (!finish) throw new FetchError(call.url, 'the stream ended before the reply was finished (no finish_reason came)');
  const stats = timing.stats(usage, serverStats);
  yield { ...finish, usage: usageOf(usage, stats), webmoe: { ids: finish.webmoe?.ids ?? [], stats } };
}
