import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, CheckpointError, FetchError, MissingFileError } from '../errors.ts';
import { readSafetensorsHeader } from './safetensors.ts';
import { writeSafetensors } from './safetensors_write.ts';
import { UrlSource, urlDir } from './url_source.ts';

// A local server with a few behaviours, chosen by the first path segment:
//   /r/    HEAD and Range requests, ETag          /n/    ignores Range: always 200 and the whole file
//   /h/    HEAD refused (405), Range supported    /spa/  every path answers index.html with 200
//   /slow/ sends headers, then stalls            /err/  500
const model = writeSafetensors({
  'a.weight': { dtype: 'F32', shape: [4, 5], data: new Float32Array(20).map((_, i) => i - 7.5) },
  'b.weight': { dtype: 'F8_E4M3', shape: [3, 3], data: new Uint8Array(9).map((_, i) => 0x30 + i) },
});
const big = new Uint8Array(5000).map((_, i) => (i * 7) & 255);
const files: Record<string, Uint8Array> = {
  'model.safetensors': model,
  'big.bin': big,
  'config.json': new TextEncoder().encode('{"hidden_size": 128}'),
  'with space.bin': new Uint8Array([9, 8, 7]),
};
const log: string[] = [];

function handle(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url!, 'http://x');
  const [, mode, ...rest] = url.pathname.split('/');
  const name = decodeURIComponent(rest.join('/'));
  log.push(`${req.method} ${url.pathname} ${req.headers.range ?? ''}`.trim());
  if (mode === 'err') return void res.writeHead(500, 'Internal Server Error').end();
  if (mode === 'spa') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>app</title>');
  const body = files[name];
  if (!body) return void res.writeHead(404, 'Not Found').end('no such file');
  if (mode === 'slow') return void res.writeHead(200, { 'content-length': body.byteLength }).write(body.subarray(0, 1));
  const headers = { 'content-type': 'application/octet-stream', etag: `"${name}-v1"`, 'accept-ranges': 'bytes' };
  if (req.method === 'HEAD') {
    if (mode === 'h') return void res.writeHead(405).end();
    return void res.writeHead(200, { ...headers, 'content-length': body.byteLength }).end();
  }
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  if (!m || mode === 'n') return void res.writeHead(200, { ...headers, 'content-length': body.byteLength }).end(body);
  const start = Number(m[1]);
  const end = Math.min(Number(m[2]), body.byteLength - 1);
  if (start >= body.byteLength) return void res.writeHead(416, { 'content-range': `bytes */${body.byteLength}` }).end();
  res.writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${body.byteLength}` });
  res.end(body.subarray(start, end + 1));
}

let server: Server;
let base: string;
beforeAll(async () => {
  server = createServer(handle);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
});

/** Retries that take milliseconds, not the default seconds. */
const FAST_RETRIES = { maxAttempts: 2, retryDelayMs: 1 };

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

describe('urlDir and UrlSource against a server with Range support', () => {
  it('reads byte ranges exactly, the size from HEAD', async () => {
    const dir = urlDir(`${base}/r`);
    const src = (await dir.open('big.bin')) as UrlSource;
    expect(await src.size()).toBe(5000);
    expect(await src.info()).toEqual({ size: 5000, etag: '"big.bin-v1"' });
    log.length = 0;
    expect(Array.from(await src.read(4990, 10))).toEqual(Array.from(big.subarray(4990)));
    expect(Array.from(await src.read(1, 3))).toEqual([7, 14, 21]);
    expect((await src.read(100, 0)).byteLength).toBe(0);
    expect(log).toEqual(['GET /r/big.bin bytes=4990-4999', 'GET /r/big.bin bytes=1-3']);
  });

  it('reads a safetensors header with one HEAD and two Range requests', async () => {
    log.length = 0;
    const h = await readSafetensorsHeader(await urlDir(`${base}/r/`).open('model.safetensors'));
    expect([...h.tensors.keys()]).toEqual(['a.weight', 'b.weight']);
    expect(log).toEqual(['HEAD /r/model.safetensors', 'GET /r/model.safetensors bytes=0-7', `GET /r/model.safetensors bytes=8-${7 + h.headerLength}`]);
  });

  it('reads text files and encodes names in the URL', async () => {
    const dir = urlDir(`${base}/r/`);
    expect(JSON.parse(await dir.readText('config.json'))).toEqual({ hidden_size: 128 });
    expect(Array.from(await (await dir.open('with space.bin')).read(0, 3))).toEqual([9, 8, 7]);
  });

  it('refuses a read past the end with a CheckpointError', async () => {
    const src = await urlDir(`${base}/r/`).open('big.bin');
    await expect(src.read(4999, 2)).rejects.toThrow(CheckpointError);
  });
});

describe('URL failures are typed', () => {
  it('a missing file is a MissingFileError from a folder, a FetchError 404 from a bare URL', async () => {
    const dir = urlDir(`${base}/r/`);
    expect(await dir.exists('nope.safetensors')).toBe(false);
    expect(await dir.exists('config.json')).toBe(true);
    expect(await rejection(dir.open('nope.safetensors'))).toBeInstanceOf(MissingFileError);
    const e = await rejection(dir.readText('tokenizer.json'));
    expect(e).toBeInstanceOf(MissingFileError);
    expect(e.message).toBe(`tokenizer.json not found in ${base}/r/`);
    const bare = await rejection(new UrlSource(`${base}/r/nope.bin`).read(0, 4));
    expect(bare).toBeInstanceOf(FetchError);
    expect((bare as FetchError).status).toBe(404);
    expect(bare.message).toBe(`${base}/r/nope.bin: HTTP 404 Not Found`);
  });

  it('a server error is a FetchError with the URL and status, after the retries', async () => {
    const e = await rejection(urlDir(`${base}/err/`, FAST_RETRIES).readText('config.json'));
    expect(e).toBeInstanceOf(FetchError);
    expect((e as FetchError).status).toBe(500);
    expect(e.message).toContain(`${base}/err/config.json: HTTP 500 Internal Server Error; gave up after 2 attempts`);
  });

  it('an unreachable server is a FetchError', async () => {
    const closed = createServer();
    await new Promise<void>((done) => closed.listen(0, '127.0.0.1', done));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((done) => closed.close(done));
    const e = await rejection(urlDir(`http://127.0.0.1:${port}/`, FAST_RETRIES).readText('config.json'));
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(/network error/);
  });

  it('an HTML page for a missing file (single-page-app servers) is a MissingFileError', async () => {
    expect(await rejection(urlDir(`${base}/spa/`).readText('config.json'))).toBeInstanceOf(MissingFileError);
    expect(await rejection(urlDir(`${base}/spa/`).open('model.safetensors'))).toBeInstanceOf(MissingFileError);
  });
});

