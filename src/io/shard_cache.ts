// A local copy of checkpoint shards fetched from URLs, so a second visit loads from disk.
// Stored in IndexedDB (idb-keyval) as fixed-size chunks (32 MiB Blobs by default), never as
// one giant value. Keys hold the URL and a validator (ETag, else Last-Modified, plus the size)
// so a changed file is never served stale; the "complete" marker records them too, and is
// checked against the server's answer at every open. A chunk is stored only once all of its
// bytes came, from one version of the file (UrlSource refuses an answer from another), and
// the marker only after every chunk, so a half-written or mixed entry is never taken for a
// whole one; its finished chunks are still reused. The cache is an optimisation only: any
// failure to read or write it (private mode, no IndexedDB) is a warning, and loading goes on
// over the network. When the quota is full, the entries opened longest ago (other models, or
// other versions) are deleted to make room, one at a time, never a file this cache is loading;
// only when nothing is left to delete does caching stop. The browser is asked once, at the
// first write, to keep the storage (navigator.storage.persist()), so it does not evict a
// multi-GB model on its own under storage pressure.

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
  /**
   * Reads up to this size of a chunk not yet at hand go straight to the network, without
   * fetching the chunk (default min(4 MiB, chunkBytes / 8)). The loader reads every shard's
   * 8-byte length and JSON header before any tensor: a whole chunk for each would download and
   * hold chunkBytes per shard (5 GB for DeepSeek-V3's 163 shards).
   */
  smallReadBytes?: number;
  /**
   * Asked once, before the first write, to make the storage persistent (default:
   * navigator.storage.persist where it exists; false: never ask). Its answer is `persisted`.
   */
  persist?: (() => Promise<boolean>) | false;
  /** The clock of the "last opened" records (tests). */
  now?: () => number;
}

const PREFIX = 'shard|';
/** Part of every entry's key: entries written before the validators were checked are dropped. */
const FORMAT = 'v2';

/** The "complete" record: what the file was when its chunks were stored. */
interface Marker {
  size: number;
  chunkBytes: number;
  chunks: number;
  etag?: string;
  lastModified?: string;
}

/** The "last opened" record of an entry: what eviction orders by. */
interface Used {
  at: number;
  size: number;
}

/** Key suffixes under an entry: chunk indices, `complete` and `used`. */
const ENTRY_KEY = /^(.*\|)(\d+|complete|used)$/;

function defaultPersist(): (() => Promise<boolean>) | undefined {
  const storage = (globalThis as { navigator?: { storage?: { persist?: () => Promise<boolean> } } }).navigator?.storage;
  return typeof storage?.persist === 'function' ? () => storage.persist!() : undefined;
}

function sameMarker(stored: Partial<Marker> | undefined, expected: Marker): boolean {
  return !!stored && stored.size === expected.size && stored.chunkBytes === expected.chunkBytes && stored.chunks === expected.chunks &&
    stored.etag === expected.etag && stored.lastModified === expected.lastModified;
}

export class ShardCache {
  readonly store: KeyValueStore;
  readonly chunkBytes: number;
  readonly smallReadBytes: number;
  private readonly onWarning: (message: string, cause?: unknown) => void;
  /** Set after a failed write: this session stops writing (reads of stored chunks go on). */
  private writesOff = false;
  /** Set when the store cannot even be read (no IndexedDB): the cache is off for this session. */
  private off = false;
  /** Entries opened by this cache: never evicted to make room (they are being loaded). */
  private readonly active = new Set<string>();
  private readonly persistRequest: (() => Promise<boolean>) | undefined;
  private persistAsked: Promise<void> | undefined;
  private readonly now: () => number;
  /**
   * The browser's answer to navigator.storage.persist(), once a write asked it; undefined before
   * that, or where it cannot be asked.
   */
  persisted: boolean | undefined;

