// Retries for HTTP reads: a multi-GB load is thousands of Range requests, and one dropped
// connection, 429 or 503 among them must not fail it. Each attempt is watched for stalls (no
// byte for `stallTimeoutMs` aborts it); a failed attempt is retried after an exponential
// backoff (or the server's Retry-After), up to `maxAttempts`. The caller's AbortSignal ends
// everything at once with an AbortError.

import { AbortError, FetchError } from '../errors.ts';

export interface RetryOptions {
  /** Tries per request, the first included (default 6). */
  maxAttempts?: number;
  /** Wait before the first retry, doubled for each next one (default 1000 ms). */
  retryDelayMs?: number;
  /** Longest wait between tries, a server's Retry-After included (default 30 s). */
  maxRetryDelayMs?: number;
  /** An attempt that gets no byte (nor its headers) for this long is aborted and retried (default 30 s; 0 or Infinity: never). */
  stallTimeoutMs?: number;
  /** Told of each retry, e.g. to show "connection lost, retrying" next to the progress bar. */
  onRetry?: (event: RetryEvent) => void;
}

/** One retry about to happen. */
export interface RetryEvent {
  url: string;
  /** The Range asked for, e.g. "bytes=0-1048575"; undefined for a whole-file GET or a HEAD. */
  range?: string;
  /** The attempt that failed (1 for the first), of `maxAttempts`. */
  attempt: number;
  maxAttempts: number;
  /** What went wrong, e.g. "HTTP 503 Service Unavailable" or "no bytes for 30 s". */
  reason: string;
  /** True when the attempt was aborted because it stalled. */
  stalled: boolean;
  /** The wait before the next attempt. */
  delayMs: number;
  /** Bytes of the request received so far (a retry resumes after them). */
  bytesReceived: number;
}

/** A failure worth another attempt: a lost connection, a stall, a 429 or a 5xx. */
export class TransientError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    /** Seconds or an HTTP date from a Retry-After header. */
    readonly retryAfter?: string | null,
    readonly stalled = false,
  ) {
    super(message);
  }
}

/** Statuses that say "try again later": timeout, too many requests, server or gateway trouble. */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

/** What one attempt is doing, for the retry report and the final error. */
export interface AttemptState {
  range?: string;
  /** Bytes received so far across attempts, and how many were wanted (when known). */
  received: number;
  wanted?: number;
}

/**
 * Run `attempt` until it succeeds, throws a non-transient error, or `maxAttempts` are spent
 * (then a FetchError with the URL, the range, the attempts and the bytes received).
 */
export async function withRetries<T>(
  url: string,
  options: RetryOptions,
  signal: AbortSignal | undefined,
  state: AttemptState,
  attempt: (watch: StallWatch) => Promise<T>,
): Promise<T> {
  const maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 6));
  const stallMs = options.stallTimeoutMs ?? 30_000;
  for (let n = 1; ; n++) {
    if (signal?.aborted) throw new AbortError();
    const watch = new StallWatch(stallMs, signal);
    let failure: TransientError;
    try {
      return await attempt(watch);
    } catch (e) {
      if (signal?.aborted) throw new AbortError();
      if (watch.stalled) failure = new TransientError(`no bytes for ${stallMs / 1000} s`, undefined, undefined, true);
      else if (e instanceof TransientError) failure = e;
      else throw e;
    } finally {
      watch.dispose();
    }
    const where = `${state.range ?? 'the whole file'}, ${state.received}${state.wanted === undefined ? '' : ` of ${state.wanted}`} bytes received`;
    if (n >= maxAttempts) {
      throw new FetchError(url, `${failure.message}; gave up after ${n} attempt${n === 1 ? '' : 's'} (${where})`, failure.status);
    }
    const delayMs = retryDelay(n, options, failure.retryAfter);
    options.onRetry?.({ url, range: state.range, attempt: n, maxAttempts, reason: failure.message, stalled: failure.stalled, delayMs, bytesReceived: state.received });
    await sleep(delayMs, signal);
  }
}

/** Exponential backoff from `retryDelayMs`, or the server's Retry-After, capped at `maxRetryDelayMs`. */
export function retryDelay(failedAttempt: number, options: RetryOptions, retryAfter?: string | null): number {
  const cap = options.maxRetryDelayMs ?? 30_000;
  const asked = parseRetryAfter(retryAfter);
  const backoff = (options.retryDelayMs ?? 1000) * 2 ** (failedAttempt - 1);
  return Math.max(0, Math.min(cap, asked ?? backoff));
}

/** Retry-After is either seconds ("120") or an HTTP date. */
function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : at - Date.now();
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortError()); // aborted already (by onRetry, say): no wait
    const done = () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    };
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortError());
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * One attempt's watchdog. `signal` goes to fetch; it fires when the caller aborts or when no
 * progress was reported for `ms`. `race` also ends a pending body read at that moment, for
 * fetch implementations whose bodies do not follow the signal.
 */
export class StallWatch {
  stalled = false;
  private readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly ended: Promise<never>;
  private end!: (reason: Error) => void;
  private readonly onCallerAbort = () => this.stop(new AbortError());

  constructor(
    private readonly ms: number,
    private readonly caller: AbortSignal | undefined,
  ) {
    this.ended = new Promise<never>((_, reject) => (this.end = reject));
    this.ended.catch(() => {}); // only raced; never left unhandled
    caller?.addEventListener('abort', this.onCallerAbort, { once: true });
    this.progress();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Bytes (or headers) arrived: the stall clock starts again. */
  progress(): void {
    clearTimeout(this.timer);
    if (!(this.ms > 0 && this.ms < 2 ** 31)) return; // 0 or Infinity: no stall detection (setTimeout would fire at once)
    this.timer = setTimeout(() => {
      this.stalled = true;
      this.stop(new TransientError(`no bytes for ${this.ms / 1000} s`, undefined, undefined, true));
    }, this.ms);
  }

  /** `p`, unless the attempt stalls or is aborted first. */
  race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.ended]);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.caller?.removeEventListener('abort', this.onCallerAbort);
  }

  private stop(reason: Error): void {
    clearTimeout(this.timer);
    this.end(reason);
    this.controller.abort(reason);
  }
}
