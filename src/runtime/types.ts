// The engine's public API types: the same for the engine in this thread (Node, or a page that
// asks for no worker) and for the main-thread client of the engine in a Worker. Everything that
// crosses the worker boundary is plain data (structured-clonable).

import type { ChatMessage } from '../text/chat_template.ts';

/**
 * Load progress. 'files': config.json, the tokenizer and the safetensors headers are being read
 * (no byte counts yet); 'weights': bytes of the checkpoint read and uploaded to the GPU; 'ready'.
 */
export interface EngineProgress {
  phase: 'files' | 'weights' | 'ready';
  bytesDone: number;
  bytesTotal: number;
  /** The file being read. */
  file?: string;
  /** The bytes came from the browser's shard cache (IndexedDB), not the network. */
  fromCache?: boolean;
  /** A network read failed or stalled and is retried after `delayMs` (bytesDone / bytesTotal: the last report's). */
  retrying?: { url: string; attempt: number; maxAttempts: number; reason: string; delayMs: number };
}

export interface EngineLimits {
  /** Positions one session may hold (prompt plus generated tokens). */
  maxContext: number;
  /** Bytes of latent cache all sessions together may hold. */
  cacheBudgetBytes: number;
}

/** A conversation that keeps its latent cache between requests (see Engine.createSession). */
export interface Session {
  readonly id: number;
}

/** Why generation ended. An aborted request rejects with AbortError instead; 'abort' is what clients that catch it (the CLI) report. */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface SamplingOptions {
  /** 0: greedy. Default 0.7. */
  temperature?: number;
  /** 1: off. Default 0.95. */
  topP?: number;
  /** 0: off. Default 0. */
  topK?: number;
  /** u32; default: a random seed per request. */
  seed?: number;
  /** HF convention: a logit of a token already in the prompt or output is divided (positive) or multiplied (negative) by it. 1: off (default). */
  repetitionPenalty?: number;
}

/**
 * Structured output, as OpenAI's response_format: the reply is JSON (json_object), or JSON that
 * follows a JSON Schema (json_schema), by grammar-constrained decoding (runtime/grammar.ts).
 * `strict` is accepted; the schema is always enforced strictly (no properties it does not name).
 */
export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; json_schema: { name?: string; description?: string; schema: Record<string, unknown> | boolean; strict?: boolean | null } };

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most. Default 256. */
  maxTokens?: number;
  /** Stop when one of these strings appears in the output (it is not included). */
  stop?: string | string[];
  /** Stop on these ids too (the config's EOS ids always stop, unless ignoreEos). */
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  /**
   * Speculative decoding with the checkpoint's MTP module: 'auto' (the default) where it is faster
   * on this adapter at the acceptance requests get (EngineStats.speculation), true always, false
   * never. The output is the same either way: greedy tokens identical to plain decoding, sampled
   * ones distributed as plain sampling's (with drafts 'greedy': identical for a seed). Not used
   * with a repetition penalty, nor without an MTP layer.
   */
  speculative?: boolean | 'auto';
  /**
   * How the MTP module drafts when sampling (temperature > 0): 'sampled' (the default) samples the
   * draft from its own distribution q and accepts it with probability min(1, p/q), resampling from
   * max(0, p - q) otherwise (speculative sampling: more drafts accepted); 'greedy' drafts its argmax,
   * accepted iff the main model samples it (fewer accepted, but the tokens for a seed are those of
   * plain decoding). At temperature 0 both are the argmax. Default 'sampled', but 'greedy' for a
   * request with a seed and speculative 'auto', so that its tokens do not depend on whether the
   * engine chose to speculate.
   */
  drafts?: 'sampled' | 'greedy';
  /** Report which experts processed each generated token (GenerateChunk.experts): every generated token that was run through the model, i.e. all but the last; not the prompt. */
  experts?: boolean;
  /** Continue this session: the prompt is appended to what it holds (chat requests instead send the whole conversation, which shares its prefix with the cache). */
  session?: Session;
  /** Add the tokenizer's BOS before a text prompt (default true; ignored for ids and sessions with history). */
  addBos?: boolean;
  /** Constrain the output to JSON, or to a JSON Schema (GrammarError when the schema cannot be compiled). */
  responseFormat?: ResponseFormat;
  signal?: AbortSignal;
}

