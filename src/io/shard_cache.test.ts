import { describe, expect, it } from 'vitest';
import { FetchError } from '../errors.ts';
import { openCheckpoint } from './checkpoint_files.ts';
import { memoryStore, ShardCache, type KeyValueStore } from './shard_cache.ts';
import { readSafetensorsHeader } from './safetensors.ts';
import { writeSafetensors } from './safetensors_write.ts';
import { memoryDir } from './sources.ts';
import { streamTensors } from './stream_to_gpu.ts';
import { UrlSource, urlDir } from './url_source.ts';

const URL_A = 'https://models.example/m/model.safetensors';

/** An HTTP origin in memory: HEAD, Range GET, ETag; logs every request. */
function origin(files: Record<string, { bytes: Uint8Array; etag?: string; lastModified?: string }>) {
  const log: string[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = String(input);
    const method = init?.method ?? 'GET';
    const range = (init?.headers as Record<string, string> | undefined)?.Range;
    log.push(`${method} ${range ?? ''}`.trim());
    const file = files[url];
    if (!file) return new Response('no', { status: 404 });
    const headers: Record<string, string> = {};
    if (file.etag) headers.etag = file.etag;
    if (file.lastModified) headers['last-modified'] = file.lastModified;
    if (method === 'HEAD') return new Response(null, { status: 200, headers: { ...headers, 'content-length': String(file.bytes.byteLength) } });
    const m = /^bytes=(\d+)-(\d+)$/.exec(range ?? '');
    if (!m) return new Response(file.bytes.slice(), { status: 200, headers }); // text files
    const [start, end] = [Number(m[1]), Number(m[2])];
    return new Response(file.bytes.slice(start, end + 1), {
      status: 206,
      headers: { ...headers, 'content-range': `bytes ${start}-${end}/${file.bytes.byteLength}` },
    });
  };
  return { fetch: fetch as typeof globalThis.fetch, log, files };
}

const fileBytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 255);

/** Read the whole file in uneven pieces, as a loader would. */
async function readAll(src: { read(o: number, l: number): Promise<Uint8Array>; size(): Promise<number> }): Promise<number[]> {
  const size = await src.size();
  const out: number[] = [];
  for (let at = 0; at < size; at += 37) out.push(...(await src.read(at, Math.min(37, size - at))));
  return out;
}

