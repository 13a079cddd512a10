// MLA decode attention: the absorbed CPU reference against the naive form (CPU), then the GPU kernel
// (SwiftShader here) against the float64 references (mlaDecodeRef, then expandORef for W_UV), both
// variants (workgroup per item, item per invocation), on odd shapes, 1 and 2 query rows, contexts
// from 1 to 1000 positions (one split, where pass 1 goes on through W_UV itself, and up to 4 merged
// by pass 2 before expand_o), prefill chunks of 13 to 130 rows (from position 0 and after a cached
// prefix), and kv_b_proj in FP8 (distinct block scales), bf16 and f32. The subgroup reduction (where
// the device has 'subgroups'; skipped, saying so, elsewhere) on the same cases at workgroups of the
// default (one subgroup here), 1 (one lane), 6 and 100 (a partial subgroup after full ones) and 64
// (many subgroups), its merge pass included, and its WGSL alone enables subgroups.
// Bound: f32 dot products of <= 288 terms, f32 exp and sums over <= 1000 positions, then W_UV sums
// of <= 256 products, stay far below ‖out − ref‖/‖ref‖ < 1e-5. Cache rows past the context, o and
// o_lat start as NaN: a read past the causal limit or an unwritten output shows up as NaN.

import { describe, expect, it } from 'vitest';
import partialSource from '../../shaders/mla_decode.wgsl?raw';
import reduceSource from '../../shaders/mla_decode_reduce.wgsl?raw';
import subgroupsSource from '../../shaders/mla_decode_subgroups.wgsl?raw';
import type { Gpu } from '../gpu/device.ts';
import type { KernelContext } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { composeShader } from '../gpu/shader_compose.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { createMlaDecode, MLA_DECODE_CHUNK, MLA_DECODE_REDUCES, mlaDecodeCost, type MlaDecode, type MlaDecodeOptions, type MlaDecodeReduce } from './mla_decode.ts';
import { mlaDecodeRef, type MlaDecodeShape } from './mla_decode.ref.ts';
import { expandORef } from './mla_absorb.ref.ts';
import { dequantizeRef, type RefWeight } from './gemm_fp8.ref.ts';
import type { WeightFormat } from './matmul_operands.ts';
import { randomWeight } from '../testing/random_weights.ts';
import { submitPass } from '../gpu/kernel.ts';
import { ArgumentError } from '../errors.ts';

const TOL = 1e-5;

const hasSubgroups = (await testGpu()).device.features.has('subgroups');
// The subgroup tests say so in their names: skipped (not failed) on a device without it.
const NEEDS_SUBGROUPS = "needs the device's 'subgroups' feature";
// The subgroup reduction's workgroups: the default, one lane, a partial subgroup after full ones, many subgroups.
const SUBGROUP_SIZES: (number | undefined)[] = [undefined, 1, 6, 64, 100];

interface Case extends MlaDecodeShape {
  /** Cache positions written: startPos + rows. */
  context: number;
  /** qk_nope_head_dim and v_head_dim: where W_UV[h] lies in kv_b_proj, and its rows. */
  qkNopeHeadDim: number;
  vHeadDim: number;
}

interface Data {
  qLat: Float32Array;
  qPe: Float32Array;
  /** [maxT, rkv + dr], NaN past the context. */
  cache: Float32Array;
  maxT: number;
  startPos: number;
  softmaxScale: number;
  /** kv_b_proj.weight [heads * (dn + dv), rkv] and (fp8) its scales. */
  kvB: RefWeight;
}

const POISON_ROWS = 3;

function makeData(c: Case, seed: number, weights: WeightFormat = 'fp8'): Data {
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
    kvB: randomWeight(weights, c.heads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank, next),
  };
}

/** The two references: o_lat [rows, heads, rkv], and o = W_UV o_lat [rows, heads * dv]. */
function reference(c: Case, d: Data, startPos = d.startPos, cache = d.cache): { oLat: Float32Array; o: Float32Array } {
  const oLat = mlaDecodeRef({ ...c, startPos, softmaxScale: d.softmaxScale, qLat: d.qLat, qPe: d.qPe, cache });
  const kvB = dequantizeRef(d.kvB, c.heads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank);
  return { oLat, o: expandORef({ ...c, qkRopeHeadDim: c.ropeDim, kvB, oLat }) };
}

