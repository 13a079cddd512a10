// Checkpoint files over HTTP(S): each read is one Range request, so a shard of gigabytes is
// streamed, never downloaded whole. The size and the validator (ETag / Last-Modified, used by
// the shard cache) come from a HEAD request, or from Content-Range when HEAD is refused.
//
// A server that ignores Range answers 200 with the whole file. For a small file (up to
// `maxWholeBodyBytes`, 32 MiB by default) we keep that body and serve all reads from it; for a
// bigger one we stop and throw a FetchError saying the server must support Range requests.

import { AbortError, ArgumentError, FetchError, MissingFileError, throwIfAborted } from '../errors.ts';
import { checkReadRange, type ByteSource, type CheckpointDir } from './sources.ts';

export interface UrlOptions {
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

  /** Size and validator, asked once (HEAD, else a one-byte Range GET). */
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
    checkReadRange(this.name, offset, length, (await this.info(signal)).size);
    if (length === 0) return new Uint8Array(0);
    if (this.whole) return this.whole.slice(offset, offset + length);
    const res = await this.request('GET', signal, `bytes=${offset}-${offset + length - 1}`);
    if (res.status === 200) {
      this.whole = await this.wholeBody(res, signal);
      checkReadRange(this.name, offset, length, this.whole.byteLength);
      return this.whole.slice(offset, offset + length);
    }
    if (res.status !== 206) throw statusError(this.url, res);
    const range = parseContentRange(res.headers.get('content-range'));
    if (range && range.start !== offset) {
      throw new FetchError(this.url, `asked for bytes from ${offset}, the server sent bytes from ${range.start}`, 206);
    }
    const bytes = await this.body(res, signal);
    if (bytes.byteLength !== length) {
      throw new FetchError(this.url, `asked for ${length} bytes at ${offset}, the server sent ${bytes.byteLength}: the file may have changed`, 206);
    }
    return bytes;
  }

  private async fetchInfo(signal?: AbortSignal): Promise<UrlFileInfo> {
    const head = await this.request('HEAD', signal);
    if (head.status === 404 || head.status === 410) throw statusError(this.url, head);
    checkNotHtml(this.url, this.name, head);
    const length = head.headers.get('content-length');
    if (head.ok && length !== null && /^\d+$/.test(length)) return validatorOf(head, Number(length));

    // HEAD refused or without a length: a one-byte Range GET says the size in Content-Range.
    const res = await this.request('GET', signal, 'bytes=0-0');
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
      this.whole = await this.wholeBody(res, signal);
      return validatorOf(res, this.whole.byteLength);
    }
    throw statusError(this.url, res);
  }

  private async request(method: 'GET' | 'HEAD', signal: AbortSignal | undefined, range?: string): Promise<Response> {
    throwIfAborted(signal);
    const headers: Record<string, string> = { ...this.options.headers };
    if (range) headers.Range = range;
    try {
      return await (this.options.fetch ?? fetch)(this.url, { method, headers, signal });
    } catch (cause) {
      throw networkError(this.url, cause, signal);
    }
  }

  private async body(res: Response, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
    try {
      return new Uint8Array(await res.arrayBuffer());
    } catch (cause) {
      throw networkError(this.url, cause, signal);
    }
  }

  /** The body of a 200 answer to a Range request, if the file is small enough to keep. */
  private async wholeBody(res: Response, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
    const limit = this.options.maxWholeBodyBytes ?? DEFAULT_MAX_WHOLE_BODY;
    const tooBig = (size: string) => {
      void res.body?.cancel().catch(() => {});
      return new FetchError(
        this.url,
        `the server ignored the HTTP Range request and sent the whole file (${size}). Big checkpoint files are ` +
          'streamed by byte ranges: serve them from a server that supports Range requests (most static servers and CDNs do).',
        200,
      );
    };
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > limit) throw tooBig(`${declared} bytes`);
    if (!res.body) return this.body(res, signal);
    const parts: Uint8Array[] = [];
    let total = 0;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > limit) throw tooBig(`over ${limit} bytes`);
        parts.push(value);
      }
    } catch (cause) {
      if (cause instanceof FetchError) throw cause;
      throw networkError(this.url, cause, signal);
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
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
    async readText(file, signal) {
      const url = urlOf(file);
      throwIfAborted(signal);
      let res: Response;
      try {
        res = await (options.fetch ?? fetch)(url, { headers: { ...options.headers }, signal });
      } catch (cause) {
        throw networkError(url, cause, signal);
      }
      if (res.status === 404 || res.status === 410) throw new MissingFileError(file, description);
      if (!res.ok) throw statusError(url, res);
      checkNotHtml(url, file, res);
      try {
        return await res.text();
      } catch (cause) {
        throw networkError(url, cause, signal);
      }
    },
  };
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
    void res.body?.cancel().catch(() => {});
    throw new MissingFileError(file, `${url} (the server answered with an HTML page, as web-app servers do for a missing file)`);
  }
}

function statusError(url: string, res: Response): FetchError {
  void res.body?.cancel().catch(() => {});
  const hint = res.status === 401 || res.status === 403 ? ' (the model may be gated: pass an access token in the request headers)' : '';
  return new FetchError(url, `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${hint}`, res.status);
}

function networkError(url: string, cause: unknown, signal: AbortSignal | undefined): Error {
  if (signal?.aborted) return new AbortError();
  return new FetchError(url, `network error: ${cause instanceof Error ? cause.message : String(cause)}`, undefined, { cause });
}
