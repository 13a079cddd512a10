// Checkpoint files over HTTP(S): each read is one Range request, so a shard of gigabytes is
// streamed, never downloaded whole. The size and the validator (ETag / Last-Modified, used by
// the shard cache) come from a HEAD request, or from Content-Range when HEAD is refused.
//
// Every request is retried on a lost connection, a stall, a 429 or a 5xx (http_retry.ts); a
// retried read resumes after the bytes it already has. Every answer is checked against the
// size and validator of the first one, so a file that changes on the server during a load is
// refused, never read as a mix of two versions. Bodies are streamed into buffers of the size
// asked for: a server cannot push more than that into memory.
//
// A server that ignores Range answers 200 with the whole file. For a small file (up to
// `maxWholeBodyBytes`, 32 MiB by default) we keep that body and serve all reads from it; for a
// bigger one we stop and throw a FetchError saying the server must support Range requests.

import { ArgumentError, FetchError, MissingFileError, WebmoeError } from '../errors.ts';
import { isTransientStatus, TransientError, withRetries, type AttemptState, type RetryOptions, type StallWatch } from './http_retry.ts';
import { checkReadRange, textFileMaxBytes, textFileTooLarge, type ByteSource, type CheckpointDir } from './sources.ts';

export type { RetryEvent, RetryOptions } from './http_retry.ts';

export interface UrlOptions extends RetryOptions {
  /** The fetch to use (defaults to the global one); tests and proxies pass their own. */
  fetch?: typeof fetch;
  /** Extra request headers, e.g. { Authorization: 'Bearer hf_…' } for a gated model. */
  headers?: Record<string, string>;
  /** Largest file accepted from a server that ignores Range. */
  maxWholeBodyBytes?: number;
}

/** What the server says about a file: its size and what identifies this version of it. */
export interface UrlFileInfo {
  size: number;
  etag?: string;
  lastModified?: string;
}

const DEFAULT_MAX_WHOLE_BODY = 32 << 20;

/** One file at a URL, read with Range requests. */
export class UrlSource implements ByteSource {
  readonly name: string;
  readonly url: string;
  private readonly options: UrlOptions;
  private infoPromise: Promise<UrlFileInfo> | undefined;
  /** The whole file, when the server ignored Range and the file was small. */
  private whole: Uint8Array<ArrayBuffer> | undefined;

  constructor(url: string, name?: string, options: UrlOptions = {}) {
    this.url = url;
    this.name = name ?? decodeURIComponent(new URL(url).pathname.split('/').pop() || url);
    this.options = options;
  }

  /** Size and validator, asked once (HEAD, else a one-byte Range GET); later answers must match it. */
  info(signal?: AbortSignal): Promise<UrlFileInfo> {
    this.infoPromise ??= this.fetchInfo(signal).catch((e) => {
      this.infoPromise = undefined; // let a later call retry
      throw e;
    });
    return this.infoPromise;
  }

  async size(): Promise<number> {
    return (await this.info()).size;
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
    const info = await this.info(signal);
    checkReadRange(this.name, offset, length, info.size);
    if (length === 0) return new Uint8Array(0);
    if (this.whole) return this.whole.slice(offset, offset + length);
    const out = new Uint8Array(length);
    const last = offset + length - 1;
    const state: AttemptState = { range: `bytes=${offset}-${last}`, received: 0, wanted: length };
    await withRetries(this.url, this.options, signal, state, async (watch) => {
      const from = offset + state.received; // a retry resumes after the bytes already here
      const res = await send(this.url, this.options, watch, 'GET', `bytes=${from}-${last}`);
      if (res.status === 200) {
        const whole = await this.wholeBody(res, watch);
        checkSameFile(this.url, info, res, whole.byteLength);
        this.whole = whole;
        out.set(whole.subarray(from, offset + length), state.received);
        state.received = length;
        return;
      }
      if (res.status !== 206) throw statusError(this.url, res);
      const range = parseContentRange(res.headers.get('content-range'));
      checkSameFile(this.url, info, res, range?.total);
      if (range && range.start !== from) {
        throw cancelled(res, new FetchError(this.url, `asked for bytes from ${from}, the server sent bytes from ${range.start}`, 206));
      }
      await readBody(res, watch, (piece) => {
        if (state.received + piece.byteLength > length) {
          throw new FetchError(this.url, `asked for ${length} bytes at ${offset}, the server sent more: the file may have changed`, 206);
        }
        out.set(piece, state.received);
        state.received += piece.byteLength;
      });
      if (state.received < length) throw new TransientError(`the connection closed after ${state.received} of ${length} bytes`);
    });
    return out;
  }

