// MLA decode attention: the absorbed CPU reference against the naive form (CPU), then the GPU kernel
// (SwiftShader here) against the float64 reference, both variants (workgroup per item, item per
// invocation), on odd shapes, 1 and 2 query rows, contexts from 1 to 1000 positions, and prefill
// chunks of 13 to 130 rows (from position 0 and after a cached prefix).
// Bound: f32 dot products of <= 288 terms, f32 exp and sums over <= 1000 positions stay far below
// ‖out − ref‖/‖ref‖ < 1e-5. Cache rows past the context and o_lat start as NaN: a read past the
// causal limit or an unwritten output shows up as NaN.

import { describe, expect, it } from 'vitest';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { createMlaDecode, mlaDecodeCost, type MlaDecodeArgs, type PreparedMlaDecode } from './mla_decode.ts';
import type { Kernel } from '../gpu/kernel.ts';

type MlaDecode = Kernel<MlaDecodeArgs, PreparedMlaDecode>;
import { mlaDecodeRef, type MlaDecodeShape } from './mla_decode.ref.ts';
import { submitPass } from '../gpu/kernel.ts';

const TOL = 1e-5;

interface Case extends MlaDecodeShape {
  /** Cache positions written: startPos + rows. */
  context: number;
}

interface Data {
  qLat: Float32Array;
  qPe: Float32Array;
  /** [maxT, rkv + dr], NaN past the context. */
  cache: Float32Array;
  maxT: number;
  startPos: number;
  softmaxScale: number;
}

const POISON_ROWS = 3;

function makeData(c: Case, seed: number): Data {
  const next = rng(seed);
  const width = c.kvLoraRank + c.ropeDim;
  const maxT = c.context + POISON_ROWS;
  const cache = new Float32Array(maxT * width).fill(Number.NaN);
  cache.set(randn(next, c.context * width));
  return {
    // Scale 2 makes the softmax peaked enough that a wrong max or a missed position matters.
    qLat: randn(next, c.rows * c.heads * c.kvLoraRank, 2),
    qPe: randn(next, c.rows * c.heads * c.ropeDim, 2),
    cache,
    maxT,
    startPos: c.context - c.rows,
    softmaxScale: 1 / Math.sqrt(width),
  };
}

async function runGpu(kernel: MlaDecode, c: Case, d: Data): Promise<Float32Array> {
  const { device } = await testGpu();
  const n = c.rows * c.heads * c.kvLoraRank;
  const qLat = uploadBuffer(device, d.qLat, 'q_lat');
  const qPe = uploadBuffer(device, d.qPe, 'q_pe');
  const cache = uploadBuffer(device, d.cache, 'cache');
  const oLat = uploadBuffer(device, new Float32Array(n).fill(Number.NaN), 'o_lat');
  device.pushErrorScope('validation');
  const op = kernel.prepare({ ...c, maxT: d.maxT, startPos: d.startPos, softmaxScale: d.softmaxScale, qLat, qPe, cache, oLat });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const out = await readF32(device, oLat, n);
  for (const b of [qLat, qPe, cache, oLat]) b.destroy();
  op.destroy();
  return out;
}

function expectClose(got: Float32Array, want: Float32Array, what: string): void {
  const err = relError(got, want);
  expect(err.rel, `${what}: worst at ${err.worst}: got ${got[err.worst]} want ${want[err.worst]}`).toBeLessThan(TOL);
}

const SMALL = { heads: 3, kvLoraRank: 72, ropeDim: 8 };
const FIXTURE = { heads: 8, kvLoraRank: 256, ropeDim: 32 }; // dsv3-tiny-official
const CASES: Case[] = [
  { ...SMALL, rows: 1, context: 1 },
  { ...SMALL, rows: 2, context: 2 },
  { ...SMALL, rows: 1, context: 37 },
  { ...SMALL, rows: 2, context: 300 },
  // Row 0 attends to exactly one split, row 1 to one position of the next (an empty split for row 0).
  { ...SMALL, rows: 2, context: 257 },
  // A full group of 4 heads, then a partial one (the CPU variant's head groups).
  { heads: 6, kvLoraRank: 40, ropeDim: 4, rows: 2, context: 70 },
  { ...FIXTURE, rows: 1, context: 1 },
  { ...FIXTURE, rows: 2, context: 37 },
  { ...FIXTURE, rows: 1, context: 1000 },
  { ...FIXTURE, rows: 2, context: 1000 },
  // Prefill chunks (item 5 of the kernel issue): every row r attends causally to 0 .. startPos + r,
  // so the same kernel serves a chunk from position 0 and a chunk after a cached prefix.
  { ...SMALL, rows: 33, context: 33 },
  { ...SMALL, rows: 13, context: 30 },
  { ...FIXTURE, rows: 130, context: 130 },
];

