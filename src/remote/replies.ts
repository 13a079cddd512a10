// What a remote engine takes from a server's JSON, checked: a server is not trusted to send the
// API's shape. Differences between servers are settled here: reasoning text as SGLang's
// `reasoning_content` or vLLM's `reasoning`; usage on the finish chunk or in a chunk of its own;
// SGLang's finish_reason 'abort' (the server dropped the request); the webmoe extension (ids and
// the engine's stats) only from webmoe serve.

import { RemoteError } from '../errors.ts';
import type { FinishReason, GenerationStats } from '../runtime/types.ts';
import { errorDetailsOf, type Call } from './http.ts';
import type { WireUsage } from './wire.ts';

/** One choice of a reply or chunk, and what came with it. */
export interface ReplyPiece {
  /** Chat: delta.content or message.content; completions: text. */
  content: string;
  reasoning: string;
  role: boolean;
  finishReason: FinishReason | null;
  usage: WireUsage | undefined;
  /** webmoe serve's extension. */
  ids: number[] | undefined;
  stats: GenerationStats | undefined;
  /** A chunk without choices (the usage chunk). */
  empty: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const text = (v: unknown) => (typeof v === 'string' ? v : '');

/** `kind`: where the text is (chat `delta` in a stream, chat `message` whole, completions `text`). */
export function replyPiece(value: unknown, kind: 'delta' | 'message' | 'text', call: Call, status: number): ReplyPiece {
  const broken = (what: string) => new RemoteError(call.url, status, `the server's reply is not OpenAI's shape: ${what}`);
  if (!isObject(value)) throw broken('not an object');
  const error = errorDetailsOf(value);
  if (error && ('error' in value || value.object === 'error')) {
    const code = isObject(value.error) ? value.error.code : value.code;
    throw new RemoteError(call.url, typeof code === 'number' && code >= 400 ? code : status, error.message, error);
  }
  if (!Array.isArray(value.choices)) throw broken('no choices');
  const usage = usageOf(value.usage);
  const webmoe = isObject(value.webmoe) ? value.webmoe : undefined;
  const ids = webmoe && Array.isArray(webmoe.ids) && webmoe.ids.every(Number.isInteger) ? (webmoe.ids as number[]) : undefined;
  const stats = webmoe && isObject(webmoe.stats) ? (webmoe.stats as unknown as GenerationStats) : undefined;
  const base = { usage, ids, stats };
  const choice = value.choices[0];
  if (choice === undefined) return { ...base, content: '', reasoning: '', role: false, finishReason: null, empty: true };
  if (!isObject(choice)) throw broken('a choice is not an object');
  let content: string;
  let reasoning = '';
  let role = false;
  if (kind === 'text') {
    content = text(choice.text);
  } else {
    const part = choice[kind];
    if (!isObject(part)) throw broken(`a choice has no ${kind}`);
    content = text(part.content);
    reasoning = text(part.reasoning_content) || text(part.reasoning);
    role = part.role === 'assistant';
  }
  return { ...base, content, reasoning, role, finishReason: finishReasonOf(choice.finish_reason, call, status), empty: false };
}

function finishReasonOf(value: unknown, call: Call, status: number): FinishReason | null {
  if (value === null || value === undefined) return null;
  if (value === 'length') return 'length';
  if (value === 'abort') throw new RemoteError(call.url, status, 'the server aborted the request (finish_reason "abort")');
  // 'stop', and what a server without tools or filters should not send ('tool_calls', 'content_filter'): the reply ended.
  return 'stop';
}

function usageOf(value: unknown): WireUsage | undefined {
  if (!isObject(value)) return undefined;
  const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
  const details = isObject(value.prompt_tokens_details) ? value.prompt_tokens_details : undefined;
  return {
    prompt_tokens: n(value.prompt_tokens),
    completion_tokens: n(value.completion_tokens),
    total_tokens: n(value.total_tokens),
    prompt_tokens_details: details ? { cached_tokens: n(details.cached_tokens) } : undefined,
  };
}
