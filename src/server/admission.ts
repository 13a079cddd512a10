// --max-concurrent: generation requests in flight at once. One more waits for a slot, first come
// first served, up to maxWaiting of them; past that it is refused at once (429 with Retry-After).
// A waiting request whose client leaves (or that the server closes) gives up its place. A slot
// freed goes straight to the next in line, so a request that arrives meanwhile cannot overtake.

import { AbortError } from '../errors.ts';
import { HttpError } from './http_error.ts';

export class Admission {
  private running = 0;
  private readonly queue: (() => void)[] = [];

  constructor(
    private readonly maxConcurrent: number,
    private readonly maxWaiting: number,
  ) {}

  get inFlight(): number {
    return this.running;
  }

  /** Resolves with the slot's release once the request may run. */
  async enter(signal: AbortSignal): Promise<() => void> {
    if (this.running < this.maxConcurrent) {
      this.running++;
      return this.releaser();
    }
    if (this.queue.length >= this.maxWaiting) {
      throw new HttpError(429, 'rate_limit_exceeded', `${this.maxConcurrent} requests are being generated and ${this.queue.length} are waiting (the server's --max-concurrent): try again shortly`, { retryAfterS: 1 });
    }
    await new Promise<void>((resolve, reject) => {
      const admit = () => {
        signal.removeEventListener('abort', leave);
        resolve();
      };
      const leave = () => {
        const i = this.queue.indexOf(admit);
        if (i >= 0) this.queue.splice(i, 1);
        reject(new AbortError('The request was stopped while it waited for a slot.'));
      };
      if (signal.aborted) return leave();
      this.queue.push(admit);
      signal.addEventListener('abort', leave, { once: true });
    });
    return this.releaser();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) next(); // the slot passes on: `running` stays
      else this.running--;
    };
  }
}
