// Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk, `data: [DONE]\n\n` at the
// end. Writes wait for the socket to drain, so a slow reader slows its own generation instead of
// piling text up in memory; a reader that left ends the wait (the request is aborted elsewhere).

import type { ServerResponse } from 'node:http';
import type { WireErrorBody } from '../remote/wire.ts';

export class EventStream {
  constructor(private readonly res: ServerResponse) {}

  /** The 200 and the event-stream headers (CORS headers were set on the response before). */
  start(): void {
    this.res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      // nginx and similar proxies would otherwise buffer the stream.
      'X-Accel-Buffering': 'no',
    });
    this.res.flushHeaders();
  }

  get started(): boolean {
    return this.res.headersSent;
  }

  async send(data: unknown): Promise<void> {
    if (this.res.destroyed || this.res.writableEnded) return;
    if (!this.res.write(`data: ${JSON.stringify(data)}\n\n`)) await drained(this.res);
  }

  end(): void {
    if (!this.res.destroyed && !this.res.writableEnded) this.res.end('data: [DONE]\n\n');
  }

  /** A failure after the 200 went out: an event holding OpenAI's error body (the openai client throws it as an APIError), then the end, as vLLM does. */
  fail(body: WireErrorBody): void {
    if (this.res.destroyed || this.res.writableEnded) return;
    this.res.write(`data: ${JSON.stringify(body)}\n\n`);
    this.end();
  }
}

/** Resolves when the response can take more, or is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Pulls chunks from `source` and holds them until one is `ready` (or the source ends): until the
 * first token, a failure (a prompt too long, a busy engine) can still be answered with its HTTP
 * status rather than inside a 200 stream. The result replays the held chunks, then the rest;
 * leaving it early returns the source (the engine frees the request's session).
 */
export async function heldUntil<T>(source: AsyncIterable<T>, ready: (chunk: T) => boolean): Promise<AsyncGenerator<T>> {
  const it = source[Symbol.asyncIterator]();
  const held: T[] = [];
  let ended = false;
  for (;;) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    held.push(r.value);
    if (ready(r.value)) break;
  }
  return (async function* replay() {
    let finished = ended;
    try {
      yield* held;
      while (!finished) {
        const r = await it.next();
        if (r.done) finished = true;
        else yield r.value;
      }
    } finally {
      if (!finished) await it.return?.();
    }
  })();
}