describe('mla_decode reference', () => {
  it('equals the naive form: W_UV (absorbed attention) == attention over expanded k_nope and v', () => {
    const seed = testSeed('mla_decode naive');
    const next = rng(seed);
    const [rows, heads, rkv, dr, dn, dv, context] = [2, 3, 20, 6, 7, 5, 11];
    const width = rkv + dr;
    const startPos = context - rows;
    const softmaxScale = 1 / Math.sqrt(dn + dr);
    const wUK = randn(next, heads * dn * rkv, 0.5); // [H, dn, rkv]
    const wUV = randn(next, heads * dv * rkv, 0.5); // [H, dv, rkv]
    const qNope = randn(next, rows * heads * dn); // [R, H, dn]
    const qPe = randn(next, rows * heads * dr); // [R, H, dr]
    const cache = randn(next, context * width); // [T, rkv + dr]

    // Naive: k_nope[t, h] = W_UK[h] c_hat[t], v[t, h] = W_UV[h] c_hat[t], causal softmax attention.
    const project = (w: Float32Array, rowsOut: number, h: number, t: number, i: number) => {
      let s = 0;
      for (let j = 0; j < rkv; j++) s += w[(h * rowsOut + i) * rkv + j] * cache[t * width + j];
      return s;
    };
    const naive = new Float64Array(rows * heads * dv);
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < heads; h++) {
        const scores: number[] = [];
        for (let t = 0; t <= startPos + r; t++) {
          let dot = 0;
          for (let i = 0; i < dn; i++) dot += qNope[(r * heads + h) * dn + i] * project(wUK, dn, h, t, i);
          for (let i = 0; i < dr; i++) dot += qPe[(r * heads + h) * dr + i] * cache[t * width + rkv + i];
          scores.push(dot * softmaxScale);
        }
        const max = Math.max(...scores);
        const p = scores.map((s) => Math.exp(s - max));
        const sum = p.reduce((a, b) => a + b, 0);
        for (let i = 0; i < dv; i++) {
          let o = 0;
          for (let t = 0; t < p.length; t++) o += p[t] * project(wUV, dv, h, t, i);
          naive[(r * heads + h) * dv + i] = o / sum;
        }
      }
    }

    // Absorbed: q_lat = q_nope W_UK, attention over the latent, then o = W_UV o_lat.
    const qLat = new Float32Array(rows * heads * rkv);
    for (let rh = 0; rh < rows * heads; rh++) {
      const h = rh % heads;
      for (let j = 0; j < rkv; j++) {
        let s = 0;
        for (let i = 0; i < dn; i++) s += qNope[rh * dn + i] * wUK[(h * dn + i) * rkv + j];
        qLat[rh * rkv + j] = s;
      }
    }
    const oLat = mlaDecodeRef({ rows, heads, kvLoraRank: rkv, ropeDim: dr, startPos, softmaxScale, qLat, qPe, cache });
    const absorbed = new Float64Array(rows * heads * dv);
    for (let rh = 0; rh < rows * heads; rh++) {
      const h = rh % heads;
      for (let i = 0; i < dv; i++) {
        let s = 0;
        for (let j = 0; j < rkv; j++) s += wUV[(h * dv + i) * rkv + j] * oLat[rh * rkv + j];
        absorbed[rh * dv + i] = s;
      }
    }
    // Only the f32 storage of q_lat and o_lat separates the two.
    expect(relError(absorbed, naive).rel).toBeLessThan(1e-6);
  });

  it('is causal: row 0 ignores position startPos + 1, row 1 sees it', () => {
    const c: Case = { ...SMALL, rows: 2, context: 5 };
    const d = makeData(c, testSeed('mla_decode causal'));
    const ref = (cache: Float32Array) => mlaDecodeRef({ ...c, startPos: d.startPos, softmaxScale: d.softmaxScale, qLat: d.qLat, qPe: d.qPe, cache });
    const before = ref(d.cache);
    const changed = d.cache.slice();
    changed.fill(7, (c.context - 1) * (c.kvLoraRank + c.ropeDim), c.context * (c.kvLoraRank + c.ropeDim));
    const after = ref(changed);
    const half = c.heads * c.kvLoraRank;
    expect(Array.from(after.subarray(0, half))).toEqual(Array.from(before.subarray(0, half)));
    expect(relError(after.subarray(half), before.subarray(half)).rel).toBeGreaterThan(1e-3);
  });
});

