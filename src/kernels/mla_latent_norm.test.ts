// mla_latent_norm on the GPU (SwiftShader here) against its reference, on odd shapes (rkv, dr / 2 and
// q_lora_rank multiples of nothing, row counts past one CPU workgroup), every reduction and both
// q_norm variants, outputs poisoned with NaN. With the thread and workgroup reductions the norms must
// equal the rmsnorm kernel's bit for bit (the same arithmetic in the same order) and lie within 1e-6
// of the float64 reference at rkv = 37. The subgroup reduction adds in the adapter's order (a vec2
// subgroupAdd here, a scalar one in rmsnorm), so it is held to the reference only, within
// rmsnorm.test.ts's 1e-5 (the f32 sum of squares' error, a few u·sqrt(n) at these widths, halved
// by the inverse square root). RoPE'd k_pe within rope_yarn.test.ts's bound of 1e-6 per pair of the
// float64 reference (positions < 4096); nothing outside the written rows moves.

import { describe, expect, it } from 'vitest';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { submitPass, type KernelContext } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { composeShader } from '../gpu/shader_compose.ts';
import { randn, relError, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import source from '../../shaders/mla_latent_norm.wgsl?raw';
import { createMlaLatentNorm, MLA_LATENT_NORM_AXES, MLA_LATENT_NORM_Q, MLA_LATENT_NORM_SNIPPETS, type MlaLatentNormOptions, type MlaLatentNormQ } from './mla_latent_norm.ts';
import { mlaLatentNormRef } from './mla_latent_norm.ref.ts';
import { createRmsNorm, RMSNORM_REDUCES, type RmsNormReduce } from './rmsnorm.ts';
import { ropeInvFreq } from './rope_tables.ts';

const [EPS, CACHE_ROWS] = [1e-6, 90];
const SUBGROUP_TOL = 1e-5;

const hasSubgroups = (await testGpu()).device.features.has('subgroups');
// The subgroup tests say so in their names: skipped (not failed) on a device without it.
const NEEDS_SUBGROUPS = "needs the device's 'subgroups' feature";

interface Shape {
  /** kv_lora_rank. */
  rkv: number;
  /** q_lora_rank (used by the q_a_layernorm variant). */
  qw: number;
  /** qk_rope_head_dim. */
  ropeDim: number;
}

const SHAPE: Shape = { rkv: 37, qw: 45, ropeDim: 10 };
// The subgroup reduction also at fewer columns and rope pairs than invocations, and past 256 of both
// with a remainder (kv_lora_rank 257, q_lora_rank 300, 33 pairs).
const SUBGROUP_SHAPES: Shape[] = [SHAPE, { rkv: 1, qw: 3, ropeDim: 2 }, { rkv: 257, qw: 300, ropeDim: 66 }];
// Invocations per row for the subgroup reduction: the adapter's default, one, SwiftShader's 4-lane
// subgroup, sizes that leave a partial subgroup there (6, 100) and many subgroups (32, 256).
const SUBGROUP_SIZES: (number | undefined)[] = [undefined, 1, 4, 6, 32, 100, 256];
// [rows, startPos]: one row at the start, a few in the middle, more than one 64-row CPU workgroup.
const STEPS: [number, number][] = [[1, 0], [5, 41], [70, 20]];

function invFreq(ropeDim: number): Float32Array {
  return ropeInvFreq({
    qk_rope_head_dim: ropeDim,
    rope_theta: 10000,
    rope_scaling: { factor: 8, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1 },
  });
}

/**
 * One step of `rows` rows written at startPos, checked against the reference and, where `bitsOf`
 * names a reduction, against the separate rmsnorm kernel of that reduction bit for bit.
 */
async function runStep(
  qNorm: MlaLatentNormQ, options: MlaLatentNormOptions, shape: Shape, rows: number, startPos: number, seed: number,
  check: { normTol: number; bitsOf?: RmsNormReduce },
): Promise<void> {
  const ctx = await testKernelContext();
  const { device } = ctx.gpu;
  const { rkv, qw } = shape;
  const ropeDim = shape.ropeDim;
  const width = rkv + ropeDim;
  const inv = invFreq(ropeDim);
  const kernel = createMlaLatentNorm(ctx, { qNorm, ...options });
  const what = `${JSON.stringify({ qNorm, ...options, ...shape })} (workgroup ${kernel.workgroupSize}) WEBMOE_SEED=${seed}: ${rows} rows at ${startPos}`;
  const next = rng(seed);
  const kvA = randn(next, rows * width, 2);
  const kvWeight = Float32Array.from({ length: rkv }, () => 1 + 0.2 * (next() - 0.5));
  const qA = randn(next, rows * qw, 3);
  const qWeight = Float32Array.from({ length: qw }, () => 1 + 0.2 * (next() - 0.5));
  const positions = Uint32Array.from({ length: rows }, () => Math.floor(next() * 4096));
  const buf = {
    kvA: uploadBuffer(device, kvA, 'kv_a'),
    kvNormWeight: uploadBuffer(device, kvWeight, 'kv_a_layernorm'),
    positions: uploadBuffer(device, positions, 'positions'),
    invFreq: uploadBuffer(device, inv, 'inv_freq'),
    // the layer's binding starts past a poisoned prefix (another layer's rows)
    cacheBuffer: uploadBuffer(device, new Float32Array(64 + CACHE_ROWS * width).fill(NaN), 'cache'),
    qA: uploadBuffer(device, qA, 'q_a'),
    qWeight: uploadBuffer(device, qWeight, 'q_a_layernorm'),
    qANorm: uploadBuffer(device, new Float32Array(rows * qw).fill(NaN), 'q_a_norm'),
    // the separate rmsnorm kernel's outputs, for the bit-for-bit comparison
    qNormSeparate: uploadBuffer(device, new Float32Array(rows * qw).fill(NaN), 'q_a_norm_separate'),
    kvNormSeparate: uploadBuffer(device, new Float32Array(rows * rkv).fill(NaN), 'c_hat_separate'),
  };
  const offset = 256; // bytes: a binding-aligned layer offset
  const cache = { buffer: buf.cacheBuffer, offset, size: 4 * CACHE_ROWS * width };
  const q = qNorm === 'q_a_layernorm' ? { width: qw, qA: buf.qA, weight: buf.qWeight, qANorm: buf.qANorm } : undefined;
  device.pushErrorScope('validation');
  // Prepared at position 0, then moved: the decode plan's way.
  const call = kernel.prepare({ rows, kvLoraRank: rkv, ropeDim, eps: EPS, ...buf, cache, cacheRows: CACHE_ROWS, startPos: 0, q });
  call.setStartPos(startPos);
  const separate = [];
  if (check.bitsOf) {
    const rmsnorm = createRmsNorm(ctx, { reduce: check.bitsOf });
    separate.push(
      rmsnorm.prepare({ rows, width: qw, eps: EPS, x: buf.qA, weight: buf.qWeight, y: buf.qNormSeparate }),
      rmsnorm.prepare({ rows, width: rkv, eps: EPS, x: buf.kvA, weight: buf.kvNormWeight, y: buf.kvNormSeparate, xLayout: { stride: width, offset: 0 } }),
    );
  }
  submitPass(device, call, ...separate);
  expect((await device.popErrorScope())?.message, what).toBeUndefined();
  const all = await readF32(device, buf.cacheBuffer);
  const gotQ = await readF32(device, buf.qANorm);
  const [qSeparate, kvSeparate] = [await readF32(device, buf.qNormSeparate), await readF32(device, buf.kvNormSeparate)];

  const wantCache = new Float32Array(CACHE_ROWS * width).fill(NaN);
  const wantQ = new Float32Array(rows * qw).fill(NaN);
  mlaLatentNormRef({
    rows, kvLoraRank: rkv, ropeDim, eps: EPS, kvA, kvNormWeight: kvWeight, positions, invFreq: inv, cache: wantCache, startPos,
    q: q && { width: qw, qA, weight: qWeight, qANorm: wantQ },
  });
  const got = all.subarray(offset / 4);
  expect(all.subarray(0, offset / 4).every(Number.isNaN), `${what}: before the layer's binding`).toBe(true);
  for (let i = 0; i < got.length; i++) {
    const t = Math.floor(i / width) - startPos;
    if (t < 0 || t >= rows) expect(Number.isNaN(got[i]), `${what}: cache[${i}] outside the step's rows was written`).toBe(true);
  }
  for (let t = 0; t < rows; t++) {
    const row = got.subarray((startPos + t) * width, (startPos + t + 1) * width);
    const want = wantCache.subarray((startPos + t) * width, (startPos + t + 1) * width);
    if (check.bitsOf) {
      expect(new Uint32Array(row.slice(0, rkv).buffer), `${what}: c_hat row ${t} vs rmsnorm`).toEqual(new Uint32Array(kvSeparate.slice(t * rkv, (t + 1) * rkv).buffer));
    }
    expect(relError(row.subarray(0, rkv), want.subarray(0, rkv)).rel, `${what}: c_hat row ${t}`).toBeLessThan(check.normTol);
    for (let i = rkv; i < width; i += 2) {
      const norm = Math.hypot(want[i], want[i + 1]);
      const err = Math.max(Math.abs(row[i] - want[i]), Math.abs(row[i + 1] - want[i + 1])) / norm;
      expect(err, `${what}: k_pe row ${t} pair ${(i - rkv) / 2}: got (${row[i]}, ${row[i + 1]}) want (${want[i]}, ${want[i + 1]})`).toBeLessThan(1e-6);
    }
  }
  if (q) {
    if (check.bitsOf) expect(new Uint32Array(gotQ.buffer), `${what}: q_a_norm vs rmsnorm`).toEqual(new Uint32Array(qSeparate.buffer));
    for (let t = 0; t < rows; t++) {
      const rowQ = (a: Float32Array) => a.subarray(t * qw, (t + 1) * qw);
      expect(relError(rowQ(gotQ), rowQ(wantQ)).rel, `${what}: q_a_norm row ${t}`).toBeLessThan(check.normTol);
    }
  } else {
    expect(gotQ.every(Number.isNaN), `${what}: no q_a_norm without the q norm`).toBe(true);
  }
  for (const c of [call, ...separate]) c.destroy();
  for (const b of Object.values(buf)) b.destroy();
}

describe('mla_latent_norm', () => {
  const cases = MLA_LATENT_NORM_Q.flatMap((qNorm) => (['thread', 'workgroup'] as const).map((reduce) => ({ qNorm, reduce })));
  it.each(cases)('q_norm $qNorm, reduce $reduce: q_a norm and cache rows [RMSNorm(c_kv) | RoPE(k_pe)], the rmsnorm kernel\'s bits', async ({ qNorm, reduce }) => {
    const seed = testSeed(`mla_latent_norm ${qNorm} ${reduce}`);
    for (const [i, [rows, startPos]] of STEPS.entries()) {
      await runStep(qNorm, { reduce }, SHAPE, rows, startPos, seed + i, { normTol: 1e-6, bitsOf: reduce });
    }
  });

  for (const qNorm of MLA_LATENT_NORM_Q) {
    it.skipIf(!hasSubgroups)(`q_norm ${qNorm}, reduce subgroup at workgroup sizes ${SUBGROUP_SIZES.map((s) => s ?? 'default').join(', ')}: within ${SUBGROUP_TOL} of the reference (${NEEDS_SUBGROUPS})`, async () => {
      const seed = testSeed(`mla_latent_norm ${qNorm} subgroup`);
      let i = 0;
      for (const subgroupWorkgroupSize of SUBGROUP_SIZES) {
        for (const shape of SUBGROUP_SHAPES) {
          for (const [rows, startPos] of STEPS) {
            await runStep(qNorm, { reduce: 'subgroup', subgroupWorkgroupSize }, shape, rows, startPos, seed + i++, { normTol: SUBGROUP_TOL });
          }
        }
      }
    });
  }

  it('keeps the older rowPerThread switch, and defaults by adapter', async () => {
    const ctx = await testKernelContext();
    expect(createMlaLatentNorm(ctx, { rowPerThread: true }).reduce).toBe('thread');
    expect(createMlaLatentNorm(ctx, { rowPerThread: false }).reduce).toBe('workgroup');
    expect(createMlaLatentNorm(ctx, { rowPerThread: true, reduce: 'workgroup' }).reduce).toBe('workgroup');
    expect(createMlaLatentNorm(ctx).reduce).toBe(ctx.gpu.adapter.isSoftware ? 'thread' : 'workgroup');
    expect(createMlaLatentNorm(ctx, { reduce: 'thread' }).workgroupSize).toBe(64);
    expect(createMlaLatentNorm(ctx, { reduce: 'workgroup' }).workgroupSize).toBe(256);
  });

  it("enables subgroups in the subgroup variant's WGSL only, before every declaration", () => {
    for (const q_norm of MLA_LATENT_NORM_Q) {
      for (const reduce of RMSNORM_REDUCES) {
        const composed = composeShader({ kernel: { name: 'mla_latent_norm.wgsl', code: source }, snippets: MLA_LATENT_NORM_SNIPPETS, axes: MLA_LATENT_NORM_AXES, variant: { q_norm, reduce } });
        const code = composed.replace(/\/\/.*$/gm, '').trim(); // the code, not the comments that name the builtins
        expect(code.startsWith('enable subgroups;'), `${q_norm} ${reduce}`).toBe(reduce === 'subgroup');
        expect(/subgroup(Add|Elect|ExclusiveAdd)/.test(code), `${q_norm} ${reduce}`).toBe(reduce === 'subgroup');
        expect(/workgroupBarrier/.test(code), `${q_norm} ${reduce}`).toBe(reduce !== 'thread');
      }
    }
  });

  it("refuses the subgroup reduction on a device without 'subgroups'", async () => {
    const gpu = await testGpu();
    // The same device, its feature list emptied: the check comes before any pipeline is made.
    const device = new Proxy(gpu.device, { get: (target, key) => (key === 'features' ? new Set<string>() : Reflect.get(target, key)) });
    const ctx: KernelContext = { gpu: { ...gpu, device } as Gpu, pipelines: new PipelineCache(gpu.device) };
    expect(() => createMlaLatentNorm(ctx, { reduce: 'subgroup' })).toThrow(GpuLimitError);
    expect(() => createMlaLatentNorm(ctx, { reduce: 'subgroup' })).toThrow(/'subgroups' feature/);
    expect(createMlaLatentNorm(ctx, { reduce: 'thread' }).reduce).toBe('thread');
  });

  it('refuses what it cannot compute with typed errors', async () => {
    const ctx = await testKernelContext();
    const { device } = ctx.gpu;
    expect(() => createMlaLatentNorm(ctx, { reduce: 'tree' as RmsNormReduce })).toThrow(/not a reduction/);
    expect(() => createMlaLatentNorm(ctx, { reduce: 'workgroup', subgroupWorkgroupSize: 32 })).toThrow(/subgroup reduction only/);
    if (hasSubgroups) {
      for (const size of [0, 2.5, 100000]) expect(() => createMlaLatentNorm(ctx, { reduce: 'subgroup', subgroupWorkgroupSize: size })).toThrow(/subgroupWorkgroupSize/);
    }
    const b = uploadBuffer(device, new Float32Array(4 * 47 * 8), 'b');
    const withQ = createMlaLatentNorm(ctx, { qNorm: 'q_a_layernorm' });
    const withoutQ = createMlaLatentNorm(ctx, { qNorm: 'none' });
    const q = { width: 45, qA: b, weight: b, qANorm: b };
    const ok = { rows: 4, kvLoraRank: SHAPE.rkv, ropeDim: SHAPE.ropeDim, eps: EPS, kvA: b, kvNormWeight: b, positions: b, invFreq: b, cache: b, cacheRows: 8, startPos: 0 };
    expect(() => withQ.prepare(ok)).toThrow(/q \(q_a and q_a_layernorm\) is given exactly to the q_a_layernorm variant/);
    expect(() => withoutQ.prepare({ ...ok, q })).toThrow(ArgumentError);
    expect(() => withoutQ.prepare({ ...ok, ropeDim: 9 })).toThrow(/ropeDim must be positive and even, got 9/);
    expect(() => withoutQ.prepare({ ...ok, startPos: 5 })).toThrow(/cache rows 5..8 do not fit its 8 positions/);
    expect(() => withoutQ.prepare({ ...ok, cacheRows: 40 })).toThrow(/cache holds 6016 bytes, needs 7520/);
    expect(() => withQ.prepare({ ...ok, q: { ...q, width: 400 } })).toThrow(/qA holds 6016 bytes, needs 6400/);
    const call = withoutQ.prepare(ok);
    expect(() => call.setStartPos(6)).toThrow(/do not fit/);
    call.destroy();
    b.destroy();
  });
});
