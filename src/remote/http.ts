// The remote engine's HTTP: fetch with the API key, typed failures, and retries of what is safe to
// repeat. A request that never got an answer (connection refused or reset: fetch rejects before
// any byte of a response) is retried with backoff; a 429 or 503 that says when to come back
// (Retry-After, within MAX_RETRY_AFTER_MS) is retried then. Nothing else is: a reply that started
// is never replayed. Attempts are bounded (maxRetries). The caller's AbortSignal ends the fetch,
// a wait between attempts, or a read, always as AbortError.

import { AbortError, FetchError, RemoteError } from '../errors.ts';

export const DEFAULT_MAX_RETRIES = 2;
/** A Retry-After longer than this is not waited for: the error goes to the caller. */
export const MAX_RETRY_AFTER_MS = 30_000;
/** Backoff before the first retry of a failed connection; doubled each time. */
export const FIRST_BACKOFF_MS = 250;
/** Largest JSON reply or error body read. */
export const MAX_REPLY_BYTES = 16 * 2 ** 20;

export interface HttpClient {
  fetch: typeof fetch;
  apiKey: string | undefined;
  maxRetries: number;
}

export interface Call {
  method: 'GET' | 'POST';
  url: string;
  body?: unknown;
  signal: AbortSignal;
  /** The AbortError to throw when `signal` fires (its message says who aborted). */
  aborted: () => AbortError;
}

/** The response of a call that succeeded (2xx), after the retries it needed. */
export async function send(client: HttpClient, call: Call): Promise<Response> {
  const headers: Record<string, string> = { Accept: call.body === undefined ? 'application/json' : 'application/json, text/event-stream' };
  if (call.body !== undefined) headers['Content-Type'] = 'application/json';
  if (client.apiKey !== undefined) headers.Authorization = `Bearer ${client.apiKey}`;
  const init: RequestInit = { method: call.method, headers, body: call.body === undefined ? undefined : JSON.stringify(call.body), signal: call.signal };
  for (let attempt = 0; ; attempt++) {
    const canRetry = attempt < client.maxRetries;
    let response: Response;
    try {
      response = await client.fetch(call.url, init);
    } catch (cause) {
      if (call.signal.aborted) throw call.aborted();
      if (!canRetry) throw new FetchError(call.url, `no answer after ${attempt + 1} attempt${attempt ? 's' : ''} (${describeCause(cause)}): is the server running, and is the URL right?`, undefined, { cause });
      await sleep(FIRST_BACKOFF_MS * 2 ** attempt, call);
      continue;
    }
    if (response.ok) return response;
    const retryAfterMs = retryAfter(response.headers.get('retry-after'));
    if (canRetry && (response.status === 429 || response.status === 503) && retryAfterMs !== undefined && retryAfterMs <= MAX_RETRY_AFTER_MS) {
      await response.body?.cancel().catch(() => {});
      await sleep(retryAfterMs, call);
      continue;
    }
    throw await errorOf(response, call, retryAfterMs);
  }
}

/** The JSON of a successful reply, read within MAX_REPLY_BYTES. */
export async function readJson(response: Response, call: Call): Promise<unknown> {
  const text = await readText(response, call);
  try {
    return JSON.parse(text);
  } catch {
    throw new RemoteError(call.url, response.status, `the reply is not JSON: ${JSON.stringify(text.slice(0, 120))}`);
  }
}

/** A read of the body that fails: AbortError when aborted, else FetchError (the connection broke mid-reply). */
export function readFailure(cause: unknown, call: Call): Error {
  if (call.signal.aborted) return call.aborted();
  if (cause instanceof RemoteError || cause instanceof FetchError) return cause;
  return new FetchError(call.url, `the connection was lost while reading the reply (${describeCause(cause)})`, undefined, { cause });
}

async function readText(response: Response, call: Call): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const parts: Uint8Array[] = [];
  let bytes = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes += value.length;
      if (bytes > MAX_REPLY_BYTES) throw new RemoteError(call.url, response.status, `the reply is over ${MAX_REPLY_BYTES} bytes`);
      parts.push(value);
    }
  } catch (err) {
    void reader.cancel().catch(() => {});
    throw readFailure(err, call);
  }
  const all = new Uint8Array(bytes);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new TextDecoder().decode(all);
}

/**
 * The server's error: OpenAI's `{error: {message, type, param}}`, the older vLLM / SGLang
 * `{object: "error", message, type}`, FastAPI's `{detail}`, or the text itself.
 */
async function errorOf(response: Response, call: Call, retryAfterMs: number | undefined): Promise<RemoteError> {
  let text = '';
  try {
    text = await readText(response, call);
  } catch (err) {
    if (err instanceof AbortError) throw err;
  }
  const details = errorDetails(text);
  return new RemoteError(call.url, response.status, details.message || response.statusText || 'no message', { ...details, retryAfterMs });
}

/** The message, type and param of an error body (JSON text, or plain text). */
export function errorDetails(text: string): { message: string; errorType?: string; param?: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { message: text.trim().slice(0, 500) };
  }
  return errorDetailsOf(body) ?? { message: text.trim().slice(0, 500) };
}

/** The same, from a parsed value; undefined when it is no error body. */
export function errorDetailsOf(body: unknown): { message: string; errorType?: string; param?: string } | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as Record<string, unknown>;
  const inner = typeof b.error === 'object' && b.error !== null ? (b.error as Record<string, unknown>) : b.object === 'error' ? b : undefined;
  if (inner) {
    const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
    return { message: str(inner.message) ?? JSON.stringify(inner), errorType: str(inner.type), param: str(inner.param) };
  }
  if (typeof b.error === 'string') return { message: b.error };
  if (typeof b.detail === 'string') return { message: b.detail };
  return undefined;
}

/** Retry-After as milliseconds: delay-seconds or an HTTP date. */
export function retryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function sleep(ms: number, call: Call): Promise<void> {
  return new Promise((resolve, reject) => {
    if (call.signal.aborted) return reject(call.aborted());
    const onAbort = () => {
      clearTimeout(timer);
      reject(call.aborted());
    };
    const timer = setTimeout(() => {
      call.signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    call.signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Node's fetch hides the reason (ECONNREFUSED, ECONNRESET) in `cause`; browsers give none. */
function describeCause(cause: unknown): string {
  const inner = (cause as { cause?: { code?: string; message?: string } })?.cause;
  if (inner?.code) return inner.code;
  if (inner?.message) return inner.message;
  return cause instanceof Error ? cause.message : String(cause);
}
