// A local copy of checkpoint shards fetched from URLs, so a second visit loads from disk.
// Stored in IndexedDB (idb-keyval) as fixed-size chunks (32 MiB Blobs by default), never as
// one giant value. Keys hold the URL and a validator (ETag, else Last-Modified, plus the size)
// so a changed file is never served stale. A "complete" marker is written only after every
// chunk, so a half-written entry is never taken for a whole one; its finished chunks are
// still reused. The cache is an optimisation only: any failure to read or write it (quota
// full, private mode, no IndexedDB) is a warning, and loading goes on over the network.

import { createStore, del, get, keys, set, type UseStore } from 'idb-keyval';
import { throwIfAborted } from '../errors.ts';
import { checkReadRange, type ByteSource, type CheckpointDir } from './sources.ts';
import { UrlSource, type UrlFileInfo } from './url_source.ts';

/** The little the cache needs from a key-value store. */
export interface KeyValueStore {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<void>;
  del(key: string): Promise<void>;
  keys(): Promise<string[]>;
}

/** IndexedDB through idb-keyval; the database is opened on first use. */
export function idbStore(dbName = 'webmoe-shard-cache', storeName = 'chunks'): KeyValueStore {
  let store: UseStore | undefined;
  const use = () => (store ??= createStore(dbName, storeName));
  return {
    get: async (key) => get(key, use()),
    set: async (key, value) => set(key, value, use()),
    del: async (key) => del(key, use()),
    keys: async () => (await keys(use())).map(String),
  };
}

/** A store in memory (tests; Node, where there is no IndexedDB). */
export function memoryStore(): KeyValueStore & { readonly map: Map<string, unknown> } {
  const map = new Map<string, unknown>();
  return {
    map,
    get: async (key) => map.get(key),
    set: async (key, value) => void map.set(key, value),
    del: async (key) => void map.delete(key),
    keys: async () => [...map.keys()],
  };
}

export interface ShardCacheOptions {
  /** Where chunks go (default: IndexedDB). */
  store?: KeyValueStore;
  /** Bytes per stored chunk (default 32 MiB). */
  chunkBytes?: number;
  /** Told when the cache cannot be used; loading continues without it. */
  onWarning?: (message: string, cause?: unknown) => void;
}

const PREFIX = 'shard|';

interface Marker {
  size: number;
  chunkBytes: number;
  chunks: number;
}

export class ShardCache {
  readonly store: KeyValueStore;
  readonly chunkBytes: number;
  private readonly onWarning: (message: string, cause?: unknown) => void;
  /** Set after a failed write: this session stops writing (reads of stored chunks go on). */
  private writesOff = false;
  /** Set when the store cannot even be read (no IndexedDB): the cache is off for this session. */
  private off = false;

  constructor(options: ShardCacheOptions = {}) {
    this.store = options.store ?? idbStore();
    this.chunkBytes = Math.max(1, Math.floor(options.chunkBytes ?? 32 << 20));
    this.onWarning = options.onWarning ?? ((message) => console.warn(`[webmoe] ${message}`));
  }

  /** Read `origin` through the cache. Its ETag / Last-Modified is asked for first (one HEAD). */
  async open(origin: UrlSource, signal?: AbortSignal): Promise<ByteSource> {
    const info = await origin.info(signal);
    if (this.off) return origin;
    const validator = info.etag ? `etag:${info.etag}` : info.lastModified ? `modified:${info.lastModified}` : undefined;
    if (!validator) {
      this.warn(`${origin.url} has no ETag or Last-Modified, so a change could not be detected: it is not cached`);
      return origin;
    }
    const urlKey = `${PREFIX}${encodeURIComponent(origin.url)}|`;
    const entry = `${urlKey}${encodeURIComponent(validator)};size=${info.size};chunk=${this.chunkBytes}|`;
    const chunks = Math.ceil(info.size / this.chunkBytes);
    const expected: Marker = { size: info.size, chunkBytes: this.chunkBytes, chunks };
    try {
      const marker = (await this.store.get(`${entry}complete`)) as Partial<Marker> | undefined;
      if (marker && marker.size === expected.size && marker.chunkBytes === expected.chunkBytes && marker.chunks === chunks) {
        return new CachedSource(this, origin, info, entry, expected, new Set(Array.from({ length: chunks }, (_, i) => i)), true);
      }
      // Not complete: drop other versions of this URL, and resume from the chunks already stored.
      const stored = new Set<number>();
      for (const key of await this.store.keys()) {
        if (!key.startsWith(urlKey)) continue;
        if (!key.startsWith(entry)) await this.store.del(key);
        else if (/^\d+$/.test(key.slice(entry.length))) stored.add(Number(key.slice(entry.length)));
      }
      return new CachedSource(this, origin, info, entry, expected, stored, false);
    } catch (cause) {
      this.off = true;
      this.writesOff = true;
      this.warn(`the shard cache cannot be read (${describe(cause)}); loading from the network without it`, cause);
      return origin;
    }
  }

