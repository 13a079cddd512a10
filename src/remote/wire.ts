// OpenAI's HTTP API as it travels: the JSON `webmoe serve` writes (src/server) and a remote engine
// reads (src/remote). Field names are the API's own (snake_case). A remote engine treats what it
// reads as untrusted: these types say what a well-behaved server sends, and remote/ checks it.
// The `webmoe` fields are this project's extension; OpenAI clients ignore them, and vLLM and
// SGLang never send them.

import type { ChatWebmoeFields, GenerationStats, ModelInfo } from '../runtime/types.ts';

export interface WireUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** vLLM with prefix caching: prompt tokens the server found cached. */
  prompt_tokens_details?: { cached_tokens?: number | null } | null;
}

/** finish_reason as servers send it: OpenAI's, and SGLang's 'abort' for a request the server dropped. */
export type WireFinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'abort' | null;

export interface WireChatDelta {
  role?: 'assistant';
  content?: string | null;
  /** SGLang (and vLLM before 0.11): a reasoning model's thinking, with a reasoning parser on. */
  reasoning_content?: string | null;
  /** vLLM 0.11 and later. */
  reasoning?: string | null;
}

export interface WireChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  /** Empty on the usage chunk that ends a stream asked for with stream_options.include_usage. */
  choices: { index: number; delta: WireChatDelta; logprobs: null; finish_reason: WireFinishReason }[];
  usage?: WireUsage | null;
  webmoe?: ChatWebmoeFields;
}

export interface WireChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: { role: 'assistant' } & WireChatDelta; logprobs: null; finish_reason: WireFinishReason }[];
  usage: WireUsage;
  webmoe?: ChatWebmoeFields;
}

/** The webmoe extension on completions: the ids behind the text, and on the last piece the stats. */
export interface CompletionWebmoeFields {
  ids: number[];
  stats?: GenerationStats;
}

export interface WireCompletionChoice {
  index: number;
  text: string;
  logprobs: null;
  finish_reason: WireFinishReason;
}

export interface WireCompletionChunk {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: WireCompletionChoice[];
  usage?: WireUsage | null;
  webmoe?: CompletionWebmoeFields;
}

export type WireCompletion = WireCompletionChunk & { usage: WireUsage };

/** One entry of GET /v1/models. */
export interface WireModel {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  /** vLLM's and webmoe's: positions one request may use. */
  max_model_len?: number;
  /** webmoe serve: the model as the engine loaded it (ModelInfo without `backend`). */
  webmoe?: { info: Omit<ModelInfo, 'backend'> };
}

export interface WireModelList {
  object: 'list';
  data: WireModel[];
}

/** OpenAI's error body (vLLM and SGLang before 2025 sent the inner object alone, with object: 'error'). */
export interface WireErrorBody {
  error: { message: string; type: string; param: string | null; code: string | number | null };
}

/** POST /tokenize and /detokenize, as vLLM serves them (beside /v1, not under it). */
export interface WireTokenizeRequest {
  model?: string;
  prompt: string;
  add_special_tokens?: boolean;
}
export interface WireTokenizeResponse {
  tokens: number[];
  count: number;
  max_model_len: number;
}
export interface WireDetokenizeRequest {
  model?: string;
  tokens: number[];
}
export interface WireDetokenizeResponse {
  prompt: string;
}