/** The buffers of one call: inputs uploaded, o and o_lat poisoned. */
function upload(device: GPUDevice, c: Case, d: Data, cacheValues = d.cache) {
  return {
    qLat: uploadBuffer(device, d.qLat, 'q_lat'),
    qPe: uploadBuffer(device, d.qPe, 'q_pe'),
    cache: uploadBuffer(device, cacheValues, 'cache'),
    oLat: uploadBuffer(device, new Float32Array(c.rows * c.heads * c.kvLoraRank).fill(Number.NaN), 'o_lat'),
    kvB: uploadBuffer(device, d.kvB.bytes, 'kv_b_proj'),
    kvBScale: d.kvB.scale ? uploadBuffer(device, d.kvB.scale, 'kv_b_proj.scale') : undefined,
    o: uploadBuffer(device, new Float32Array(c.rows * c.heads * c.vHeadDim).fill(Number.NaN), 'o'),
  };
}

/** o, and o_lat where the context spans more than one split (one split never writes it). */
async function runGpu(kernel: MlaDecode, c: Case, d: Data): Promise<{ o: Float32Array; oLat?: Float32Array }> {
  const { device } = await testGpu();
  const b = upload(device, c, d);
  device.pushErrorScope('validation');
  const op = kernel.prepare({ ...c, maxT: d.maxT, startPos: d.startPos, softmaxScale: d.softmaxScale, ...b });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const o = await readF32(device, b.o, c.rows * c.heads * c.vHeadDim);
  const oLat = c.context > MLA_DECODE_CHUNK ? await readF32(device, b.oLat, c.rows * c.heads * c.kvLoraRank) : undefined;
  for (const buffer of Object.values(b)) buffer?.destroy();
  op.destroy();
  return { o, oLat };
}

function expectClose(got: Float32Array, want: Float32Array, what: string): void {
  const err = relError(got, want);
  expect(err.rel, `${what}: worst at ${err.worst}: got ${got[err.worst]} want ${want[err.worst]}`).toBeLessThan(TOL);
}

async function checkCase(kernel: MlaDecode, c: Case, d: Data, what: string): Promise<void> {
  const want = reference(c, d);
  const got = await runGpu(kernel, c, d);
  expectClose(got.o, want.o, `${what} o`);
  if (got.oLat) expectClose(got.oLat, want.oLat, `${what} o_lat`);
}