export interface GenerationStats {
  /** Ids the generation followed: with a session, everything it held plus the new prompt. */
  promptTokens: number;
  /** Prompt tokens actually prefilled (fewer when a session already held a prefix). */
  prefilledTokens: number;
  generatedTokens: number;
  /** From the request to the first generated token. */
  ttftMs: number;
  prefillTokensPerS: number;
  decodeTokensPerS: number;
  totalMs: number;
  /** Speculative decoding: drafts verified and accepted (absent when it was not used). */
  mtp?: { drafted: number; accepted: number };
  /**
   * With a response_format: the grammar's cost. `maskMs / masks` is xgrammar's CPU time per
   * token mask; each mask row uploads `maskBytesPerRow` to the GPU.
   */
  grammar?: { cached: boolean; compileMs: number; masks: number; maskMs: number; maskBytesPerRow: number };
}

/** The experts that processed one token: for each MoE layer (ModelInfo.moeLayers order), num_experts_per_tok ids. */
export interface TokenExperts {
  token: number;
  experts: number[][];
}

/** One piece of a streamed generation; the last one has `done`. */
export interface GenerateChunk {
  /** Text new since the previous chunk (may lag the ids while a character is incomplete). */
  text: string;
  /** Token ids new since the previous chunk. */
  ids: number[];
  /** With GenerateOptions.experts: the tokens run through the model since the previous chunk. */
  experts?: TokenExperts[];
  done?: { finishReason: FinishReason; stats: GenerationStats };
}

export interface LogitsOptions {
  /** 'last' (default) or 'all'. */
  positions?: 'all' | 'last';
  signal?: AbortSignal;
}

export interface EngineStats {
  sessions: number;
  /** Latent cache bytes allocated by all sessions. */
  cacheBytes: number;
  /** Bytes per cached token (all layers). */
  cacheBytesPerToken: number;
  /** Positions cached over all sessions. */
  cachedTokens: number;
  weightBytes: number;
  /**
   * Every GPU buffer the engine holds now, and their bytes: the weights, the sessions' latent
   * caches, their plans' working and uniform buffers.
   */
  gpuBytes: number;
  gpuBuffers: number;
  limits: EngineLimits;
  adapter: string;
  /**
   * What speculative 'auto' goes by (null without an MTP layer, and for a remote engine): the
   * costs of a plain and a verify step on this adapter (measured at load or remembered, then
   * refreshed by every step), the acceptance the requests have shown, and whether an auto request
   * starting now would speculate.
   */
  speculation?: SpeculationStats | null;
  /**
   * A remote engine (createRemoteEngine): the server it talks to and its requests now in flight.
   * Every GPU and cache figure above is then 0 and `sessions` counts the histories kept here: the
   * server's memory is not this client's to count.
   */
  remote?: { baseURL: string; model: string; requestsInFlight: number };
  /** Routed experts in CPU memory with a GPU cache per MoE layer (expertSlots / gpuBudgetMib); null when every expert is resident. */
  offload?: OffloadStats | null;
}

export interface OffloadStats {
  /** gpuBudgetMib in bytes, or null when slots were asked for without a budget. */
  budgetBytes: number | null;
  /** What the model holds on the GPU: every weight but the offloaded experts, and the caches. */
  residentBytes: number;
  /** The routed experts in CPU memory. */
  hostBytes: number;
  expertSlots: number;
  /** Since load: distinct experts a step's layer asked for that were resident / had to be uploaded. */
  expertHits: number;
  expertMisses: number;
  uploadedBytes: number;
  /** Milliseconds steps waited for an offloaded layer's router choices (the GPU work before them included). */
  routeWaitMs: number;
  /** Per offloaded MoE layer, the expert in each slot (-1: empty), for a picture of the caches. */
  layers: { layer: number; slots: number[] }[];
}

