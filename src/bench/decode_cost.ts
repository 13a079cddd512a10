// What decoding FP8 weights costs inside the GEMM: the same kernel and strategy on the same shape
// with FP8 and with f32 weights, one call of each per round, in alternation, so that a shared or
// throttled machine slows both alike (timed one after the other, the two medians drift apart
// by more than the difference being measured). The kernel issue's target: under 10%.

import type { Gpu } from '../gpu/device.ts';
import type { PipelineCache } from '../gpu/pipeline_cache.ts';
import type { VariantStore } from '../kernels/variant_choice.ts';
import { matmulCase } from './matmul_cases.ts';
import { median, timeComputePass } from '../gpu/timing.ts';

export interface DecodeCostResult {
  kernel: 'gemm_fp8';
  shape: { M: number; K: number; N: number };
  /** The strategy both ran (the one this adapter chose for FP8 weights). */
  variant?: string;
  fp8_median_ms: number;
  f32_median_ms: number;
  rounds: number;
  /** fp8 / f32 - 1: the share of time the in-kernel decode adds (negative: FP8 is faster). */
  cost: number;
}

export async function measureDecodeCost(
  gpu: Gpu,
  cache: PipelineCache,
  variants: VariantStore,
  shape: { M: number; K: number; N: number },
  rounds: number,
): Promise<DecodeCostResult> {
  const fp8 = await matmulCase('gemm_fp8', 'fp8', shape).prepare({ gpu, pipelines: cache }, variants);
  try {
    const f32 = await matmulCase('gemm_fp8', 'f32', shape, '', fp8.variant).prepare({ gpu, pipelines: cache }, variants);
    try {
      if (f32.variant !== fp8.variant) throw new Error(`gemm_fp8 decode cost: FP8 ran ${fp8.variant}, f32 weights ${f32.variant}; the comparison needs one strategy`);
      const times: Record<'fp8' | 'f32', number[]> = { fp8: [], f32: [] };
      for (let round = 0; round < rounds; round++) {
        for (const [name, prepared] of [['fp8', fp8], ['f32', f32]] as const) {
          const t = await timeComputePass(gpu, (pass) => prepared.call.encode(pass), { warmup: round === 0 ? 1 : 0, runs: 1 });
          times[name].push(t.medianMs);
        }
      }
      const fp8Ms = median(times.fp8);
      const f32Ms = median(times.f32);
      return { kernel: 'gemm_fp8', shape, variant: fp8.variant, fp8_median_ms: fp8Ms, f32_median_ms: f32Ms, rounds, cost: fp8Ms / f32Ms - 1 };
    } finally {
      f32.destroy();
    }
  } finally {
    fp8.destroy();
  }
}