// W_UV rows start inside 128-row scale blocks; dn, dv odd.
const SMALL = { heads: 3, kvLoraRank: 72, ropeDim: 8, qkNopeHeadDim: 7, vHeadDim: 5 };
const FIXTURE = { heads: 8, kvLoraRank: 256, ropeDim: 32, qkNopeHeadDim: 32, vHeadDim: 48 }; // dsv3-tiny-official
const CASES: Case[] = [
  { ...SMALL, rows: 1, context: 1 },
  { ...SMALL, rows: 2, context: 2 },
  { ...SMALL, rows: 1, context: 37 },
  { ...SMALL, rows: 2, context: 300 },
  // Row 0 attends to exactly one split, row 1 to one position of the next (an empty split for row 0).
  { ...SMALL, rows: 2, context: 257 },
  // A full group of 4 heads, then a partial one (the CPU variant's head groups).
  { heads: 6, kvLoraRank: 40, ropeDim: 4, qkNopeHeadDim: 3, vHeadDim: 9, rows: 2, context: 70 },
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
      expect(kernel.weights).toBe('fp8');
      const seed = testSeed(`mla_decode ${name}`);
      for (const [i, c] of CASES.entries()) await checkCase(kernel, c, makeData(c, seed + i), `${JSON.stringify(c)} ${name}`);
    });
  }

  it.skipIf(!hasSubgroups)(`matches the reference (reduce subgroup, workgroups of ${SUBGROUP_SIZES.map((n) => n ?? 'default').join(', ')}; ${NEEDS_SUBGROUPS})`, async () => {
    const ctx = await testKernelContext();
    const seed = testSeed('mla_decode subgroup');
    for (const subgroupWorkgroupSize of SUBGROUP_SIZES) {
      const kernel = createMlaDecode(ctx, { reduce: 'subgroup', subgroupWorkgroupSize });
      expect(kernel.reduce).toBe('subgroup');
      for (const [i, c] of CASES.entries()) await checkCase(kernel, c, makeData(c, seed + i), `${JSON.stringify(c)} subgroup workgroup ${subgroupWorkgroupSize ?? 'default'}`);
    }
  });

  it.each<WeightFormat>(['bf16', 'f32'])('reads kv_b_proj in %s, with one split and with two', async (weights) => {
    const seed = testSeed(`mla_decode ${weights}`);
    const options: MlaDecodeOptions[] = [{ reduce: 'workgroup' }, { reduce: 'thread' }, ...(hasSubgroups ? [{ reduce: 'subgroup' } as const] : [])];
    for (const option of options) {
      const kernel = createMlaDecode(await testKernelContext(), { weights, ...option });
      for (const c of [{ ...SMALL, rows: 2, context: 37 }, { ...SMALL, rows: 1, context: 300 }]) {
        await checkCase(kernel, c, makeData(c, seed + c.context, weights), `${weights} ${JSON.stringify(c)} reduce ${option.reduce}`);
      }
    }
  });

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
    const b = upload(device, c, d, shared);
    const op = kernel.prepare({ ...c, maxT: d.maxT, startPos: 0, softmaxScale: d.softmaxScale, ...b, cacheByteOffset: 4 * offsetFloats });
    // One split (<= 256 positions): pass 1 goes on through W_UV; two splits: pass 1, the merge, expand_o.
    const dispatches = () => {
      let n = 0;
      op.encode({ setPipeline() {}, setBindGroup() {}, dispatchWorkgroups: () => n++ } as unknown as GPUComputePassEncoder);
      return n;
    };
    for (const [startPos, passes] of [[0, 1], [255, 1], [256, 3], [299, 3]]) {
      op.setStartPos(startPos);
      expect(dispatches(), `dispatches at startPos ${startPos}`).toBe(passes);
      submitPass(device, op);
      const want = reference(c, d, startPos);
      expectClose(await readF32(device, b.o), want.o, `startPos ${startPos} o`);
    }
    expect(() => op.setStartPos(d.maxT)).toThrow(/does not fit/);
    op.destroy();
    for (const buffer of Object.values(b)) buffer?.destroy();
  });

  it('with one split gives bit for bit what the merge and expand_o give (the unfused path)', async () => {
    // Position 256 opens a second split whose one score is so low that the merge weighs it by
    // exp(m_1 - m_0) = 0: the two-split step (pass 1, the merge, expand_o) then computes the same
    // o_lat as the one-split step over positions 0 .. 255, and o from it.
    const { device } = await testGpu();
    for (const reduce of MLA_DECODE_REDUCES.filter((r) => r !== 'subgroup' || hasSubgroups)) {
      const kernel = createMlaDecode(await testKernelContext(), { reduce });
      const c: Case = { ...SMALL, rows: 1, context: MLA_DECODE_CHUNK + 1 };
      const d = makeData(c, testSeed(`mla_decode unfused ${reduce}`));
      const [rkv, dr] = [c.kvLoraRank, c.ropeDim];
      // Every head asks the same query, and cache row 256 is -100 times it: a score thousands below the others for every head.
      for (let h = 1; h < c.heads; h++) {
        d.qLat.copyWithin(h * rkv, 0, rkv);
        d.qPe.copyWithin(h * dr, 0, dr);
      }
      const last = MLA_DECODE_CHUNK * (rkv + dr);
      for (let j = 0; j < rkv; j++) d.cache[last + j] = -100 * d.qLat[j];
      for (let j = 0; j < dr; j++) d.cache[last + rkv + j] = -100 * d.qPe[j];
      const b = upload(device, c, d);
      const op = kernel.prepare({ ...c, maxT: d.maxT, startPos: MLA_DECODE_CHUNK - 1, softmaxScale: d.softmaxScale, ...b });
      submitPass(device, op);
      const fused = await readF32(device, b.o);
      op.setStartPos(MLA_DECODE_CHUNK);
      submitPass(device, op);
      const unfused = await readF32(device, b.o);
      expect(Array.from(fused), `reduce ${reduce}`).toEqual(Array.from(unfused));
      expectClose(fused, reference(c, d, MLA_DECODE_CHUNK - 1).o, `reduce ${reduce} against the reference`);
      op.destroy();
      for (const buffer of Object.values(b)) buffer?.destroy();
    }
  });

  it.skipIf(!hasSubgroups)(`steps through positions with setStartPos (reduce subgroup; ${NEEDS_SUBGROUPS})`, async () => {
    const { device } = await testGpu();
    const kernel = createMlaDecode(await testKernelContext(), { reduce: 'subgroup' });
    const c: Case = { ...SMALL, rows: 2, context: 600 };
    const d = makeData(c, testSeed('mla_decode subgroup steps'));
    const b = upload(device, c, d);
    const op = kernel.prepare({ ...c, maxT: d.maxT, startPos: 0, softmaxScale: d.softmaxScale, ...b });
    for (const startPos of [0, 254, 255, 511, 598]) {
      op.setStartPos(startPos);
      submitPass(device, op);
      expectClose(await readF32(device, b.o), reference(c, d, startPos).o, `startPos ${startPos} o`);
    }
    op.destroy();
    for (const buffer of Object.values(b)) buffer?.destroy();
  });

  it("enables subgroups in the subgroup variant's WGSL only (an adapter without them compiles the others)", () => {
    for (const reduce of MLA_DECODE_REDUCES) {
      const subgroup = reduce === 'subgroup';
      const pass1 = composeShader({
        kernel: { name: 'mla_decode.wgsl', code: partialSource },
        snippets: [{ name: 'mla_decode_subgroups.wgsl', code: subgroupsSource }],
        axes: { weights: ['fp8', 'bf16', 'f32'], reduce: MLA_DECODE_REDUCES },
        variant: { weights: 'f32', reduce },
      });
      const merge = composeShader({ kernel: { name: 'mla_decode_reduce.wgsl', code: reduceSource }, axes: { reduce: MLA_DECODE_REDUCES }, variant: { reduce } });
      for (const [name, composed] of [['pass 1', pass1], ['merge', merge]]) {
        const code = composed.replace(/\/\/.*$/gm, ''); // the code, not the comments that name the builtins
        expect(/^enable subgroups;$/m.test(code), `${name} ${reduce}`).toBe(subgroup);
        expect(/subgroup(Add|Max|Elect|ExclusiveAdd)/.test(code), `${name} ${reduce}`).toBe(subgroup);
      }
    }
  });

  it("refuses the subgroup reduction on a device without 'subgroups', and bad options", async () => {
    const gpu = await testGpu();
    const device = new Proxy(gpu.device, { get: (target, key) => (key === 'features' ? new Set<string>() : Reflect.get(target, key)) });
    const without: KernelContext = { gpu: { ...gpu, device } as Gpu, pipelines: new PipelineCache(gpu.device) };
    expect(() => createMlaDecode(without, { reduce: 'subgroup' })).toThrow(/'subgroups' feature/);
    expect(createMlaDecode(without, { reduce: 'thread' }).reduce).toBe('thread');
    const ctx = await testKernelContext();
    expect(createMlaDecode(ctx, { itemPerThread: true }).reduce).toBe('thread');
    expect(createMlaDecode(ctx, { itemPerThread: true, reduce: 'workgroup' }).reduce).toBe('workgroup');
    expect(() => createMlaDecode(ctx, { reduce: 'tree' as MlaDecodeReduce })).toThrow(/not a reduction/);
    expect(() => createMlaDecode(ctx, { reduce: 'workgroup', subgroupWorkgroupSize: 32 })).toThrow(/subgroup reduction only/);
    if (hasSubgroups) for (const size of [0, 2.5, 100000]) expect(() => createMlaDecode(ctx, { reduce: 'subgroup', subgroupWorkgroupSize: size })).toThrow(/subgroupWorkgroupSize/);
  });

  it('rejects a too-small buffer, a misaligned cache offset, a startPos past the cache, widths not multiples of 4, missing or extra scales', async () => {
    const { device } = await testGpu();
    const ctx = await testKernelContext();
    const kernel = createMlaDecode(ctx, { itemPerThread: true });
    const b = uploadBuffer(device, new Float32Array(64), 'b');
    const o = uploadBuffer(device, new Float32Array(12), 'o');
    const kvB = uploadBuffer(device, new Uint8Array(2 * (3 + 6) * 8), 'kv_b');
    const kvBScale = uploadBuffer(device, new Float32Array(1), 'scale');
    const args = {
      rows: 1, heads: 2, kvLoraRank: 8, ropeDim: 4, qkNopeHeadDim: 3, vHeadDim: 6, maxT: 4, startPos: 0, softmaxScale: 1, qLat: b, qPe: b, cache: b, oLat: b, kvB, kvBScale, o,
    };
    kernel.prepare(args).destroy();
    expect(() => kernel.prepare({ ...args, maxT: 8 })).toThrow(/cache holds 256 bytes, needs 384/);
    expect(() => kernel.prepare({ ...args, cacheByteOffset: 4 })).toThrow(/cacheByteOffset/);
    expect(() => kernel.prepare({ ...args, startPos: 4 })).toThrow(/does not fit/);
    expect(() => kernel.prepare({ ...args, ropeDim: 6 })).toThrow(/multiples of 4/);
    expect(() => kernel.prepare({ ...args, vHeadDim: 7 })).toThrow(/kvB holds 144 bytes, needs 160/);
    expect(() => kernel.prepare({ ...args, o: kvBScale })).toThrow(/o holds 4 bytes, needs 48/);
    expect(() => kernel.prepare({ ...args, kvBScale: undefined })).toThrow(ArgumentError);
    expect(() => kernel.prepare({ ...args, kvBScale: undefined })).toThrow(/kvBScale .*is required for fp8/);
    expect(() => createMlaDecode(ctx, { weights: 'f32' }).prepare(args)).toThrow(/kvBScale is not used by f32 weights/);
    expect(() => kernel.prepare({ ...args, qkNopeHeadDim: 0 })).toThrow(/qkNopeHeadDim must be a positive integer/);
    expect(() => kernel.prepare({ ...args, o: b })).toThrow(/o must not share a buffer with qLat/);
    expect(() => createMlaDecode(ctx, { weights: 'f16' as WeightFormat })).toThrow(/"f16" is not one of fp8, bf16, f32/);
    for (const buffer of [b, o, kvB, kvBScale]) buffer.destroy();
  });

  it('counts bytes and FLOPs', () => {
    // rows 2, heads 3, rkv 4, dr 2, startPos 1: 3 cache rows, attended 2 + 3 = 5, 1 split (no partials).
    expect(mlaDecodeCost({ rows: 2, heads: 3, kvLoraRank: 4, ropeDim: 2, startPos: 1 })).toEqual({
      bytes: 4 * (3 * 6 + 6 * 6 + 6 * 4),
      flops: 3 * 5 * (12 + 8),
    });
    // chunk 2, startPos 2: 4 cache rows, attended 3 + 4 = 7, 2 splits of 6 (row, head) partials of rkv + 2.
    expect(mlaDecodeCost({ rows: 2, heads: 3, kvLoraRank: 4, ropeDim: 2, startPos: 2 }, 2)).toEqual({
      bytes: 4 * (4 * 6 + 6 * 6 + 2 * 2 * 6 * 6 + 6 * 4),
      flops: 3 * 7 * (12 + 8) + 2 * 2 * 36,
    });
  });
});