  private fetchInfo(signal?: AbortSignal): Promise<UrlFileInfo> {
    return withRetries(this.url, this.options, signal, { received: 0 }, async (watch) => {
      const head = await send(this.url, this.options, watch, 'HEAD');
      if (head.status === 404 || head.status === 410 || isTransientStatus(head.status)) throw statusError(this.url, head);
      checkNotHtml(this.url, this.name, head);
      const length = head.headers.get('content-length');
      if (head.ok && length !== null && /^\d+$/.test(length)) return validatorOf(head, Number(length));

      // HEAD refused or without a length: a one-byte Range GET says the size in Content-Range.
      const res = await send(this.url, this.options, watch, 'GET', 'bytes=0-0');
      checkNotHtml(this.url, this.name, res);
      if (res.status === 206) {
        await res.body?.cancel().catch(() => {});
        const range = parseContentRange(res.headers.get('content-range'));
        if (!range || range.total === undefined) {
          throw new FetchError(this.url, 'the server did not say the file size (no Content-Length, no readable Content-Range; ' +
            'a cross-origin server must list Content-Range in Access-Control-Expose-Headers)', 206);
        }
        return validatorOf(res, range.total);
      }
      if (res.status === 200) {
        this.whole = await this.wholeBody(res, watch);
        return validatorOf(res, this.whole.byteLength);
      }
      throw statusError(this.url, res);
    });
  }

  /** The body of a 200 answer to a Range request, if the file is small enough to keep. */
  private async wholeBody(res: Response, watch: StallWatch): Promise<Uint8Array<ArrayBuffer>> {
    const limit = this.options.maxWholeBodyBytes ?? DEFAULT_MAX_WHOLE_BODY;
    const tooBig = (size: string) =>
      new FetchError(
        this.url,
        `the server ignored the HTTP Range request and sent the whole file (${size}). Big checkpoint files are ` +
          'streamed by byte ranges: serve them from a server that supports Range requests (most static servers and CDNs do).',
        200,
      );
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > limit) throw cancelled(res, tooBig(`${declared} bytes`));
    return readCapped(res, watch, limit, () => tooBig(`over ${limit} bytes`));
  }
}

/** A checkpoint folder at a base URL, e.g. https://huggingface.co/<org>/<model>/resolve/main/ */
export function urlDir(baseUrl: string, options: UrlOptions = {}): CheckpointDir {
  const base = resolveBase(baseUrl);
  const description = base.href;
  const urlOf = (file: string) => new URL(file.split('/').map(encodeURIComponent).join('/'), base).href;
  const open = async (file: string, signal?: AbortSignal) => {
    const source = new UrlSource(urlOf(file), file, options);
    try {
      await source.info(signal);
    } catch (e) {
      if (e instanceof FetchError && (e.status === 404 || e.status === 410)) throw new MissingFileError(file, description);
      throw e;
    }
    return source;
  };
  return {
    description,
    open,
    async exists(file, signal) {
      try {
        await open(file, signal);
        return true;
      } catch (e) {
        if (e instanceof MissingFileError) return false;
        throw e;
      }
    },
    readText: (file, signal, maxBytes = textFileMaxBytes(file)) => fetchText(urlOf(file), file, description, options, maxBytes, signal),
  };
}

/** A whole text file, refused (without reading it all) when over `maxBytes`. */
function fetchText(url: string, file: string, where: string, options: UrlOptions, maxBytes: number, signal?: AbortSignal): Promise<string> {
  return withRetries(url, options, signal, { received: 0 }, async (watch) => {
    const res = await send(url, options, watch, 'GET');
    if (res.status === 404 || res.status === 410) throw cancelled(res, new MissingFileError(file, where));
    if (!res.ok) throw statusError(url, res);
    checkNotHtml(url, file, res);
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > maxBytes) throw cancelled(res, textFileTooLarge(file, maxBytes, url, declared));
    return new TextDecoder().decode(await readCapped(res, watch, maxBytes, () => textFileTooLarge(file, maxBytes, url)));
  });
}