describe('servers without Range or HEAD', () => {
  it('a server that ignores Range: a small file is read whole, once', async () => {
    const src = await urlDir(`${base}/n/`).open('big.bin');
    log.length = 0;
    expect(Array.from(await src.read(10, 5))).toEqual(Array.from(big.subarray(10, 15)));
    expect(Array.from(await src.read(4000, 3))).toEqual(Array.from(big.subarray(4000, 4003)));
    expect(log).toEqual(['GET /n/big.bin bytes=10-14']);
  });

  it('a server that ignores Range on a big file is a FetchError that says so', async () => {
    const src = await urlDir(`${base}/n/`, { maxWholeBodyBytes: 1000 }).open('big.bin');
    const e = await rejection(src.read(0, 8));
    expect(e).toBeInstanceOf(FetchError);
    expect((e as FetchError).status).toBe(200);
    expect(e.message).toMatch(/ignored the HTTP Range request .* supports Range requests/);
  });

  it('a server that refuses HEAD: the size comes from Content-Range', async () => {
    log.length = 0;
    const src = await urlDir(`${base}/h/`).open('big.bin');
    expect(await src.size()).toBe(5000);
    expect(Array.from(await src.read(2, 2))).toEqual([14, 21]);
    expect(log).toEqual(['HEAD /h/big.bin', 'GET /h/big.bin bytes=0-0', 'GET /h/big.bin bytes=2-3']);
  });
});

describe('abort', () => {
  it('an aborted signal stops a read before and during the request', async () => {
    const src = await urlDir(`${base}/r/`).open('big.bin');
    const before = new AbortController();
    before.abort();
    expect(await rejection(src.read(0, 4, before.signal))).toBeInstanceOf(AbortError);

    const slow = new UrlSource(`${base}/slow/big.bin`);
    const during = new AbortController();
    const pending = slow.read(0, 5000, during.signal);
    setTimeout(() => during.abort(), 50);
    expect(await rejection(pending)).toBeInstanceOf(AbortError);
  });
});
