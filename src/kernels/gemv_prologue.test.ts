// gemv_fp8's norm prologue and residual epilogue (decode plans, src/model/layer.ts) against the CPU
// references: y = RMSNorm(h) * g · Wᵀ (rmsNormRef, then matmulRef), the rmsnorm_write rows against
// rmsNormRef, and ACCUMULATE (y += x Wᵀ) against y0 + matmulRef. Every strategy that runs here, the
// three weight formats, one and two Linears, M = 1 .. 4, N and K multiples of neither 4 nor 128,
// workgroups of 1, 6 and 64 (all of a workgroup_per_row tree, partial subgroups).
// Bounds as gemv_fp8.test.ts: ‖y − ref‖/‖ref‖ < 1e-5 (the 1 / rms moves out of the sum, a rounding
// apart from normalising first); the written rows < 1e-6.

import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../gpu/device.ts';
import { rng, randn, testGpu, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { matmulRef, type RefWeight } from './gemm_fp8.ref.ts';
import { createGemv, GEMV_STRATEGIES, type GemvOptions, type GemvPrologue, type GemvStrategy } from './gemv_fp8.ts';
import type { WeightFormat } from './matmul_operands.ts';
import { rmsNormRef } from './rmsnorm.ref.ts';
import { expectClose, poisonedOutput, randomWeight, uploadWeight } from '../testing/matmul_testing.ts';

const hasSubgroups = (await testGpu()).device.features.has('subgroups');
const STRATEGIES = GEMV_STRATEGIES.filter((s) => s !== 'subgroup_per_row' || hasSubgroups);
const FORMATS: WeightFormat[] = ['fp8', 'bf16', 'f32'];
const EPS = 1e-6;

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

const gemv = (options: GemvOptions) => createGemv({ gpu, pipelines: cache }, options);

/** RMSNorm(h) * g for M rows of K (rmsNormRef, float64 inside). */
function normed(h: Float32Array, g: Float32Array, M: number, K: number): Float32Array {
  const y = new Float32Array(M * K);
  rmsNormRef({ rows: M, width: K, eps: EPS, x: h.slice(), weight: g, y });
  return y;
}

interface Case {
  strategy: GemvStrategy;
  weights: WeightFormat;
  prologue: Exclude<GemvPrologue, 'none'>;
  workgroupSize: number;
  /** Rows of W, and of W_b for two Linears. */
  N: readonly number[];
  K: number;
  accumulate: boolean;
}

/** Runs one case for M = 1 .. 4 and checks every output against the references. */
async function check({ strategy, weights, prologue, workgroupSize, N, K, accumulate }: Case, next: () => number, what: string): Promise<void> {
  const device = gpu.device;
  const two = N.length === 2;
  const kernel = gemv({ weights, strategy, workgroupSize, prologue, linears: two ? 'two' : 'one' });
  const w: RefWeight[] = N.map((n) => randomWeight(weights, n, K, next));
  for (let M = 1; M <= 4; M++) {
    // a residual stream of some scale, and a norm weight around 1
    const h = randn(next, M * K).map((v) => 3 * v);
    const g = randn(next, K).map((v) => 1 + 0.5 * v);
    const y0 = N.map((n) => randn(next, M * n));
    const x = normed(h, g, M, K);
    const hBuf = uploadBuffer(device, h, 'h');
    const gBuf = uploadBuffer(device, g, 'norm_weight');
    const xNormed = prologue === 'rmsnorm_write' ? poisonedOutput(device, M * K, 'x_normed') : undefined;
    const uploaded = w.map((wi) => uploadWeight(device, wi));
    const ys = N.map((n, i) => (accumulate ? uploadBuffer(device, y0[i], 'y') : poisonedOutput(device, M * n)));
    const call = kernel.prepare({
      M, N: N[0], K, x: hBuf, ...uploaded[0], y: ys[0], accumulate,
      norm: { weight: gBuf, eps: EPS, xNormed },
      second: two ? { N: N[1], ...uploaded[1], y: ys[1] } : undefined,
    });
    try {
      submitPass(device, call);
      for (const [i, n] of N.entries()) {
        const ref = matmulRef({ M, N: n, K, weight: w[i], activations: { numerics: 'weight_only', x } });
        if (accumulate) ref.forEach((v, j) => (ref[j] = v + y0[i][j]));
        expectClose(await readF32(device, ys[i], M * n), ref, 1e-5, `${what} M=${M} Linear ${i}`);
      }
      if (xNormed) expectClose(await readF32(device, xNormed, M * K), x, 1e-6, `${what} M=${M} x_normed`);
    } finally {
      call.destroy();
      for (const b of [hBuf, gBuf, xNormed, ...ys, ...uploaded.flatMap((u) => [u.weight, u.weight_scale_inv])]) b?.destroy();
    }
  }
}

describe.each(STRATEGIES)('gemv_fp8 %s with a norm prologue', (strategy) => {
  it.each(FORMATS)('%s weights: RMSNorm(h) * g · Wᵀ, and the normed rows written, at odd shapes', async (weights) => {
    const seed = testSeed(`gemv prologue ${strategy} ${weights}`);
    const next = rng(seed);
    for (const [N, K] of [[150, 203], [39, 130], [6, 5]] as const) {
      for (const prologue of ['rmsnorm', 'rmsnorm_write'] as const) {
        await check({ strategy, weights, prologue, workgroupSize: 64, N: [N], K, accumulate: false }, next, `seed ${seed} ${prologue} N=${N} K=${K}`);
      }
    }
  });

  it('two Linears share the prologue (q_a_proj and kv_a_proj_with_mqa over the normed h)', async () => {
    const seed = testSeed(`gemv prologue two ${strategy}`);
    const next = rng(seed);
    for (const weights of FORMATS) {
      await check({ strategy, weights, prologue: 'rmsnorm', workgroupSize: 64, N: [129, 39], K: 204, accumulate: false }, next, `seed ${seed} ${weights}`);
    }
  });

  it('ACCUMULATE adds into y (o_proj into the residual stream), with and without a prologue', async () => {
    const seed = testSeed(`gemv accumulate ${strategy}`);
    const next = rng(seed);
    const device = gpu.device;
    for (const weights of FORMATS) {
      await check({ strategy, weights, prologue: 'rmsnorm', workgroupSize: 64, N: [150], K: 203, accumulate: true }, next, `seed ${seed} ${weights} prologue`);
      const [N, K, M] = [39, 130, 3];
      const w = randomWeight(weights, N, K, next);
      const x = randn(next, M * K);
      const y0 = randn(next, M * N);
      const [xBuf, yBuf, u] = [uploadBuffer(device, x, 'x'), uploadBuffer(device, y0, 'y'), uploadWeight(device, w)];
      const call = gemv({ weights, strategy }).prepare({ M, N, K, x: xBuf, y: yBuf, ...u, accumulate: true });
      submitPass(device, call);
      const ref = matmulRef({ M, N, K, weight: w, activations: { numerics: 'weight_only', x } }).map((v, j) => v + y0[j]);
      expectClose(await readF32(device, yBuf, M * N), ref, 1e-5, `seed ${seed} ${weights} no prologue`);
      call.destroy();
      for (const b of [xBuf, yBuf, u.weight, u.weight_scale_inv]) b?.destroy();
    }
  });

  it('matches for workgroups of 1 and 6 (partial subgroups, single-invocation trees)', async () => {
    const seed = testSeed(`gemv prologue workgroups ${strategy}`);
    const next = rng(seed);
    const sizes = strategy === 'workgroup_per_row' ? [1, 2, 8] : [1, 6];
    for (const workgroupSize of sizes) {
      await check({ strategy, weights: 'fp8', prologue: 'rmsnorm_write', workgroupSize, N: [39], K: 130, accumulate: false }, next, `seed ${seed} wg ${workgroupSize}`);
    }
  });
});

describe('gemv_fp8 norm prologue refusals', () => {
  it('refuses w8a8, a missing or extra norm, a missing xNormed and a bad eps, allocating nothing', () => {
    const device = gpu.device;
    expect(() => gemv({ numerics: 'w8a8', prologue: 'rmsnorm' })).toThrow(ArgumentError);
    const [M, N, K] = [1, 8, 8];
    const w = uploadWeight(device, randomWeight('f32', N, K, rng(1)));
    const [x, g, y] = [uploadBuffer(device, new Float32Array(K), 'x'), uploadBuffer(device, new Float32Array(K), 'g'), poisonedOutput(device, N)];
    const shape = { M, N, K, x, y, ...w };
    const plain = gemv({ weights: 'f32' });
    const norm = gemv({ weights: 'f32', prologue: 'rmsnorm' });
    const write = gemv({ weights: 'f32', prologue: 'rmsnorm_write' });
    expect(() => plain.prepare({ ...shape, norm: { weight: g, eps: EPS } })).toThrow(/exactly to a variant with a norm prologue/);
    expect(() => norm.prepare(shape)).toThrow(/exactly to a variant with a norm prologue/);
    expect(() => norm.prepare({ ...shape, norm: { weight: g, eps: Number.NaN } })).toThrow(/eps/);
    expect(() => write.prepare({ ...shape, norm: { weight: g, eps: EPS } })).toThrow(/xNormed/);
    const short = uploadBuffer(device, new Float32Array(K - 4), 'g.short');
    expect(() => norm.prepare({ ...shape, norm: { weight: short, eps: EPS } })).toThrow(/norm\.weight holds 16 bytes/);
    for (const b of [x, g, y, short, w.weight]) b.destroy();
  });
});