/** One request under `watch`: a network failure is transient (retried), an abort is not. */
async function send(url: string, options: UrlOptions, watch: StallWatch, method: 'GET' | 'HEAD', range?: string): Promise<Response> {
  const headers: Record<string, string> = { ...options.headers };
  if (range) headers.Range = range;
  let res: Response;
  try {
    res = await watch.race((options.fetch ?? fetch)(url, { method, headers, signal: watch.signal }));
  } catch (cause) {
    if (cause instanceof WebmoeError || cause instanceof TransientError) throw cause;
    throw new TransientError(`network error: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
  watch.progress();
  return res;
}

/** Hand each piece of the body to `take` as it arrives; a broken connection is transient. */
async function readBody(res: Response, watch: StallWatch, take: (piece: Uint8Array) => void): Promise<void> {
  if (!res.body) return;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await watch.race(reader.read());
      if (done) return;
      watch.progress();
      take(value);
    }
  } catch (cause) {
    void reader.cancel().catch(() => {});
    if (cause instanceof WebmoeError || cause instanceof TransientError) throw cause;
    throw new TransientError(`the connection broke: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}

/** The whole body, refused with `tooBig()` as soon as it passes `limit` bytes. */
async function readCapped(res: Response, watch: StallWatch, limit: number, tooBig: () => Error): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  let total = 0;
  await readBody(res, watch, (piece) => {
    total += piece.byteLength;
    if (total > limit) throw tooBig();
    parts.push(piece);
  });
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * Refuse an answer from another version of the file than the first answer described. (We compare
 * rather than send If-Range: If-Range is not a CORS-safelisted header, so cross-origin loads
 * would need a preflight that servers allowing only Range refuse.)
 */
function checkSameFile(url: string, first: UrlFileInfo, res: Response, total: number | undefined): void {
  const etag = res.headers.get('etag');
  const modified = res.headers.get('last-modified');
  let change: string | undefined;
  if (total !== undefined && total !== first.size) change = `${first.size} bytes at first, now ${total}`;
  else if (first.etag && etag && weakTag(etag) !== weakTag(first.etag)) change = `ETag ${first.etag} at first, now ${etag}`;
  else if (!first.etag && first.lastModified && modified && modified !== first.lastModified) change = `Last-Modified ${first.lastModified} at first, now ${modified}`;
  if (change) {
    throw cancelled(res, new FetchError(url, `the file changed on the server during the load (${change}): load the model again to read the new version`, res.status));
  }
}

/** W/"x" and "x" name the same version for this comparison. */
const weakTag = (tag: string) => tag.replace(/^W\//, '');

function cancelled<E extends Error>(res: Response, error: E): E {
  void res.body?.cancel().catch(() => {});
  return error;
}

function resolveBase(baseUrl: string): URL {
  const withSlash = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  try {
    return new URL(withSlash, (globalThis as { location?: { href: string } }).location?.href);
  } catch {
    throw new ArgumentError(`"${baseUrl}" is not a URL`);
  }
}

function validatorOf(res: Response, size: number): UrlFileInfo {
  const info: UrlFileInfo = { size };
  const etag = res.headers.get('etag');
  const lastModified = res.headers.get('last-modified');
  if (etag) info.etag = etag;
  if (lastModified) info.lastModified = lastModified;
  return info;
}

/** "bytes 0-0/1234" -> { start: 0, end: 0, total: 1234 }; total is undefined for "*". */
function parseContentRange(header: string | null): { start: number; end: number; total?: number } | undefined {
  const m = header && /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

/** Single-page-app servers (Vite's dev server among them) answer a missing file with index.html and 200. */
function checkNotHtml(url: string, file: string, res: Response): void {
  if (res.ok && !/\.html?$/i.test(file) && /^text\/html/i.test(res.headers.get('content-type') ?? '')) {
    throw cancelled(res, new MissingFileError(file, `${url} (the server answered with an HTML page, as web-app servers do for a missing file)`));
  }
}

/** A refused status: a TransientError (retried) for 429 / 5xx, else a FetchError. */
function statusError(url: string, res: Response): FetchError | TransientError {
  void res.body?.cancel().catch(() => {});
  const text = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  if (isTransientStatus(res.status)) return new TransientError(text, res.status, res.headers.get('retry-after'));
  const hint = res.status === 401 || res.status === 403 ? ' (the model may be gated: pass an access token in the request headers)' : '';
  return new FetchError(url, `${text}${hint}`, res.status);
}