  /** A checkpoint folder whose .safetensors files at URLs are read through this cache. */
  wrap(dir: CheckpointDir): CheckpointDir {
    return {
      description: dir.description,
      exists: (file, signal) => dir.exists(file, signal),
      readText: (file, signal) => dir.readText(file, signal),
      open: async (file, signal) => {
        const source = await dir.open(file, signal);
        return source instanceof UrlSource && file.endsWith('.safetensors') ? this.open(source, signal) : source;
      },
    };
  }

  /** Delete every cached shard. */
  async clear(): Promise<void> {
    for (const key of await this.store.keys()) if (key.startsWith(PREFIX)) await this.store.del(key);
  }

  /** False once a write has failed: this session reads what is stored and writes nothing more. */
  get writable(): boolean {
    return !this.writesOff;
  }

  /** Store one value (for the cached sources); false, after one warning, when the store refuses. */
  async put(key: string, value: unknown): Promise<boolean> {
    if (this.writesOff) return false;
    try {
      await this.store.set(key, value);
      return true;
    } catch (cause) {
      this.writesOff = true;
      const quota = (cause as { name?: string }).name === 'QuotaExceededError';
      this.warn(`${quota ? 'the browser storage quota is full' : `the shard cache cannot be written (${describe(cause)})`}; ` +
        'loading continues without caching. Free space or clear the cache to cache the model.', cause);
      return false;
    }
  }

  /** Report a problem that costs speed, not correctness. */
  warn(message: string, cause?: unknown): void {
    this.onWarning(message, cause);
  }
}

/** One URL file read through the cache: stored chunks from the store, others from the network (then stored). */
class CachedSource implements ByteSource {
  readonly name: string;
  /** The last chunk fetched from the network, kept for the reads that follow it. */
  private recent: { index: number; bytes: Uint8Array<ArrayBuffer> } | undefined;

  constructor(
    private readonly cache: ShardCache,
    private readonly origin: UrlSource,
    private readonly info: UrlFileInfo,
    private readonly entry: string,
    private readonly marker: Marker,
    private readonly stored: Set<number>,
    /** True when the whole file was in the cache at open. */
    readonly fromCache: boolean,
  ) {
    this.name = origin.name;
  }

  size(): Promise<number> {
    return Promise.resolve(this.info.size);
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
    throwIfAborted(signal);
    checkReadRange(this.name, offset, length, this.info.size);
    const out = new Uint8Array(length);
    const step = this.marker.chunkBytes;
    for (let at = offset; at < offset + length; ) {
      const index = Math.floor(at / step);
      const end = Math.min(offset + length, (index + 1) * step);
      out.set(await this.readInChunk(index, at - index * step, end - index * step, signal), at - offset);
      at = end;
    }
    return out;
  }

  /** Bytes [from, to) of chunk `index`. */
  private async readInChunk(index: number, from: number, to: number, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
    if (this.recent?.index === index) return this.recent.bytes.subarray(from, to);
    const chunkStart = index * this.marker.chunkBytes;
    const chunkLength = Math.min(this.marker.chunkBytes, this.info.size - chunkStart);
    if (this.stored.has(index)) {
      const hit = await this.fromStore(index, chunkLength, from, to);
      throwIfAborted(signal);
      if (hit) return hit;
    }
    if (!this.cache.writable) return this.origin.read(chunkStart + from, to - from, signal);
    const bytes = await this.origin.read(chunkStart, chunkLength, signal);
    this.recent = { index, bytes };
    if (await this.cache.put(`${this.entry}${index}`, new Blob([bytes]))) {
      this.stored.add(index);
      // The marker goes last: only now is every chunk of this version in the store.
      if (this.stored.size === this.marker.chunks) await this.cache.put(`${this.entry}complete`, { ...this.marker });
    }
    return bytes.subarray(from, to);
  }

  /** A stored chunk's bytes, or undefined when it is missing, the wrong size, or unreadable. */
  private async fromStore(index: number, chunkLength: number, from: number, to: number): Promise<Uint8Array<ArrayBuffer> | undefined> {
    try {
      const value = await this.cache.store.get(`${this.entry}${index}`);
      if (value instanceof Blob && value.size === chunkLength) return new Uint8Array(await value.slice(from, to).arrayBuffer());
      if (value instanceof ArrayBuffer && value.byteLength === chunkLength) return new Uint8Array(value.slice(from, to));
      if (value instanceof Uint8Array && value.byteLength === chunkLength) return value.slice(from, to);
    } catch (cause) {
      this.cache.warn(`a cached chunk of ${this.name} cannot be read (${describe(cause)}); fetching it again`, cause);
    }
    this.stored.delete(index);
    return undefined;
  }
}

function describe(cause: unknown): string {
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
}