describe('ShardCache', () => {
  it('fills on the first load, serves the second from the cache without GETs', async () => {
    const bytes = fileBytes(1000, 1);
    const net = origin({ [URL_A]: { bytes, etag: '"v1"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 128, onWarning: (m) => expect.fail(m) });

    const first = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(first.fromCache).toBe(false);
    expect(await readAll(first)).toEqual(Array.from(bytes));
    // Whole 128-byte chunks are fetched, each once, and each kept as its own value beside the
    // "last opened" record; the marker is last.
    expect(net.log.filter((l) => l.startsWith('GET'))).toHaveLength(8);
    const keys = [...store.map.keys()];
    expect(keys).toHaveLength(10);
    expect(keys[0]).toMatch(/\|used$/);
    expect(keys.at(-1)).toMatch(/\|complete$/);
    expect(store.map.get(keys[1])).toBeInstanceOf(Blob);

    net.log.length = 0;
    const second = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(second.fromCache).toBe(true);
    expect(await readAll(second)).toEqual(Array.from(bytes));
    expect(Array.from(await second.read(120, 20))).toEqual(Array.from(bytes.subarray(120, 140))); // across chunks
    expect(net.log).toEqual(['HEAD']);
  });

  it('never serves a file whose ETag changed; the stale copy is deleted', async () => {
    const net = origin({ [URL_A]: { bytes: fileBytes(300, 1), etag: '"v1"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 100 });
    await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })));
    expect(store.map.size).toBe(5);

    const changed = fileBytes(300, 2);
    net.files[URL_A] = { bytes: changed, etag: '"v2"' };
    const src = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(src.fromCache).toBe(false);
    expect([...store.map.keys()].some((k) => k.includes('v1'))).toBe(false);
    expect(await readAll(src)).toEqual(Array.from(changed));
    const again = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(again.fromCache).toBe(true);
    expect(await readAll(again)).toEqual(Array.from(changed));
  });

  it('uses Last-Modified and the size when there is no ETag', async () => {
    const net = origin({ [URL_A]: { bytes: fileBytes(200, 1), lastModified: 'Mon, 01 Jan 2024 00:00:00 GMT' } });
    const cache = new ShardCache({ store: memoryStore(), chunkBytes: 64 });
    await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })));
    expect((await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }))).fromCache).toBe(true);
    net.files[URL_A] = { bytes: fileBytes(201, 1), lastModified: 'Mon, 01 Jan 2024 00:00:00 GMT' };
    expect((await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }))).fromCache).toBe(false);
  });

  it('does not cache a file with no validator, and says so', async () => {
    const net = origin({ [URL_A]: { bytes: fileBytes(50, 1) } });
    const warnings: string[] = [];
    const store = memoryStore();
    const cache = new ShardCache({ store, onWarning: (m) => warnings.push(m) });
    const src = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(await readAll(src)).toEqual(Array.from(fileBytes(50, 1)));
    expect(store.map.size).toBe(0);
    expect(warnings).toEqual([`${URL_A} has no ETag or Last-Modified, so a change could not be detected: it is not cached`]);
  });

  it('a full quota is one warning, and loading goes on without the cache', async () => {
    const bytes = fileBytes(500, 3);
    const net = origin({ [URL_A]: { bytes, etag: '"v1"' } });
    const inner = memoryStore();
    let sets = 0;
    const full: KeyValueStore = {
      ...inner,
      async set(key, value) {
        if (++sets > 3) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError'); // the record, two chunks
        return inner.set(key, value);
      },
    };
    const warnings: string[] = [];
    const cache = new ShardCache({ store: full, chunkBytes: 100, onWarning: (m) => warnings.push(m) });
    const src = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(await readAll(src)).toEqual(Array.from(bytes));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/storage quota is full; loading continues without caching/);
    expect(cache.writable).toBe(false);
    // Two chunks made it; no marker: the entry is not complete and is never served as such.
    expect([...inner.map.keys()].some((k) => k.endsWith('complete'))).toBe(false);
    const later = await new ShardCache({ store: inner, chunkBytes: 100 }).open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(later.fromCache).toBe(false);
    // ...but its finished chunks are reused: only the three missing ones are fetched.
    net.log.length = 0;
    expect(await readAll(later)).toEqual(Array.from(bytes));
    expect(net.log.filter((l) => l.startsWith('GET'))).toEqual(['GET bytes=200-299', 'GET bytes=300-399', 'GET bytes=400-499']);
    expect((await new ShardCache({ store: inner, chunkBytes: 100 }).open(new UrlSource(URL_A, undefined, { fetch: net.fetch }))).fromCache).toBe(true);
  });

  it('a store that cannot be read at all (no IndexedDB) is a warning, not a failure', async () => {
    const net = origin({ [URL_A]: { bytes: fileBytes(100, 1), etag: '"v1"' } });
    const broken: KeyValueStore = {
      get: async () => { throw new ReferenceError('indexedDB is not defined'); },
      set: async () => { throw new ReferenceError('indexedDB is not defined'); },
      del: async () => {},
      keys: async () => { throw new ReferenceError('indexedDB is not defined'); },
    };
    const warnings: string[] = [];
    const cache = new ShardCache({ store: broken, onWarning: (m) => warnings.push(m) });
    const src = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(await readAll(src)).toEqual(Array.from(fileBytes(100, 1)));
    await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(warnings).toEqual(['the shard cache cannot be read (ReferenceError: indexedDB is not defined); loading from the network without it']);
  });

  it('the default IndexedDB store, absent in Node, is a warning too', async () => {
    const net = origin({ [URL_A]: { bytes: fileBytes(10, 1), etag: '"v1"' } });
    const warnings: string[] = [];
    const src = await new ShardCache({ onWarning: (m) => warnings.push(m) }).open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(await readAll(src)).toEqual(Array.from(fileBytes(10, 1)));
    expect(warnings[0]).toMatch(/the shard cache cannot be read \(ReferenceError: indexedDB is not defined\)/);
  });

  it('a damaged chunk in a complete entry is fetched again', async () => {
    const bytes = fileBytes(300, 4);
    const net = origin({ [URL_A]: { bytes, etag: '"v1"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 100, onWarning: () => {} });
    await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })));
    const chunk1 = [...store.map.keys()].find((k) => k.endsWith('|1'))!;
    store.map.set(chunk1, new Blob([new Uint8Array(10)])); // wrong size
    net.log.length = 0;
    const src = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(src.fromCache).toBe(true);
    expect(await readAll(src)).toEqual(Array.from(bytes));
    expect(net.log).toEqual(['HEAD', 'GET bytes=100-199']);
  });

  it('wraps a URL folder: safetensors go through the cache, text files do not', async () => {
    const model = writeSafetensors({ w: { dtype: 'F32', shape: [3], data: new Float32Array([1, 2, 3]) } });
    const base = 'https://models.example/m/';
    const net = origin({ [`${base}model.safetensors`]: { bytes: model, etag: '"x"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 64 });
    const dir = cache.wrap(urlDir(base, { fetch: net.fetch }));
    const src = await dir.open('model.safetensors');
    const header = await readSafetensorsHeader(src);
    const got: number[] = [];
    await streamTensors(src, [...header.tensors.values()], (_, chunk) => void got.push(...new Float32Array(chunk.slice().buffer)));
    expect(got).toEqual([1, 2, 3]);
    expect((await dir.open('model.safetensors')).fromCache).toBe(true);
    // readText passes the caller's cap on.
    await expect(dir.readText('model.safetensors', undefined, 10)).rejects.toThrow(/model.safetensors is over 10 bytes/);
    // Non-URL folders pass through untouched.
    const plain = memoryDir('mem', { 'model.safetensors': model });
    expect((await cache.wrap(plain).open('model.safetensors')).fromCache).toBeUndefined();
  });

  it('a full quota deletes the model opened longest ago, never one being loaded', async () => {
    const url = (name: string) => `https://models.example/${name}/model.safetensors`;
    const files = Object.fromEntries(['a', 'b', 'c'].map((n, i) => [url(n), { bytes: fileBytes(300, i), etag: `"${n}"` }]));
    const net = origin(files);
    const inner = memoryStore();
    const held = () => [...inner.map.values()].reduce<number>((sum, v) => sum + (v instanceof Blob ? v.size : 0), 0);
    // A quota of 700 bytes of chunks: two models of 300 fit, a third does not.
    const quota: KeyValueStore = {
      ...inner,
      async set(key, value) {
        if (value instanceof Blob && held() + value.size > 700) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
        return inner.set(key, value);
      },
    };
    let clock = 0;
    const warnings: string[] = [];
    const session = () => new ShardCache({ store: quota, chunkBytes: 100, now: () => ++clock, persist: false, onWarning: (m) => warnings.push(m) });
    const load = async (cache: ShardCache, name: string) => {
      const src = await cache.open(new UrlSource(url(name), undefined, { fetch: net.fetch }));
      expect(await readAll(src)).toEqual(Array.from(files[url(name)].bytes));
      return src.fromCache;
    };
    expect(await load(session(), 'a')).toBe(false);
    expect(await load(session(), 'b')).toBe(false);
    expect(await load(session(), 'a')).toBe(true); // a is now the more recent
    expect(warnings).toEqual([]);

    expect(await load(session(), 'c')).toBe(false);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/quota is full: deleted the cached copy of https:\/\/models\.example\/b\/model\.safetensors \(3 chunks, last opened .*\) to make room/);
    expect([...inner.map.keys()].some((k) => k.includes(encodeURIComponent(url('b'))))).toBe(false);
    expect(await load(session(), 'c')).toBe(true);
    expect(await load(session(), 'a')).toBe(true);

    // A file larger than the quota: the others go, then its own chunks stay and caching stops.
    warnings.length = 0;
    net.files[url('big')] = { bytes: fileBytes(900, 9), etag: '"big"' };
    const cache = session();
    const src = await cache.open(new UrlSource(url('big'), undefined, { fetch: net.fetch }));
    expect(await readAll(src)).toEqual(Array.from(fileBytes(900, 9)));
    expect(warnings.filter((w) => w.includes('deleted the cached copy'))).toHaveLength(2);
    expect(warnings.at(-1)).toMatch(/storage quota is full; loading continues without caching/);
    expect(cache.writable).toBe(false);
    expect(held()).toBe(700);
    expect([...inner.map.keys()].every((k) => k.includes(encodeURIComponent(url('big'))))).toBe(true);
  });

  it('asks the browser once to keep the storage, at the first write', async () => {
    const net = origin({ [URL_A]: { bytes: fileBytes(300, 1), etag: '"v1"' } });
    let asked = 0;
    const cache = new ShardCache({ store: memoryStore(), chunkBytes: 100, persist: async () => (++asked, true) });
    expect(cache.persisted).toBeUndefined();
    await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })));
    await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })));
    expect(asked).toBe(1);
    expect(cache.persisted).toBe(true);
    // A refusal (or a failure) changes nothing but the answer.
    const refused = new ShardCache({ store: memoryStore(), chunkBytes: 100, persist: async () => { throw new Error('no'); } });
    const src = await refused.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(await readAll(src)).toEqual(Array.from(fileBytes(300, 1)));
    expect(refused.persisted).toBe(false);
    expect(refused.writable).toBe(true);
  });

  it('clear() removes every cached shard', async () => {
    const net = origin({ [URL_A]: { bytes: fileBytes(100, 1), etag: '"v1"' } });
    const store = memoryStore();
    await store.set('someone-else', 1);
    const cache = new ShardCache({ store, chunkBytes: 64 });
    await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })));
    expect(store.map.size).toBe(5); // two chunks, the record, the marker, someone else's
    await cache.clear();
    expect([...store.map.keys()]).toEqual(['someone-else']);
    expect((await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }))).fromCache).toBe(false);
  });
});

