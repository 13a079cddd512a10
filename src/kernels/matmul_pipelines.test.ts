// The matrix kernels' pipelines are keyed by compile-time facts only: one pipeline per variant,
// row class and K alignment serves every M, N and K.

import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../gpu/device.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { testGpu } from '../gpu/testing.ts';
import { createGemm } from './gemm_fp8.ts';
import { createGemv } from './gemv_fp8.ts';

let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
});

describe('matrix kernel pipelines', () => {
  it('serves every shape of a kernel from one pipeline (shapes travel in uniforms)', () => {
    const cache = new PipelineCache(gpu.device);
    const { device } = gpu;
    const buffer = (size: number) => device.createBuffer({ size, usage: GPUBufferUsage.STORAGE });
    const x = buffer(4 * 130 * 256);
    const weight = buffer(300 * 256);
    const scale = buffer(4 * 3 * 2);
    const y = buffer(4 * 130 * 300);
    // gemm: one pipeline per K % 4 == 0 or not and per tile height (4 rows below M = 128, 32 from
    // there), whatever M, N and K
    const gemm = createGemm({ gpu, pipelines: cache }, { strategy: 'thread_tile' });
    for (const [M, N, K] of [[130, 300, 256], [128, 5, 4], [129, 129, 128]]) gemm.prepare({ M, N, K, x, weight, weight_scale_inv: scale, y }).destroy();
    expect(cache.size).toBe(1);
    const again = createGemm({ gpu, pipelines: cache }, { strategy: 'thread_tile' }); // another instance of the same variant
    for (const [M, N, K] of [[130, 5, 3], [129, 129, 129]]) again.prepare({ M, N, K, x, weight, weight_scale_inv: scale, y }).destroy();
    expect(cache.size).toBe(2);
    for (const [M, N, K] of [[1, 5, 4], [8, 5, 4], [127, 5, 4], [127, 5, 5]]) gemm.prepare({ M, N, K, x, weight, weight_scale_inv: scale, y }).destroy();
    expect(cache.size).toBe(2 + 2);
    // gemv: one pipeline per row capacity (1, 2 or 4 rows of x) and per K % 4 == 0 or not, whatever N and K
    const gemv = createGemv({ gpu, pipelines: cache }, { strategy: 'thread_per_4_rows' });
    for (const [M, N, K] of [[1, 300, 256], [1, 17, 128], [2, 300, 256], [3, 300, 256], [4, 9, 12]]) gemv.prepare({ M, N, K, x, weight, weight_scale_inv: scale, y }).destroy();
    expect(cache.size).toBe(4 + 3);
    for (const [M, N, K] of [[1, 17, 5], [1, 300, 129], [4, 9, 9]]) gemv.prepare({ M, N, K, x, weight, weight_scale_inv: scale, y }).destroy();
    expect(cache.size).toBe(4 + 3 + 2);
    for (const b of [x, weight, scale, y]) b.destroy();
  });
});
