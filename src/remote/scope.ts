// One remote request's abort: the caller's AbortSignal, closeSession on its session, or unload(),
// whichever comes first, ends its fetch as an AbortError saying which it was.

import { AbortError } from '../errors.ts';
import type { Call } from './http.ts';

export class RequestScope {
  private readonly controller = new AbortController();
  private reason: AbortError | undefined;
  private readonly onCallerAbort = () => this.abort(new AbortError());

  constructor(private readonly callerSignal: AbortSignal | undefined) {
    if (callerSignal?.aborted) this.abort(new AbortError());
    else callerSignal?.addEventListener('abort', this.onCallerAbort, { once: true });
  }

  abort(reason: AbortError): void {
    this.reason ??= reason;
    this.controller.abort();
  }

  get aborted(): boolean {
    return this.controller.signal.aborted;
  }

  /** Throws the AbortError of an abort that happened. */
  throwIfAborted(): void {
    if (this.reason) throw this.reason;
  }

  call(method: Call['method'], url: string, body?: unknown): Call {
    return { method, url, body, signal: this.controller.signal, aborted: () => this.reason ?? new AbortError() };
  }

  /** The request ended: a response still open is cancelled (the server sees its client go). */
  end(): void {
    this.callerSignal?.removeEventListener('abort', this.onCallerAbort);
    this.controller.abort();
  }
}