/** Bytes the GETs of `log` asked for (Range GETs only). */
const rangeBytes = (log: string[]) =>
  log.reduce((sum, l) => {
    const m = /^GET bytes=(\d+)-(\d+)$/.exec(l);
    return m ? sum + Number(m[2]) - Number(m[1]) + 1 : sum;
  }, 0);

describe('ShardCache: headers by small reads (F7)', () => {
  it('openCheckpoint of 12 shards fetches only their headers, not a chunk each', async () => {
    const base = 'https://models.example/big/';
    const files: Record<string, { bytes: Uint8Array; etag: string }> = {};
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < 12; i++) {
      const name = `model-${i}.safetensors`;
      files[`${base}${name}`] = { bytes: writeSafetensors({ [`w${i}`]: { dtype: 'U8', shape: [100_000], data: fileBytes(100_000, i) } }), etag: `"s${i}"` };
      weightMap[`w${i}`] = name;
    }
    files[`${base}config.json`] = { bytes: new TextEncoder().encode('{}'), etag: '"c"' };
    files[`${base}model.safetensors.index.json`] = { bytes: new TextEncoder().encode(JSON.stringify({ weight_map: weightMap })), etag: '"i"' };
    const net = origin(files);
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 64 << 10, onWarning: (m) => expect.fail(m) });
    const checkpoint = await openCheckpoint(cache.wrap(urlDir(base, { fetch: net.fetch })));
    // Two small reads per shard (the 8-byte length, then the JSON), nothing of the tensors.
    expect(net.log.filter((l) => l.startsWith('GET bytes'))).toHaveLength(24);
    expect(rangeBytes(net.log)).toBeLessThan(12 * 200);
    expect(store.map.size).toBe(0);

    // Streaming a shard then fills the cache whole: a second visit needs no GET.
    const src = checkpoint.sources.get('model-3.safetensors')!;
    const got: number[] = [];
    await streamTensors(src, [checkpoint.tensors.get('w3')!], (_, chunk) => void got.push(...chunk));
    expect(got).toEqual(Array.from(fileBytes(100_000, 3)));
    expect(Reflect.get(src, 'recent')).toBeUndefined(); // the last chunk was read to its end: not held
    net.log.length = 0;
    const again = await cache.open(new UrlSource(`${base}model-3.safetensors`, undefined, { fetch: net.fetch }));
    expect(again.fromCache).toBe(true);
    await readSafetensorsHeader(again);
    expect(net.log).toEqual(['HEAD']);
  });

  it('a file read only in small pieces (a small checkpoint) is still stored whole, and served from the cache next time', async () => {
    const bytes = fileBytes(1000, 4);
    const net = origin({ [URL_A]: { bytes, etag: '"v1"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 128, smallReadBytes: 64 }); // every 37-byte read is small
    expect(await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })))).toEqual(Array.from(bytes));
    const second = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(second.fromCache).toBe(true);
    expect(await readAll(second)).toEqual(Array.from(bytes));
  });

  it('a header bigger than a chunk, read small, is still cached when the tensors are streamed', async () => {
    const model = writeSafetensors({ [`w${'x'.repeat(300)}`]: { dtype: 'U8', shape: [2000], data: fileBytes(2000, 5) } });
    const net = origin({ [URL_A]: { bytes: model, etag: '"v1"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 64, smallReadBytes: 1000 });
    const src = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    const header = await readSafetensorsHeader(src);
    expect(header.headerLength).toBeGreaterThan(128);
    expect(store.map.size).toBe(0);
    await streamTensors(src, [...header.tensors.values()], () => {});
    net.log.length = 0;
    const again = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(again.fromCache).toBe(true);
    expect(await readAll(again)).toEqual(Array.from(model));
    expect(net.log).toEqual(['HEAD']);
  });
});

describe('ShardCache: a file that changes during a load (F8)', () => {
  it('is refused, and the store never holds a mix or a complete marker for it', async () => {
    const v1 = fileBytes(300, 1);
    const v2 = fileBytes(300, 2);
    const net = origin({ [URL_A]: { bytes: v1, etag: '"v1"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 100, onWarning: (m) => expect.fail(m) });
    const src = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(Array.from(await src.read(0, 100))).toEqual(Array.from(v1.subarray(0, 100)));
    net.files[URL_A] = { bytes: v2, etag: '"v2"' }; // a new commit on main, mid-load
    const e = await src.read(100, 200).catch((x: Error) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect((e as Error).message).toMatch(/the file changed on the server during the load \(ETag "v1" at first, now "v2"\)/);
    expect([...store.map.keys()].some((k) => k.endsWith('complete'))).toBe(false);
    for (const [key, value] of store.map) {
      if (key.endsWith('|used')) continue;
      const n = Number(key.split('|').at(-1));
      expect(Array.from(new Uint8Array(await (value as Blob).arrayBuffer()))).toEqual(Array.from(v1.subarray(n * 100, n * 100 + 100)));
    }
    // The next load reads v2, all of it, and caches it.
    const next = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(next.fromCache).toBe(false);
    expect(await readAll(next)).toEqual(Array.from(v2));
    const cached = await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(cached.fromCache).toBe(true);
    expect(await readAll(cached)).toEqual(Array.from(v2));
  });

  it('a complete marker is served only if it records the size and validator the server gives now', async () => {
    const bytes = fileBytes(200, 1);
    const net = origin({ [URL_A]: { bytes, etag: '"v1"' } });
    const store = memoryStore();
    const cache = new ShardCache({ store, chunkBytes: 100 });
    await readAll(await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch })));
    const markerKey = [...store.map.keys()].find((k) => k.endsWith('complete'))!;
    expect(store.map.get(markerKey)).toEqual({ size: 200, chunkBytes: 100, chunks: 2, etag: '"v1"' });
    store.map.set(markerKey, { size: 200, chunkBytes: 100, chunks: 2, etag: '"v0"' });
    expect((await cache.open(new UrlSource(URL_A, undefined, { fetch: net.fetch }))).fromCache).toBe(false);
  });

  it('entries written by earlier versions (which could hold mixed bytes) are dropped', async () => {
    const bytes = fileBytes(200, 1);
    const net = origin({ [URL_A]: { bytes, etag: '"v1"' } });
    const store = memoryStore();
    const old = `shard|${encodeURIComponent(URL_A)}|${encodeURIComponent('etag:"v1"')};size=200;chunk=100|`;
    store.map.set(`${old}0`, new Blob([new Uint8Array(100)]));
    store.map.set(`${old}1`, new Blob([new Uint8Array(100)]));
    store.map.set(`${old}complete`, { size: 200, chunkBytes: 100, chunks: 2 });
    const src = await new ShardCache({ store, chunkBytes: 100 }).open(new UrlSource(URL_A, undefined, { fetch: net.fetch }));
    expect(src.fromCache).toBe(false);
    expect(await readAll(src)).toEqual(Array.from(bytes));
    expect([...store.map.keys()].some((k) => k.startsWith(old))).toBe(false);
  });
});