export interface SpeculationStats {
  plainStepMs: number;
  verifyStepMs: number;
  acceptance: number;
  verifySteps: number;
  pays: boolean;
  measured: 'at load' | 'remembered';
}

export interface ChatCompletionRequest {
  messages: ChatMessage[];
  stream?: boolean;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string | string[];
  /** JSON output, or JSON following a schema (GenerateOptions.responseFormat). */
  response_format?: ResponseFormat;
  /** webmoe extension: keep the conversation's cache (a new turn prefills only its new tokens). */
  session?: Session;
  signal?: AbortSignal;
  /** webmoe extensions, as in GenerateOptions. */
  top_k?: number;
  repetition_penalty?: number;
  ignore_eos?: boolean;
  speculative?: boolean | 'auto';
  experts?: boolean;
}

/** webmoe extension on chat responses: the ids behind the text, and on the last chunk the stats. */
export interface ChatWebmoeFields {
  ids: number[];
  experts?: TokenExperts[];
  stats?: GenerationStats;
}

export interface ChatCompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  /** `reasoning_content`: a reasoning model's thinking, as a remote server separates it (SGLang `reasoning_content`, vLLM `reasoning`). */
  choices: { index: 0; message: { role: 'assistant'; content: string; reasoning_content?: string }; finish_reason: FinishReason }[];
  usage: ChatCompletionUsage;
  webmoe: ChatWebmoeFields;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: 0; delta: { role?: 'assistant'; content?: string; reasoning_content?: string }; finish_reason: FinishReason | null }[];
  /** On the last chunk. */
  usage?: ChatCompletionUsage;
  /** On content chunks and the last one. */
  webmoe?: ChatWebmoeFields;
}

export interface ModelInfo {
  name: string;
  config: import('../config.ts').DeepseekV3Config;
  parameters: number;
  hasMtp: boolean;
  /** How the Linears the FP8 release quantises are held on the GPU: 'fp8' (released, or quantised at load) or 'bf16'. */
  weights: import('../model/load_weights.ts').WeightMode;
  /** Indices of the MoE layers (the rest are dense). */
  moeLayers: number[];
  /** Latent cache bytes per token (all layers), and what multi-head attention's K and V cache would take. */
  cacheBytesPerToken: { latent: number; mha: number };
  /**
   * Where the engine runs. Absent: on this machine's GPU. createRemoteEngine sets `remote`;
   * createEngine with a `fallback` sets it on either engine, with the reason for its choice.
   */
  backend?: EngineBackend;
}

/** ModelInfo.backend: this machine's GPU, or an OpenAI-compatible server. */
export type EngineBackend =
  | { kind: 'local'; reason?: string }
  | {
      kind: 'remote';
      /** The API's base URL, as given ("http://host:8000/v1"). */
      baseURL: string;
      model: string;
      /** Who serves it, as its /v1/models says (`owned_by`: "webmoe", "vllm", "sglang", ...). */
      server: string;
      reason?: string;
      /** createEngine's fallback: the code of the error that ruled the local engine out ('NO_WEBGPU', 'OUT_OF_MEMORY', 'GPU_LIMIT'). */
      localRefusal?: string;
    };

/** What createEngine returns, in this thread or as the client of a Worker. */
export interface Engine {
  readonly info: ModelInfo;
  generate(prompt: string | number[], options?: GenerateOptions): AsyncIterable<GenerateChunk>;
  readonly chat: {
    readonly completions: {
      create(request: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
      create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
      create(request: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
    };
  };
  tokenize(text: string, options?: { addBos?: boolean }): Promise<number[]>;
  detokenize(ids: number[]): Promise<string>;
  /** Logits of the main model for `ids` from position 0, one row per position asked for. */
  logits(ids: number[], options?: LogitsOptions): Promise<Float32Array[]>;
  createSession(): Promise<Session>;
  /** Frees the session's cache. */
  closeSession(session: Session): Promise<void>;
  stats(): Promise<EngineStats>;
  /** Frees everything (GPU buffers, device, worker). Safe to call twice. */
  unload(): Promise<void>;
}
