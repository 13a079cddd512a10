// gemm_fp8 on the GPU (SwiftShader here) against matmulRef: every variant, M = 1, 7, 33, 130 (past
// one 64-row tile, not a multiple of 4), N and K multiples of neither 4 nor 128, outputs
// poisoned with NaN, and the official fp8_gemm cases of the dsv3-tiny-official fixture.
// Bounds: ‖y − ref‖/‖ref‖ < 1e-5 for f32 accumulation against the f64 reference; w8a8 against the
// official fp8_gemm (same products, another summation order) < 2e-6.

import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../gpu/device.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { actQuantRef } from './act_quant.ref.ts';
import { createGemm, GEMM_STRATEGIES, type Gemm, type GemmOptions } from './gemm_fp8.ts';
import { matmulRef, type RefActivations } from './gemm_fp8.ref.ts';
import type { MatmulNumerics, WeightFormat } from './matmul_operands.ts';
import { expectClose, fp8GemmCases, randomWeight, runMatmul, runMatmulBands } from '../testing/matmul_testing.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

const OPERANDS: { weights: WeightFormat; numerics: MatmulNumerics }[] = [
  { weights: 'fp8', numerics: 'weight_only' },
  { weights: 'fp8', numerics: 'w8a8' },
  { weights: 'bf16', numerics: 'weight_only' },
  { weights: 'f32', numerics: 'weight_only' },
];

// [N, K, rows M]: K % 8 = 0, 3 and 4 (workgroup_tile stages K in steps of 8); w8a8 needs K % 128 == 0.
const ROWS = [1, 7, 33, 130]; // 4-row tiles below 128 rows, 32-row tiles from there
const SHAPES = {
  weight_only: [[300, 200, ROWS], [67, 131, [7, 33]], [45, 132, [7, 130]]],
  w8a8: [[300, 256, ROWS]],
} as const;

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

const gemm = (options: GemmOptions): Gemm => createGemm({ gpu, pipelines: cache }, options);

function activations(numerics: MatmulNumerics, x: Float32Array, M: number, K: number): RefActivations {
  return numerics === 'w8a8' ? { numerics, ...actQuantRef(x, M, K) } : { numerics, x };
}

describe.each(GEMM_STRATEGIES)('gemm_fp8 %s', (strategy) => {
  it.each(OPERANDS)('$weights weights, $numerics: M = 1, 7, 33, 130 on odd shapes', async ({ weights, numerics }) => {
    const seed = testSeed(`gemm ${strategy} ${weights} ${numerics}`);
    const next = rng(seed);
    const kernel = gemm({ weights, numerics, strategy });
    for (const [N, K, rows] of SHAPES[numerics]) {
      const weight = randomWeight(weights, N, K, next);
      for (const M of rows) {
        const args = { M, N, K, weight, activations: activations(numerics, randn(next, M * K), M, K) };
        expectClose(await runMatmul(gpu.device, kernel, args), matmulRef(args), 1e-5, `M=${M} N=${N} K=${K}`);
      }
    }
  });

  it.each(OPERANDS)('$weights weights, $numerics: row bands of W, each writing its columns of one y, give the whole W\'s y bit for bit', async ({ weights, numerics }) => {
    const next = rng(testSeed(`gemm bands ${strategy} ${weights} ${numerics}`));
    const kernel = gemm({ weights, numerics, strategy });
    const [N, K] = SHAPES[numerics][0];
    const weight = randomWeight(weights, N, K, next);
    const M = 33;
    const args = { M, N, K, weight, activations: activations(numerics, randn(next, M * K), M, K) };
    const whole = await runMatmul(gpu.device, kernel, args);
    for (const bandRows of weights === 'fp8' ? [128] : [128, 7]) {
      const banded = await runMatmulBands(gpu.device, kernel, args, bandRows);
      expect(new Uint32Array(banded.buffer), `M=${M} N=${N} bands of ${bandRows}`).toEqual(new Uint32Array(whole.buffer));
    }
  });

  it('reproduces the official fp8_gemm cases (w8a8) and the f32 dequantised Linear (weight_only)', async () => {
    const fp8 = gemm({ strategy, numerics: 'w8a8' });
    const f32 = gemm({ strategy, numerics: 'weight_only' });
    for (const c of fp8GemmCases()) {
      const base = { M: c.M, N: c.N, K: c.K, weight: c.weight };
      const yFp8 = await runMatmul(gpu.device, fp8, { ...base, activations: { numerics: 'w8a8', codes: c.codes, scales: c.scales } });
      expectClose(yFp8, c.y_fp8, 2e-6, `${c.hf_weight} w8a8`);
      const yF32 = await runMatmul(gpu.device, f32, { ...base, activations: { numerics: 'weight_only', x: c.x } });
      expectClose(yF32, c.y_dequant_f32, 1e-5, `${c.hf_weight} weight_only`);
    }
  });
});

describe('gemm_fp8 options', () => {
  it('refuses a workgroup size for the fixed 16 x 16 tiles, and w8a8 on bf16 weights', () => {
    expect(() => gemm({ strategy: 'workgroup_tile', workgroupSize: 32 })).toThrow(/fixed 16 x 16/);
    expect(() => gemm({ weights: 'bf16', numerics: 'w8a8' })).toThrow(/FP8 weights only/);
  });
});