  constructor(options: ShardCacheOptions = {}) {
    this.store = options.store ?? idbStore();
    this.chunkBytes = Math.max(1, Math.floor(options.chunkBytes ?? 32 << 20));
    this.smallReadBytes = options.smallReadBytes ?? Math.min(4 << 20, Math.floor(this.chunkBytes / 8));
    this.onWarning = options.onWarning ?? ((message) => console.warn(`[webmoe] ${message}`));
    this.persistRequest = options.persist === false ? undefined : (options.persist ?? defaultPersist());
    this.now = options.now ?? Date.now;
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
    const entry = `${urlKey}${FORMAT};${encodeURIComponent(validator)};size=${info.size};chunk=${this.chunkBytes}|`;
    const chunks = Math.ceil(info.size / this.chunkBytes);
    const expected: Marker = { size: info.size, chunkBytes: this.chunkBytes, chunks };
    // The validator the key holds (ETag first, as `validator` above).
    if (info.etag) expected.etag = info.etag;
    else expected.lastModified = info.lastModified;
    try {
      this.active.add(entry);
      const marker = (await this.store.get(`${entry}complete`)) as Partial<Marker> | undefined;
      if (sameMarker(marker, expected)) {
        await this.touch(entry, info.size);
        return new CachedSource(this, origin, info, entry, expected, new Set(Array.from({ length: chunks }, (_, i) => i)), true);
      }
      // Not complete: drop other versions of this URL, and resume from the chunks already stored.
      const stored = new Set<number>();
      for (const key of await this.store.keys()) {
        if (!key.startsWith(urlKey)) continue;
        if (!key.startsWith(entry)) await this.store.del(key);
        else if (/^\d+$/.test(key.slice(entry.length))) stored.add(Number(key.slice(entry.length)));
      }
      if (stored.size > 0) await this.touch(entry, info.size);
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
      readText: (file, signal, maxBytes) => dir.readText(file, signal, maxBytes),
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

  /**
   * Records that `entry` was opened now, once per open (the first chunk stored writes it for a
   * new entry): the least recently opened entry is the first evicted.
   */
  async touch(entry: string, size: number): Promise<void> {
    await this.put(`${entry}used`, { at: this.now(), size } satisfies Used);
  }

  /** False once a write has failed: this session reads what is stored and writes nothing more. */
  get writable(): boolean {
    return !this.writesOff;
  }

  /**
   * Store one value (for the cached sources). A full quota deletes the least recently opened
   * entry not in use and tries again; false, after one warning, when nothing is left to delete
   * or the store refuses for another reason.
   */
  async put(key: string, value: unknown): Promise<boolean> {
    if (this.writesOff) return false;
    await (this.persistAsked ??= this.askPersist());
    for (;;) {
      try {
        await this.store.set(key, value);
        return true;
      } catch (cause) {
        const quota = (cause as { name?: string }).name === 'QuotaExceededError';
        if (quota && (await this.evictLeastRecent())) continue;
        this.writesOff = true;
        this.warn(`${quota ? 'the browser storage quota is full' : `the shard cache cannot be written (${describe(cause)})`}; ` +
          'loading continues without caching. Free space or clear the cache to cache the model.', cause);
        return false;
      }
    }
  }

  /**
   * Deletes every key of the entry opened longest ago (entries without a record first: partial
   * downloads of an older version of this cache), except the entries this cache opened. False
   * when there is none.
   */
  private async evictLeastRecent(): Promise<boolean> {
    let keys: string[];
    try {
      keys = (await this.store.keys()).filter((k) => k.startsWith(PREFIX));
    } catch {
      return false;
    }
    const entries = new Map<string, string[]>();
    for (const key of keys) {
      const m = ENTRY_KEY.exec(key);
      const entry = m ? m[1] : key;
      if (this.active.has(entry)) continue;
      entries.set(entry, [...(entries.get(entry) ?? []), key]);
    }
    let oldest: { entry: string; at: number } | undefined;
    for (const entry of entries.keys()) {
      const used = (await this.store.get(`${entry}used`).catch(() => undefined)) as Partial<Used> | undefined;
      const at = typeof used?.at === 'number' ? used.at : -Infinity;
      if (!oldest || at < oldest.at) oldest = { entry, at };
    }
    if (!oldest) return false;
    const doomed = entries.get(oldest.entry)!;
    for (const key of doomed) await this.store.del(key);
    const url = decodeURIComponent(oldest.entry.slice(PREFIX.length).split('|')[0]);
    const chunks = doomed.filter((k) => /\|\d+$/.test(k)).length;
    this.warn(`the browser storage quota is full: deleted the cached copy of ${url} (${chunks} chunk${chunks === 1 ? '' : 's'}, ` +
      `${Number.isFinite(oldest.at) ? `last opened ${new Date(oldest.at).toISOString()}` : 'never completed'}) to make room`);
    return true;
  }

  /** navigator.storage.persist(), once; a refusal or failure changes nothing but `persisted`. */
  private async askPersist(): Promise<void> {
    if (!this.persistRequest) return;
    try {
      this.persisted = await this.persistRequest();
    } catch {
      this.persisted = false;
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
  /** The last chunk fetched from the network, kept for the reads that follow it until one reaches its end. */
  private recent: { index: number; bytes: Uint8Array<ArrayBuffer> } | undefined;
  /** Chunks a small read went around; fetched (and stored) when a later chunk is, so the entry can complete. */
  private readonly skipped = new Set<number>();
  private sawLargeRead = false;

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
    const step = this.marker.chunkBytes;
    const first = Math.floor(offset / step);
    const last = Math.floor((offset + length - 1) / step);
    // The header's small reads go around the cache (no 32 MiB chunk per shard to read a header),
    // until the first large read: from then on every read goes through chunks, so that each is
    // stored and the entry completes. A read in the file's last chunk always does (a small file's
    // tensor reads are all small).
    const lastChunk = Math.ceil(this.info.size / step) - 1;
    if (length <= this.cache.smallReadBytes && !this.sawLargeRead && last < lastChunk && !this.atHand(first, last)) {
      for (let i = first; i <= last; i++) if (!this.stored.has(i)) this.skipped.add(i);
      return this.origin.read(offset, length, signal);
    }
    if (length > this.cache.smallReadBytes) this.sawLargeRead = true;
    const out = new Uint8Array(length);
    for (let at = offset; at < offset + length; ) {
      const index = Math.floor(at / step);
      const end = Math.min(offset + length, (index + 1) * step);
      out.set(await this.readInChunk(index, at - index * step, end - index * step, signal), at - offset);
      at = end;
    }
    return out;
  }

  /** True when every chunk of first..last is in the store or in memory. */
  private atHand(first: number, last: number): boolean {
    for (let i = first; i <= last; i++) if (this.recent?.index !== i && !this.stored.has(i)) return false;
    return true;
  }

  private chunkLength(index: number): number {
    return Math.min(this.marker.chunkBytes, this.info.size - index * this.marker.chunkBytes);
  }

  /** Bytes [from, to) of chunk `index`. */
  private async readInChunk(index: number, from: number, to: number, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
    const recent = this.recent;
    const chunkLength = this.chunkLength(index);
    // Reads go forward: once one reaches the end of the kept chunk, it is not needed again.
    if (recent?.index === index) {
      if (to === chunkLength) this.recent = undefined;
      return recent.bytes.subarray(from, to);
    }
    const chunkStart = index * this.marker.chunkBytes;
    if (this.stored.has(index)) {
      const hit = await this.fromStore(index, chunkLength, from, to);
      throwIfAborted(signal);
      if (hit) return hit;
    }
    if (!this.cache.writable) return this.origin.read(chunkStart + from, to - from, signal);
    for (const k of this.skipped) if (k < index) await this.fill(k, signal);
    const bytes = await this.fetchAndStore(index, signal);
    this.recent = to === chunkLength ? undefined : { index, bytes };
    return bytes.subarray(from, to);
  }

  /** A chunk a small read went around, stored now without being kept in memory. */
  private async fill(index: number, signal?: AbortSignal): Promise<void> {
    this.skipped.delete(index);
    if (!this.stored.has(index) && this.cache.writable) await this.fetchAndStore(index, signal);
  }

  /** The whole chunk from the network (all of one version: UrlSource checks), then stored. */
  private async fetchAndStore(index: number, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>> {
    const bytes = await this.origin.read(index * this.marker.chunkBytes, this.chunkLength(index), signal);
    this.skipped.delete(index);
    if (this.stored.size === 0) await this.cache.touch(this.entry, this.info.size);
    if (await this.cache.put(`${this.entry}${index}`, new Blob([bytes]))) {
      this.stored.add(index);
      // The marker goes last: only now is every chunk of this version in the store.
      if (this.stored.size === this.marker.chunks) await this.cache.put(`${this.entry}complete`, { ...this.marker });
    }
    return bytes;
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
