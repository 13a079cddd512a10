// Every failure a user can cause ends in one of these. Each message says what went wrong,
// where (file, key, tensor), and what to do about it. `code` is stable for programs to test.

export type WebmoeErrorCode =
  | 'NO_WEBGPU'
  | 'DEVICE_LOST'
  | 'OUT_OF_MEMORY'
  | 'GPU_LIMIT'
  | 'NON_FINITE'
  | 'BUSY'
  | 'BAD_CONFIG'
  | 'UNSUPPORTED_CONFIG'
  | 'BAD_CHECKPOINT'
  | 'MISSING_FILE'
  | 'FETCH_FAILED'
  | 'BAD_TOKENIZER'
  | 'PROMPT_TOO_LONG'
  | 'ABORTED'
  | 'BAD_ARGUMENT'
  | 'REMOTE_FAILED'
  | 'REMOTE_UNSUPPORTED'
  | 'BAD_GRAMMAR';

export class WebmoeError extends Error {
  readonly code: WebmoeErrorCode;
  constructor(code: WebmoeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** navigator.gpu is absent or no adapter could be had. */
export class NoWebGPUError extends WebmoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NO_WEBGPU', message, options);
  }
}

/** The GPUDevice was lost (driver reset, tab backgrounded too long, destroy()). */
export class DeviceLostError extends WebmoeError {
  readonly reason: string;
  constructor(reason: string, detail: string) {
    super('DEVICE_LOST', `The GPU device was lost (${reason}${detail ? `: ${detail}` : ''}). Reload the model to continue.`);
    this.reason = reason;
  }
}

/** A GPU allocation failed. */
export class GpuOutOfMemoryError extends WebmoeError {
  constructor(message: string) {
    super('OUT_OF_MEMORY', message);
  }
}

/** The adapter cannot give a limit or feature the engine needs. */
export class GpuLimitError extends WebmoeError {
  constructor(message: string) {
    super('GPU_LIMIT', message);
  }
}

/**
 * The model computed NaN or infinite logits (a broken weight or scale, an extreme config value, a
 * GPU fault): no token would be right, so the step ends here instead of emitting token 0 forever.
 */
export class NonFiniteError extends WebmoeError {
  constructor(message: string) {
    super('NON_FINITE', message);
  }
}

/** The engine has more requests waiting for cache memory than it queues: try again later. */
export class EngineBusyError extends WebmoeError {
  constructor(message: string) {
    super('BUSY', message);
  }
}

/** config.json is not valid JSON or a key has the wrong type or value. `key` names it. */
export class ConfigError extends WebmoeError {
  readonly key: string | undefined;
  constructor(message: string, key?: string) {
    super('BAD_CONFIG', message);
    this.key = key;
  }
}

/** config.json is valid but asks for something the engine does not run. `key` names it. */
export class UnsupportedConfigError extends WebmoeError {
  readonly key: string;
  constructor(key: string, message: string) {
    super('UNSUPPORTED_CONFIG', `config.json: ${key}: ${message}`);
    this.key = key;
  }
}

/** A safetensors file, its index, or the set of tensors is malformed. `file` names it. */
export class CheckpointError extends WebmoeError {
  readonly file: string | undefined;
  constructor(message: string, file?: string) {
    super('BAD_CHECKPOINT', file ? `${file}: ${message}` : message);
    this.file = file;
  }
}

/** A file the checkpoint needs is not there. */
export class MissingFileError extends WebmoeError {
  readonly file: string;
  constructor(file: string, where: string) {
    super('MISSING_FILE', `${file} not found in ${where}`);
    this.file = file;
  }
}

/** An HTTP request failed or the server cannot serve byte ranges. */
export class FetchError extends WebmoeError {
  readonly url: string;
  readonly status: number | undefined;
  constructor(url: string, message: string, status?: number, options?: { cause?: unknown }) {
    super('FETCH_FAILED', `${url}: ${message}`, options);
    this.url = url;
    this.status = status;
  }
}

/** tokenizer.json or tokenizer_config.json cannot be used. */
export class TokenizerError extends WebmoeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BAD_TOKENIZER', message, options);
  }
}

/** The prompt plus the requested tokens do not fit the context or the cache budget. */
export class PromptTooLongError extends WebmoeError {
  constructor(message: string) {
    super('PROMPT_TOO_LONG', message);
  }
}

/** The caller's AbortSignal fired. */
export class AbortError extends WebmoeError {
  constructor(message = 'The request was aborted.') {
    super('ABORTED', message);
  }
}

/** An argument to the public API or the CLI is invalid. */
export class ArgumentError extends WebmoeError {
  constructor(message: string) {
    super('BAD_ARGUMENT', message);
  }
}

/**
 * An OpenAI-compatible server (webmoe serve, vLLM, SGLang) answered a remote engine with an error
 * status, an error event in its stream, or a reply that is not the API's shape. `status` is the
 * HTTP status (200 for a bad reply inside a stream that had started), `serverMessage` the server's
 * own words, `errorType` and `param` its error body's fields when it sent them.
 */
export class RemoteError extends WebmoeError {
  readonly url: string;
  readonly status: number;
  readonly serverMessage: string;
  readonly errorType: string | undefined;
  readonly param: string | undefined;
  /** The server's Retry-After, when it sent one. */
  readonly retryAfterMs: number | undefined;
  constructor(url: string, status: number, serverMessage: string, details: { errorType?: string; param?: string; retryAfterMs?: number } = {}) {
    super('REMOTE_FAILED', `${url}: HTTP ${status}: ${serverMessage}`);
    this.url = url;
    this.status = status;
    this.serverMessage = serverMessage;
    this.errorType = details.errorType;
    this.param = details.param;
    this.retryAfterMs = details.retryAfterMs;
  }
}

/** What a remote engine cannot do over the OpenAI HTTP API (logits, the experts of each token, ...). `feature` names it. */
export class RemoteUnsupportedError extends WebmoeError {
  readonly feature: string;
  constructor(feature: string, message: string) {
    super('REMOTE_UNSUPPORTED', message);
    this.feature = feature;
  }
}

/**
 * A request's response_format cannot be used for constrained decoding: its JSON Schema is not
 * valid JSON, or is outside what the grammar library (xgrammar) compiles. `reason` is the
 * library's own words where it gave them.
 */
export class GrammarError extends WebmoeError {
  readonly reason: string | undefined;
  constructor(message: string, options?: { reason?: string; cause?: unknown }) {
    super('BAD_GRAMMAR', message, options);
    this.reason = options?.reason;
  }
}

/** Throw `AbortError` if the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError();
}
