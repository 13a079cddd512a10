// MLA prefill attention: the CPU reference against T single-row decode references (mla_decode.ref.ts),
// then the GPU kernel (SwiftShader here) against the float64 reference, both variants (flash-attention
// workgroup per query tile, item per invocation), on odd shapes, chunks of 1 to 130 rows from position
// 0 and after a cached prefix (chunked prefill), contexts across the tile and chunk edges.
// Bound: f32 dot products of <= 576 terms, f32 exp and sums over <= 320 positions stay far below
// ‖out − ref‖/‖ref‖ < 1e-5. Cache rows past startPos + T - 1 and o_lat start as NaN: a read past the
// causal limit or an unwritten output shows up as NaN.

import { describe, expect, it } from 'vitest';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass } from '../gpu/kernel.ts';
import { randn, relError, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { mlaDecodeRef } from './mla_decode.ref.ts';
import { createMlaPrefill, mlaPrefillCost, type MlaPrefill } from './mla_prefill.ts';
import { mlaPrefillRef, type MlaPrefillShape } from './mla_prefill.ref.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

const TOL = 1e-5;
const POISON_ROWS = 3;

interface Case extends MlaPrefillShape {
  startPos: number;
}

interface Data {
  qLat: Float32Array;
  qPe: Float32Array;
  /** [maxT, rkv + dr], NaN past startPos + rows - 1. */
  cache: Float32Array;
  maxT: number;
  softmaxScale: number;
}

function makeData(c: Case, seed: number): Data {
  const next = rng(seed);
  const width = c.kvLoraRank + c.ropeDim;
  const context = c.startPos + c.rows;
  const maxT = context + POISON_ROWS;
  const cache = new Float32Array(maxT * width).fill(Number.NaN);
  cache.set(randn(next, context * width));
  return {
    // Scale 2 makes the softmax peaked enough that a wrong max or a missed position matters.
    qLat: randn(next, c.rows * c.heads * c.kvLoraRank, 2),
    qPe: randn(next, c.rows * c.heads * c.ropeDim, 2),
    cache,
    maxT,
    softmaxScale: 1 / Math.sqrt(width),
  };
}

const reference = (c: Case, d: Data) => mlaPrefillRef({ ...c, softmaxScale: d.softmaxScale, qLat: d.qLat, qPe: d.qPe, cache: d.cache });

async function runGpu(kernel: MlaPrefill, c: Case, d: Data): Promise<Float32Array> {
  const { device } = await testGpu();
  const n = c.rows * c.heads * c.kvLoraRank;
  const qLat = uploadBuffer(device, d.qLat, 'q_lat');
  // ropeDim 0 still binds one vec4 of q_pe.
  const qPe = uploadBuffer(device, d.qPe.length ? d.qPe : new Float32Array(4), 'q_pe');
  const cache = uploadBuffer(device, d.cache, 'cache');
  const oLat = uploadBuffer(device, new Float32Array(n).fill(Number.NaN), 'o_lat');
  device.pushErrorScope('validation');
  const op = kernel.prepare({ ...c, maxT: d.maxT, softmaxScale: d.softmaxScale, qLat, qPe, cache, oLat });
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
  { ...SMALL, rows: 1, startPos: 0 },
  { ...SMALL, rows: 5, startPos: 0 },
  { ...SMALL, rows: 33, startPos: 0 }, // two full query tiles of 16 and one row
  { ...SMALL, rows: 130, startPos: 0 },
  { ...SMALL, rows: 13, startPos: 17 }, // chunked prefill: a cached prefix, then the chunk
  // Contexts 128 and 129: the CPU variant's key chunk of 128 ends exactly, then one past.
  { ...SMALL, rows: 2, startPos: 127 },
  { ...FIXTURE, rows: 1, startPos: 0 },
  { ...FIXTURE, rows: 5, startPos: 0 },
  { ...FIXTURE, rows: 33, startPos: 17 },
  { ...FIXTURE, rows: 130, startPos: 0 },
  { ...FIXTURE, rows: 5, startPos: 300 },
  // rkv = 520: 130 vec4 columns, more than 64 invocations x 2 columns (the GPU variant's workgroup
  // grows to 96); no RoPE part.
  { heads: 2, kvLoraRank: 520, ropeDim: 0, rows: 20, startPos: 3 },
];

describe('mla_prefill reference', () => {
  it('equals T decode calls, one row each at startPos + s (mla_decode.ref.ts)', () => {
    const seed = testSeed('mla_prefill == decode rows');
    for (const [i, c] of [
      { ...SMALL, rows: 13, startPos: 17 },
      { ...SMALL, rows: 33, startPos: 0 },
      { ...FIXTURE, rows: 5, startPos: 40 },
    ].entries()) {
      const d = makeData(c, seed + i);
      const prefill = reference(c, d);
      const row = c.heads * c.kvLoraRank;
      for (let s = 0; s < c.rows; s++) {
        const decode = mlaDecodeRef({
          ...c,
          rows: 1,
          startPos: c.startPos + s,
          softmaxScale: d.softmaxScale,
          qLat: d.qLat.subarray(s * row, (s + 1) * row),
          qPe: d.qPe.subarray(s * c.heads * c.ropeDim, (s + 1) * c.heads * c.ropeDim),
          cache: d.cache,
        });
        const got = prefill.subarray(s * row, (s + 1) * row);
        expect(Number.isFinite(got[0])).toBe(true);
        // Both sum in float64 in different orders; only the f32 rounding of the output remains.
        expectClose(got, decode, `${JSON.stringify(c)} row ${s}`);
      }
    }
  });

  it('is causal: row s ignores position startPos + s + 1, row s + 1 sees it', () => {
    const c: Case = { ...SMALL, rows: 3, startPos: 4 };
    const d = makeData(c, testSeed('mla_prefill causal'));
    const width = c.kvLoraRank + c.ropeDim;
    const before = reference(c, d);
    const changed = d.cache.slice();
    const t = c.startPos + 1; // seen by rows 1 and 2 only
    changed.fill(7, t * width, (t + 1) * width);
    const after = reference(c, { ...d, cache: changed });
    const row = c.heads * c.kvLoraRank;
    expect(Array.from(after.subarray(0, row))).toEqual(Array.from(before.subarray(0, row)));
    expect(relError(after.subarray(row, 2 * row), before.subarray(row, 2 * row)).rel).toBeGreaterThan(1e-3);
  });
});

describe('mla_prefill kernel', () => {
  for (const isSoftware of [false, true]) {
    const name = isSoftware ? 'item per invocation' : 'flash-attention workgroup per query tile';
    it(`matches the reference (${name})`, async () => {
      const gpu = await testGpu();
    const { device } = gpu;
      const cache = new PipelineCache(device);
      const seed = testSeed(`mla_prefill ${name}`);
      for (const [i, c] of CASES.entries()) {
        const kernel = createMlaPrefill({ gpu, pipelines: cache }, { itemPerThread: isSoftware, kvLoraRank: c.kvLoraRank });
        if (c.kvLoraRank === 520 && !isSoftware) expect(kernel.workgroupSize).toBe(96);
        const d = makeData(c, seed + i);
        expectClose(await runGpu(kernel, c, d), reference(c, d), `${JSON.stringify(c)} ${name}`);
      }
    });
  }

  it('runs successive chunks with setStartPos, reading a layer at a byte offset of a shared cache', async () => {
    const gpu = await testGpu();
    const { device } = gpu;
    for (const isSoftware of [false, true]) {
      const kernel = createMlaPrefill({ gpu, pipelines: new PipelineCache(device) }, { itemPerThread: isSoftware, kvLoraRank: SMALL.kvLoraRank });
      const c: Case = { ...SMALL, rows: 7, startPos: 0 };
      const chunks = [0, 7, 14, 21]; // a 28-token prompt in chunks of 7
      const d = makeData({ ...c, startPos: 21 }, testSeed(`mla_prefill chunks ${isSoftware}`));
      const width = c.kvLoraRank + c.ropeDim;
      // Two layers of maxT rows: this layer is the second; the first is poison too.
      const offsetFloats = d.maxT * width + 64 - ((d.maxT * width) % 64); // 256-byte aligned
      const shared = new Float32Array(offsetFloats + d.cache.length).fill(Number.NaN);
      shared.set(d.cache, offsetFloats);
      const qLat = uploadBuffer(device, d.qLat, 'q_lat');
      const qPe = uploadBuffer(device, d.qPe, 'q_pe');
      const cache = uploadBuffer(device, shared, 'cache');
      const oLat = uploadBuffer(device, new Float32Array(c.rows * c.heads * c.kvLoraRank), 'o_lat');
      const op = kernel.prepare({
        ...c, maxT: d.maxT, softmaxScale: d.softmaxScale, qLat, qPe, cache, cacheByteOffset: 4 * offsetFloats, oLat,
      });
      for (const startPos of chunks) {
        op.setStartPos(startPos);
        expect(op.flops).toBe(mlaPrefillCost({ ...c, startPos }).flops);
        submitPass(device, op);
        const want = reference({ ...c, startPos }, d);
        expectClose(await readF32(device, oLat), want, `startPos ${startPos} isSoftware ${isSoftware}`);
      }
      expect(() => op.setStartPos(d.maxT - c.rows + 1)).toThrow(/does not fit/);
      op.destroy();
      for (const b of [qLat, qPe, cache, oLat]) b.destroy();
    }
  });

  it('rejects a too-small buffer, a misaligned cache offset, a startPos past the cache, bad widths', async () => {
    const gpu = await testGpu();
    const { device } = gpu;
    const pipelines = new PipelineCache(device);
    const kernel = createMlaPrefill({ gpu, pipelines: pipelines }, { itemPerThread: true, kvLoraRank: 8 });
    const b = uploadBuffer(device, new Float32Array(64), 'b');
    const args = { rows: 1, heads: 2, kvLoraRank: 8, ropeDim: 4, maxT: 4, startPos: 0, softmaxScale: 1, qLat: b, qPe: b, cache: b, oLat: b };
    expect(() => kernel.prepare({ ...args, maxT: 8 })).toThrow(/cache holds 256 bytes, needs 384/);
    expect(() => kernel.prepare({ ...args, cacheByteOffset: 4 })).toThrow(/cacheByteOffset/);
    expect(() => kernel.prepare({ ...args, rows: 2, startPos: 3 })).toThrow(/does not fit/);
    expect(() => kernel.prepare({ ...args, ropeDim: 6 })).toThrow(/multiples of 4/);
    expect(() => kernel.prepare({ ...args, kvLoraRank: 4 })).toThrow(/made for 8/);
    expect(() => createMlaPrefill({ gpu, pipelines: pipelines }, { itemPerThread: false, kvLoraRank: 6 })).toThrow(/kv_lora_rank 6/);
    expect(() => createMlaPrefill({ gpu, pipelines: pipelines }, { itemPerThread: false, kvLoraRank: 4 * 2 * 4096 })).toThrow(/invocations per workgroup/);
    b.destroy();
  });

  it('counts bytes and FLOPs', () => {
    // rows 2, heads 3, rkv 4, dr 2, startPos 1: one query tile reading 3 cache rows; attended 2 + 3 = 5.
    expect(mlaPrefillCost({ rows: 2, heads: 3, kvLoraRank: 4, ropeDim: 2, startPos: 1 })).toEqual({
      bytes: 4 * (3 * 6 + 6 * 6 + 6 * 4),
      flops: 3 * 5 * (12 + 8),
    });
    // 20 rows from 0: tiles of 16 and 4 rows read 16 and 20 cache rows.
    expect(mlaPrefillCost({ rows: 20, heads: 1, kvLoraRank: 4, ropeDim: 0, startPos: 0 }).bytes).toBe(4 * (36 * 4 + 20 * 4 + 20 * 4));
  });
});
