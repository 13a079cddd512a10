// UrlSource and urlDir against a local server that misbehaves on cue: it drops connections
// mid-body, stalls, answers 429 / 500 / 503, ignores Range, sends more than asked, or changes
// the file between requests. Every read must end with exactly one version's bytes, or a typed
// error that says what happened.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AbortError, CheckpointError, FetchError } from '../errors.ts';
import type { RetryEvent } from './http_retry.ts';
import { UrlSource, urlDir, type UrlOptions } from './url_source.ts';

type Fault =
  | { kind: 'drop'; after: number } // send `after` bytes of the body, then cut the connection
  | { kind: 'stall'; after: number } // send `after` bytes, then nothing more
  | { kind: 'status'; status: number; retryAfter?: string }
  | { kind: 'whole' } // ignore Range: 200 and the whole file
  | { kind: 'long'; extra: number } // a 206 with `extra` bytes more than asked
  | { kind: 'change'; bytes: Uint8Array; etag?: string } // a new version, from this request on
  | { kind: 'endless' }; // a 200 that never ends

const v1 = new Uint8Array(1000).map((_, i) => (i * 13) & 255);
const v2 = new Uint8Array(1000).map((_, i) => (i * 13 + 1) & 255);
let file: { bytes: Uint8Array; etag?: string };
/** Faults for the next GETs, one each, in order; HEADs are always answered. */
let faults: Fault[];
let log: string[];

function handle(req: IncomingMessage, res: ServerResponse): void {
  log.push(`${req.method} ${req.headers.range ?? ''}`.trim());
  const headers = (body: Uint8Array): Record<string, string> => ({ 'content-type': 'application/octet-stream', ...(file.etag ? { etag: file.etag } : {}), 'content-length': String(body.byteLength) });
  if (req.method === 'HEAD') return void res.writeHead(200, headers(file.bytes)).end();
  let fault = faults.shift();
  if (fault?.kind === 'change') {
    file = { bytes: fault.bytes, etag: fault.etag };
    fault = faults.shift();
  }
  if (fault?.kind === 'status') return void res.writeHead(fault.status, fault.retryAfter ? { 'retry-after': fault.retryAfter } : {}).end('try later');
  if (fault?.kind === 'endless') {
    res.writeHead(200, { 'content-type': 'application/json' });
    const more = () => res.write(new Uint8Array(64 << 10).fill(32), () => !res.destroyed && setImmediate(more));
    return void more();
  }
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  if (!m || fault?.kind === 'whole') return void res.writeHead(200, headers(file.bytes)).end(file.bytes);
  const start = Number(m[1]);
  const end = Math.min(Number(m[2]), file.bytes.byteLength - 1);
  let body = file.bytes.subarray(start, end + 1);
  if (fault?.kind === 'long') body = new Uint8Array(body.byteLength + fault.extra).fill(7);
  res.writeHead(206, { ...headers(body), 'content-range': `bytes ${start}-${end}/${file.bytes.byteLength}` });
  if (fault?.kind === 'drop') return void res.write(body.subarray(0, fault.after), () => setTimeout(() => res.destroy(), 5));
  if (fault?.kind === 'stall') return void res.write(body.subarray(0, fault.after));
  res.end(body);
}

let server: Server;
let url: string;
let base: string;
beforeAll(async () => {
  server = createServer(handle);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  url = `${base}model.safetensors`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
});
beforeEach(() => {
  file = { bytes: v1, etag: '"v1"' };
  faults = [];
  log = [];
});

/** Small delays and stall timeouts, so faults cost milliseconds; `retries` collects the reports. */
function fast(retries: RetryEvent[] = [], extra: UrlOptions = {}): UrlOptions {
  return { maxAttempts: 4, retryDelayMs: 1, maxRetryDelayMs: 50, stallTimeoutMs: 200, onRetry: (e) => retries.push(e), ...extra };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

const expectBytes = (got: Uint8Array, want: Uint8Array) => expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);

describe('transient faults are retried, and a retry resumes after the bytes received', () => {
  it('a connection dropped mid-body', async () => {
    const retries: RetryEvent[] = [];
    faults = [{ kind: 'drop', after: 300 }];
    expectBytes(await new UrlSource(url, undefined, fast(retries)).read(100, 800), v1.subarray(100, 900));
    expect(log).toEqual(['HEAD', 'GET bytes=100-899', 'GET bytes=400-899']);
    expect(retries).toMatchObject([{ url, range: 'bytes=100-899', attempt: 1, maxAttempts: 4, stalled: false, bytesReceived: 300 }]);
  });

  it('a stalled body is aborted after stallTimeoutMs and retried', async () => {
    const retries: RetryEvent[] = [];
    faults = [{ kind: 'stall', after: 10 }];
    const started = Date.now();
    expectBytes(await new UrlSource(url, undefined, fast(retries)).read(0, 1000), v1);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(log).toEqual(['HEAD', 'GET bytes=0-999', 'GET bytes=10-999']);
    expect(retries).toMatchObject([{ stalled: true, reason: 'no bytes for 0.2 s', bytesReceived: 10 }]);
  });

  it('429 (with Retry-After, capped), 500 and 503 answers', async () => {
    const retries: RetryEvent[] = [];
    faults = [{ kind: 'status', status: 429, retryAfter: '3600' }, { kind: 'status', status: 500 }, { kind: 'status', status: 503 }];
    expectBytes(await new UrlSource(url, undefined, fast(retries)).read(0, 10), v1.subarray(0, 10));
    expect(retries.map((r) => [r.reason, r.delayMs])).toEqual([
      ['HTTP 429 Too Many Requests', 50],
      ['HTTP 500 Internal Server Error', 2],
      ['HTTP 503 Service Unavailable', 4],
    ]);
  });

  it('text files are retried too', async () => {
    faults = [{ kind: 'status', status: 503 }, { kind: 'drop', after: 0 }];
    file = { bytes: new TextEncoder().encode('{"a": 1}') };
    expect(await urlDir(base, fast()).readText('config.json')).toBe('{"a": 1}');
  });
});

