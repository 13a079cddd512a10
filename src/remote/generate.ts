// generate() over HTTP: POST /v1/completions, streamed, with the engine's option names turned into
// OpenAI's (and vLLM's extensions: top_k, repetition_penalty, stop_token_ids, ignore_eos,
// add_special_tokens). The finish is held until the usage chunk, so the last chunk carries `done`
// with the stats, as locally.

import { FetchError, RemoteError, RemoteUnsupportedError } from '../errors.ts';
import { DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING } from '../runtime/generate.ts';
import type { FinishReason, GenerateChunk, GenerateOptions, GenerationStats } from '../runtime/types.ts';
import { errorDetailsOf, type Call } from './http.ts';
import { replyPiece } from './replies.ts';
import { serverEvents } from './sse.ts';
import { RemoteTiming } from './timing.ts';
import type { WireUsage } from './wire.ts';

export function completionBody(prompt: string | number[], addBos: boolean, options: GenerateOptions, model: string): Record<string, unknown> {
  if (options.experts) throw new RemoteUnsupportedError('experts', 'a remote engine cannot report the experts of each token: OpenAI-compatible servers do not send them');
  const fields: Record<string, unknown> = {
    model,
    prompt,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: options.maxTokens ?? DEFAULT_MAX_TOKENS,
    temperature: options.temperature ?? DEFAULT_SAMPLING.temperature,
    top_p: options.topP ?? DEFAULT_SAMPLING.topP,
    top_k: options.topK,
    seed: options.seed,
    stop: options.stop,
    stop_token_ids: options.stopTokenIds,
    repetition_penalty: options.repetitionPenalty,
    ignore_eos: options.ignoreEos,
    // vLLM's and webmoe serve's /v1/completions take OpenAI's response_format too.
    response_format: options.responseFormat,
    // BOS is the server's default for a text; said only when it is not wanted.
    add_special_tokens: addBos ? undefined : false,
  };
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}

/** The reply so far, for the session that keeps it: ids stay undefined once a piece came without them. */
export interface Transcript {
  text: string;
  ids: number[] | undefined;
}

export async function* completionChunks(response: Response, call: Call, timing: RemoteTiming, transcript: Transcript): AsyncGenerator<GenerateChunk> {
  let finish: { chunk: GenerateChunk; reason: FinishReason } | undefined;
  let usage: WireUsage | undefined;
  let serverStats: GenerationStats | undefined;
  for await (const { event, data } of serverEvents(response, call)) {
    if (event === 'error') throw new RemoteError(call.url, response.status, errorDetailsOf(data)?.message ?? JSON.stringify(data));
    const piece = replyPiece(data, 'text', call, response.status);
    usage = piece.usage ?? usage;
    serverStats = piece.stats ?? serverStats;
    if (piece.empty || finish) continue;
    const ids = piece.ids ?? [];
    if (piece.content || ids.length > 0) timing.mark(piece.content !== '');
    transcript.text += piece.content;
    transcript.ids = piece.ids && transcript.ids ? [...transcript.ids, ...piece.ids] : undefined;
    const chunk: GenerateChunk = { text: piece.content, ids };
    if (piece.finishReason) finish = { chunk, reason: piece.finishReason };
    else yield chunk;
  }
  if (!finish) throw new FetchError(call.url, 'the stream ended before the reply was finished (no finish_reason came)');
  yield { ...finish.chunk, done: { finishReason: finish.reason, stats: timing.stats(usage, serverStats) } };
}
