// GenerationStats of a remote request. webmoe serve sends its engine's own (exact, the network
// excluded); for vLLM and SGLang they are made here from the usage the server counted and the
// clock of this client: time to the first token, prefill and decode rates as the client saw them
// (the network included). Without usage (a server that ignores stream_options) the token counts
// are the pieces streamed, one token each as vLLM and SGLang stream them.

import type { GenerationStats } from '../runtime/types.ts';
import type { WireUsage } from './wire.ts';

export class RemoteTiming {
  private readonly started = performance.now();
  private firstAt: number | undefined;
  /** Streamed pieces that carried text. */
  pieces = 0;

  /** A piece of the reply arrived. */
  mark(hasText: boolean): void {
    this.firstAt ??= performance.now();
    if (hasText) this.pieces++;
  }

  stats(usage: WireUsage | undefined, fromServer: GenerationStats | undefined): GenerationStats {
    if (fromServer) return fromServer;
    const now = performance.now();
    const totalMs = now - this.started;
    const ttftMs = (this.firstAt ?? now) - this.started;
    const promptTokens = usage?.prompt_tokens ?? 0;
    const prefilledTokens = Math.max(0, promptTokens - (usage?.prompt_tokens_details?.cached_tokens ?? 0));
    const generatedTokens = usage?.completion_tokens ?? this.pieces;
    const decodeMs = totalMs - ttftMs;
    return {
      promptTokens,
      prefilledTokens,
      generatedTokens,
      ttftMs,
      prefillTokensPerS: ttftMs > 0 ? prefilledTokens / (ttftMs / 1000) : 0,
      decodeTokensPerS: decodeMs > 0 && generatedTokens > 1 ? (generatedTokens - 1) / (decodeMs / 1000) : 0,
      totalMs,
    };
  }
}