describe('giving up and aborting are typed', () => {
  it('after maxAttempts: a FetchError with the URL, the range, the attempts and the bytes received', async () => {
    faults = [{ kind: 'drop', after: 20 }, { kind: 'drop', after: 20 }, { kind: 'drop', after: 20 }, { kind: 'status', status: 503 }];
    const e = await rejection(new UrlSource(url, undefined, fast()).read(0, 1000));
    expect(e).toBeInstanceOf(FetchError);
    expect((e as FetchError).status).toBe(503);
    expect(e.message).toBe(`${url}: HTTP 503 Service Unavailable; gave up after 4 attempts (bytes=0-999, 60 of 1000 bytes received)`);
  });

  it('a refusal that retrying cannot fix (403) is not retried', async () => {
    faults = [{ kind: 'status', status: 403 }];
    const e = await rejection(new UrlSource(url, undefined, fast()).read(0, 10));
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(/HTTP 403 .*gated/);
    expect(log).toEqual(['HEAD', 'GET bytes=0-9']);
  });

  it('abort during a backoff wait ends at once with an AbortError', async () => {
    faults = [{ kind: 'status', status: 503 }];
    const controller = new AbortController();
    const pending = new UrlSource(url, undefined, fast([], { retryDelayMs: 60_000, maxRetryDelayMs: 60_000 })).read(0, 10, controller.signal);
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    expect(await rejection(pending)).toBeInstanceOf(AbortError);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('abort during a stalled body ends at once with an AbortError', async () => {
    faults = [{ kind: 'stall', after: 10 }];
    const controller = new AbortController();
    const pending = new UrlSource(url, undefined, fast([], { stallTimeoutMs: 60_000 })).read(0, 1000, controller.signal);
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    expect(await rejection(pending)).toBeInstanceOf(AbortError);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe('a file that changes on the server is refused, never mixed', () => {
  it('a new ETag after the HEAD', async () => {
    faults = [{ kind: 'change', bytes: v2, etag: '"v2"' }];
    const e = await rejection(new UrlSource(url, undefined, fast()).read(0, 10));
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toBe(`${url}: the file changed on the server during the load (ETag "v1" at first, now "v2"): load the model again to read the new version`);
  });

  it('a new version between a dropped attempt and its retry', async () => {
    faults = [{ kind: 'drop', after: 500 }, { kind: 'change', bytes: v2, etag: '"v2"' }];
    const e = await rejection(new UrlSource(url, undefined, fast()).read(0, 1000));
    expect(e.message).toMatch(/the file changed on the server during the load/);
  });

  it('a new size, when the server sends no ETag', async () => {
    file = { bytes: v1 };
    faults = [{ kind: 'change', bytes: v1.subarray(0, 900) }];
    const e = await rejection(new UrlSource(url, undefined, fast()).read(0, 10));
    expect(e.message).toMatch(/changed on the server during the load \(1000 bytes at first, now 900\)/);
  });

  it('a whole-file answer (Range ignored) of another version', async () => {
    faults = [{ kind: 'whole' }];
    const src = new UrlSource(url, undefined, fast());
    expectBytes(await src.read(0, 10), v1.subarray(0, 10)); // same version: the body is kept
    const other = new UrlSource(url, undefined, fast());
    await other.info();
    faults = [{ kind: 'change', bytes: v2, etag: '"v2"' }, { kind: 'whole' }];
    expect((await rejection(other.read(0, 10))).message).toMatch(/changed on the server/);
  });
});

describe('bodies are bounded', () => {
  it('a 206 longer than asked is refused', async () => {
    faults = [{ kind: 'long', extra: 1 << 20 }];
    const e = await rejection(new UrlSource(url, undefined, fast()).read(0, 10));
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(/asked for 10 bytes at 0, the server sent more/);
  });

  it('a text file over maxBytes is a CheckpointError naming the URL (declared length)', async () => {
    file = { bytes: new Uint8Array(5000).fill(32) };
    const e = await rejection(urlDir(base, fast()).readText('config.json', undefined, 1000));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`config.json is over 1000 bytes (it has 5000) in ${base}config.json`);
  });

  it('an endless text body is refused at the cap, within 5 s', async () => {
    faults = [{ kind: 'endless' }];
    const started = Date.now();
    const e = await rejection(urlDir(base, fast()).readText('config.json', undefined, 1 << 20));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`config.json is over ${1 << 20} bytes in ${base}config.json`);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('with no maxBytes, the file\'s default cap applies', async () => {
    faults = [{ kind: 'endless' }];
    const e = await rejection(urlDir(base, fast()).readText('config.json'));
    expect(e.message).toContain(`config.json is over ${1 << 20} bytes`);
  });
});
