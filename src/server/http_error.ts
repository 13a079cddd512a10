// Every failure the server answers, as OpenAI's error body with the status a client expects:
// 400 a bad body or field, 401 a wrong API key, 404 an unknown route or model, 405 a wrong method,
// 413 a body over the limit, 429 over --max-concurrent, 503 the engine busy or going away, 500 a
// fault. The engine's typed errors map here in one place (httpErrorOf).

import {
  AbortError,
  ArgumentError,
  DeviceLostError,
  EngineBusyError,
  GpuOutOfMemoryError,
  GrammarError,
  PromptTooLongError,
  TokenizerError,
  WebmoeError,
} from '../errors.ts';
import type { WireErrorBody } from '../remote/wire.ts';

/** OpenAI's error types, as the server uses them. */
export type OpenAIErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error';

export class HttpError extends Error {
  readonly status: number;
  readonly type: OpenAIErrorType;
  /** A stable word for programs ('invalid_value', 'model_not_found', 'engine_busy', ...). */
  readonly errorCode: string;
  /** The request field at fault, as OpenAI's `param`. */
  readonly param: string | undefined;
  /** Seconds for a Retry-After header (429, 503). */
  readonly retryAfterS: number | undefined;
  constructor(status: number, errorCode: string, message: string, options: { param?: string; retryAfterS?: number; type?: OpenAIErrorType } = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.errorCode = errorCode;
    this.param = options.param;
    this.retryAfterS = options.retryAfterS;
    this.type = options.type ?? (status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error');
  }

  body(): WireErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param ?? null, code: this.errorCode } };
  }
}

/** A 400 about one field of the body. */
export function badField(param: string, message: string, errorCode = 'invalid_value'): HttpError {
  return new HttpError(400, errorCode, message, { param });
}

/**
 * The HTTP answer to an error thrown while serving a request. A WebmoeError keeps its message
 * (each says what to do); anything else is a fault of the server, answered without its detail
 * (`internal` says so; the caller logs the error itself).
 */
export function httpErrorOf(err: unknown): { error: HttpError; internal: boolean } {
  if (err instanceof HttpError) return { error: err, internal: false };
  const known = (status: number, code: string, options?: { retryAfterS?: number }) => ({ error: new HttpError(status, code, (err as Error).message, options), internal: false });
  if (err instanceof PromptTooLongError) return known(400, 'context_length_exceeded');
  if (err instanceof ArgumentError) return known(400, 'invalid_value');
  if (err instanceof TokenizerError) return known(400, 'tokenizer_error');
  // A schema the grammar library refuses: the request's fault, as OpenAI answers an invalid schema.
  if (err instanceof GrammarError) return { error: new HttpError(400, 'invalid_json_schema', err.message, { param: 'response_format' }), internal: false };
  if (err instanceof EngineBusyError) return known(503, 'engine_busy', { retryAfterS: 1 });
  if (err instanceof GpuOutOfMemoryError) return known(503, 'out_of_memory', { retryAfterS: 1 });
  if (err instanceof DeviceLostError) return known(503, 'device_lost');
  // The engine unloading under a request: the server is shutting down.
  if (err instanceof AbortError) return known(503, 'shutting_down');
  if (err instanceof WebmoeError) return known(500, err.code.toLowerCase());
  return { error: new HttpError(500, 'internal_error', 'internal error in webmoe serve (the server logged it)'), internal: true };
}
