// embed_gather on the GPU (SwiftShader here) against embedGatherRef: every dtype, odd d (rows that
// start inside a word for bf16 / f16), vocab 320 and 1001, T = 1, 3, 40, repeated ids, ids past the
// table, h poisoned with NaN first. A gather moves bits, so the comparison is bit for bit; the
// tables are random bit patterns (every exponent: zeros, subnormals, infinities), NaN excluded
// because the reference decodes through JS numbers.

import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../gpu/device.ts';
import { readU32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass } from '../gpu/kernel.ts';
import { rng, testGpu, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { createEmbedGather, EMBED_DTYPES, embedGatherCost, type EmbedDtype, type EmbedGatherOptions } from './embed_gather.ts';
import { embedGatherRef } from './embed_gather.ref.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

const gather = (options: EmbedGatherOptions) => createEmbedGather({ gpu, pipelines: cache }, options);

/** [vocab, d] random non-NaN bit patterns of `dtype`, as checkpoint bytes; row 0 holds the edge values. */
function randomTable(dtype: EmbedDtype, vocab: number, d: number, next: () => number): Uint8Array {
  const n = vocab * d;
  if (dtype === 'f32') {
    const bits = Uint32Array.from({ length: n }, () => {
      const b = (next() * 2 ** 32) >>> 0;
      return (b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0 ? b & 0xff800000 : b; // NaN -> inf
    });
    bits.set([0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x7f800000, 0xff800000, 0x7f7fffff].slice(0, d));
    return new Uint8Array(bits.buffer);
  }
  // bf16: exponent 8 bits (mask 0x7f80); f16: 5 bits (mask 0x7c00).
  const expMask = dtype === 'bf16' ? 0x7f80 : 0x7c00;
  const bits = Uint16Array.from({ length: n }, () => {
    const b = Math.floor(next() * 0x10000);
    return (b & expMask) === expMask && (b & ~expMask & 0x7fff) !== 0 ? b & (0x8000 | expMask) : b;
  });
  bits.set([0x0000, 0x8000, 0x0001, 0x8001, expMask - 1, expMask, 0x8000 | expMask].slice(0, d));
  return new Uint8Array(bits.buffer);
}

/** Ids for T tokens with repeats and out-of-range ids where T allows. */
function tokenIds(T: number, vocab: number, next: () => number): Uint32Array {
  if (T === 1) return new Uint32Array([vocab - 1]);
  if (T === 3) return new Uint32Array([0, vocab, 0]);
  const ids = Uint32Array.from({ length: T }, () => Math.floor(next() * vocab));
  ids.set([0, vocab - 1, ids[2], ids[2], 0xffffffff, vocab], 3);
  return ids;
}

const POISON = 0x7fc00000; // NaN

async function run(dtype: EmbedDtype, table: Uint8Array, vocab: number, d: number, ids: Uint32Array, workgroupSize?: number) {
  const { device } = gpu;
  const T = ids.length;
  const tail = 5; // elements past h that must stay untouched
  const idsBuffer = uploadBuffer(device, ids, 'ids');
  const tableBuffer = uploadBuffer(device, table, 'table');
  const hBuffer = uploadBuffer(device, new Uint32Array(T * d + tail).fill(POISON), 'h');
  device.pushErrorScope('validation');
  const call = gather({ dtype, workgroupSize }).prepare({ T, vocab, d, ids: idsBuffer, table: tableBuffer, h: hBuffer });
  submitPass(device, call);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const h = await readU32(device, hBuffer, T * d + tail);
  call.destroy();
  for (const b of [idsBuffer, tableBuffer, hBuffer]) b.destroy();
  return { h: h.subarray(0, T * d), tail: Array.from(h.subarray(T * d)) };
}

function expectBitsEqual(got: Uint32Array, want: Float32Array, what: string): void {
  const wantBits = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const i = got.findIndex((bits, k) => bits !== wantBits[k]);
  const show = (bits: number) => `0x${bits.toString(16)} (${new Float32Array(new Uint32Array([bits]).buffer)[0]})`;
  expect(i, i < 0 ? what : `${what}: h[${i}] = ${show(got[i])}, want ${show(wantBits[i])}`).toBe(-1);
}

describe.each(EMBED_DTYPES)('embed_gather %s', (dtype) => {
  it('gathers exactly on odd d, two vocab sizes, T = 1, 3, 40, repeated and out-of-range ids', async () => {
    const next = rng(testSeed(`embed_gather ${dtype}`));
    for (const vocab of [320, 1001]) {
      for (const d of [7, 129, 301]) {
        const table = randomTable(dtype, vocab, d, next);
        for (const T of [1, 3, 40]) {
          const ids = tokenIds(T, vocab, next);
          const what = `vocab=${vocab} d=${d} T=${T}`;
          const { h, tail } = await run(dtype, table, vocab, d, ids);
          const want = embedGatherRef({ dtype, table, vocab, d, ids });
          expectBitsEqual(h, want, what);
          expect(tail, `${what}: written past h`).toEqual(new Array(tail.length).fill(POISON));
        }
      }
    }
  });
});

describe('embed_gather', () => {
  it('writes zeros for ids >= vocab', async () => {
    const vocab = 320;
    const d = 9;
    const table = randomTable('bf16', vocab, d, rng(1));
    const { h } = await run('bf16', table, vocab, d, new Uint32Array([vocab, 5, 0xffffffff]));
    expect(Array.from(h.subarray(0, d))).toEqual(new Array(d).fill(0));
    expect(Array.from(h.subarray(2 * d))).toEqual(new Array(d).fill(0));
  });

  it.each(EMBED_DTYPES)('gathers from a %s table split by rows, one call per piece in any order, bit for bit', async (dtype) => {
    const { device } = gpu;
    const next = rng(testSeed(`embed_gather pieces ${dtype}`));
    const [vocab, d, T] = [1001, 129, 40];
    const table = randomTable(dtype, vocab, d, next);
    const ids = tokenIds(T, vocab, next);
    const want = embedGatherRef({ dtype, table, vocab, d, ids });
    const rowBytes = table.byteLength / vocab;
    for (const pieceRows of [1000, 333, 1]) {
      const firsts = Array.from({ length: Math.ceil(vocab / pieceRows) }, (_, k) => k * pieceRows).reverse(); // row 0's piece last
      const idsBuffer = uploadBuffer(device, ids, 'ids');
      const hBuffer = uploadBuffer(device, new Uint32Array(T * d).fill(POISON), 'h');
      const owned: { destroy(): void }[] = [idsBuffer, hBuffer];
      const calls = firsts.map((firstRow) => {
        const rows = Math.min(pieceRows, vocab - firstRow);
        const piece = uploadBuffer(device, table.slice(firstRow * rowBytes, (firstRow + rows) * rowBytes), `rows ${firstRow}`);
        const call = gather({ dtype }).prepare({ T, vocab, d, firstRow, rows, ids: idsBuffer, table: piece, h: hBuffer });
        owned.push(piece, call);
        return call;
      });
      submitPass(device, ...calls);
      expectBitsEqual(await readU32(device, hBuffer, T * d), want, `pieces of ${pieceRows} rows`);
      for (const o of owned) o.destroy();
    }
  });

  it('spreads more workgroups than one grid dimension holds over two', async () => {
    // workgroupSize 1 and T * d = 67199 > 65535 workgroups: checks the (x, y) flattening.
    const [vocab, d, T] = [320, 1639, 41];
    const next = rng(testSeed('embed_gather grid'));
    const table = randomTable('f16', vocab, d, next);
    const ids = tokenIds(T, vocab, next);
    const { h } = await run('f16', table, vocab, d, ids, 1);
    expectBitsEqual(h, embedGatherRef({ dtype: 'f16', table, vocab, d, ids }), 'grid');
  });

  it('reads ids from a binding at an offset (the sampled id beside other values)', async () => {
    const { device } = gpu;
    const [vocab, d] = [320, 7];
    const table = randomTable('bf16', vocab, d, rng(2));
    const words = new Uint32Array(64 + 2).fill(0xffffffff);
    words.set([17, 301], 64);
    const idsBuffer = uploadBuffer(device, words, 'ids');
    const tableBuffer = uploadBuffer(device, table, 'table');
    const hBuffer = uploadBuffer(device, new Uint32Array(2 * d).fill(POISON), 'h');
    const call = gather({ dtype: 'bf16' }).prepare({ T: 2, vocab, d, ids: { buffer: idsBuffer, offset: 256, size: 8 }, table: tableBuffer, h: hBuffer });
    submitPass(device, call);
    const h = await readU32(device, hBuffer, 2 * d);
    expectBitsEqual(h, embedGatherRef({ dtype: 'bf16', table, vocab, d, ids: new Uint32Array([17, 301]) }), 'offset ids');
    call.destroy();
    for (const b of [idsBuffer, tableBuffer, hBuffer]) b.destroy();
  });

  it('rejects bad shapes and buffers too small for them', () => {
    const { device } = gpu;
    const b = uploadBuffer(device, new Uint32Array(8), 'b');
    const kernel = gather({ dtype: 'f32' });
    expect(() => kernel.prepare({ T: 0, vocab: 2, d: 2, ids: b, table: b, h: b })).toThrow(ArgumentError);
    expect(() => kernel.prepare({ T: 1, vocab: 3, d: 3, ids: b, table: b, h: b })).toThrow(/table holds 32 bytes.*needs 36/);
    expect(() => kernel.prepare({ T: 3, vocab: 2, d: 3, ids: b, table: b, h: b })).toThrow(/h holds 32 bytes/);
    expect(() => gather({ dtype: 'fp8' as EmbedDtype })).toThrow(ArgumentError);
    expect(() => kernel.prepare({ T: 1, vocab: 8, d: 1, firstRow: 6, rows: 3, ids: b, table: b, h: b })).toThrow(/rows 6 \.\. 8 are not rows of a 8-row table/);
    expect(() => kernel.prepare({ T: 1, vocab: 100, d: 2, firstRow: 90, rows: 4, ids: b, table: b, h: b }).destroy()).not.toThrow(); // a piece is checked against its own rows
    b.destroy();
  });

  it('counts bytes', () => {
    expect(embedGatherCost({ T: 2, d: 10, dtype: 'bf16' })).toEqual({ bytes: 8 + 40 + 80, flops: 0 });
    expect(embedGatherCost({ T: 2, d: 10, dtype: 'f32' })).toEqual({ bytes: 8 + 80 + 80, flops: 0 });
  });
});