describe('mla_decode kernel', () => {
  for (const isSoftware of [false, true]) {
    const name = isSoftware ? 'item per invocation' : 'workgroup per item';
    it(`matches the reference (${name})`, async () => {
      const kernel = createMlaDecode(await testKernelContext(), { itemPerThread: isSoftware });
      const seed = testSeed(`mla_decode ${name}`);
      for (const [i, c] of CASES.entries()) {
        const d = makeData(c, seed + i);
        const want = mlaDecodeRef({ ...c, startPos: d.startPos, softmaxScale: d.softmaxScale, qLat: d.qLat, qPe: d.qPe, cache: d.cache });
        expectClose(await runGpu(kernel, c, d), want, `${JSON.stringify(c)} ${name}`);
      }
    });
  }

  it('steps through positions with setStartPos, reading a layer at a byte offset of a shared cache', async () => {
    const { device } = await testGpu();
    const kernel = createMlaDecode(await testKernelContext(), { itemPerThread: true });
    const c: Case = { ...SMALL, rows: 1, context: 300 };
    const d = makeData(c, testSeed('mla_decode steps'));
    const width = c.kvLoraRank + c.ropeDim;
    // Two layers of maxT rows: this layer is the second; the first is poison too.
    const offsetFloats = d.maxT * width + 64 - ((d.maxT * width) % 64); // 256-byte aligned
    const shared = new Float32Array(offsetFloats + d.cache.length).fill(Number.NaN);
    shared.set(d.cache, offsetFloats);
    const qLat = uploadBuffer(device, d.qLat, 'q_lat');
    const qPe = uploadBuffer(device, d.qPe, 'q_pe');
    const cache = uploadBuffer(device, shared, 'cache');
    const oLat = uploadBuffer(device, new Float32Array(c.heads * c.kvLoraRank), 'o_lat');
    const op = kernel.prepare({
      ...c, maxT: d.maxT, startPos: 0, softmaxScale: d.softmaxScale, qLat, qPe, cache, cacheByteOffset: 4 * offsetFloats, oLat,
    });
    for (const startPos of [0, 255, 256, 299]) {
      op.setStartPos(startPos);
      submitPass(device, op);
      const want = mlaDecodeRef({ ...c, startPos, softmaxScale: d.softmaxScale, qLat: d.qLat, qPe: d.qPe, cache: d.cache });
      expectClose(await readF32(device, oLat), want, `startPos ${startPos}`);
    }
    expect(() => op.setStartPos(d.maxT)).toThrow(/does not fit/);
    op.destroy();
    for (const b of [qLat, qPe, cache, oLat]) b.destroy();
  });

  it('rejects a too-small buffer, a misaligned cache offset, a startPos past the cache, widths not multiples of 4', async () => {
    const { device } = await testGpu();
    const kernel = createMlaDecode(await testKernelContext(), { itemPerThread: true });
    const b = uploadBuffer(device, new Float32Array(64), 'b');
    const args = { rows: 1, heads: 2, kvLoraRank: 8, ropeDim: 4, maxT: 4, startPos: 0, softmaxScale: 1, qLat: b, qPe: b, cache: b, oLat: b };
    expect(() => kernel.prepare({ ...args, maxT: 8 })).toThrow(/cache holds 256 bytes, needs 384/);
    expect(() => kernel.prepare({ ...args, cacheByteOffset: 4 })).toThrow(/cacheByteOffset/);
    expect(() => kernel.prepare({ ...args, startPos: 4 })).toThrow(/does not fit/);
    expect(() => kernel.prepare({ ...args, ropeDim: 6 })).toThrow(/multiples of 4/);
    b.destroy();
  });

  it('counts bytes and FLOPs', () => {
    // rows 2, heads 3, rkv 4, dr 2, startPos 1: 3 cache rows, attended 2 + 3 = 5, 1 split.
    expect(mlaDecodeCost({ rows: 2, heads: 3, kvLoraRank: 4, ropeDim: 2, startPos: 1 })).toEqual({
      bytes: 4 * (3 * 6 + 6 * 6 + 2 * 6 * 6 + 6 * 4),
      flops: 3 * 5 * (12 + 8) + 2 * 36,
    });
  });
});
