// The FP8 decode-cost measurement runs both weight formats through one strategy, in alternation.

import { describe, expect, it } from 'vitest';
import { testGpu } from '../gpu/testing.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { memoryVariantStore } from '../kernels/variant_choice.ts';
import { measureDecodeCost } from './decode_cost.ts';

describe('measureDecodeCost', () => {
  it('times the FP8 and f32-weight GEMM with the same strategy and reports their ratio', async () => {
    const gpu = await testGpu();
    // Remembered choices that differ per weight format: both formats must run the FP8 one.
    const memory = memoryVariantStore();
    const store = { get: (key: string) => memory.get(key) ?? (key.includes('gemm_fp8') ? (key.includes('|fp8 ') ? 'workgroup_tile' : 'thread_tile') : undefined), set: memory.set };
    const result = await measureDecodeCost(gpu, new PipelineCache(gpu.device), store, { M: 9, K: 132, N: 20 }, 3);
    expect(result.rounds).toBe(3);
    expect(result.fp8_median_ms).toBeGreaterThan(0);
    expect(result.f32_median_ms).toBeGreaterThan(0);
    expect(result.cost).toBeCloseTo(result.fp8_median_ms / result.f32_median_ms - 1, 12);
    expect(result.variant).toBe('workgroup_tile');
  });
});
