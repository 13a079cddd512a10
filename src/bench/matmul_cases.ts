// Benchmark cases of the matrix kernels (gemv_fp8, gemm_fp8): random operands of a shape, one
// checked run against a CPU reference on a few output rows and columns, then the timed call.

import { createStorageBuffer, readF32, uploadBuffer } from '../gpu/buffers.ts';
import { rng } from '../testing/random.ts';
import { quantizedWeight, randomWeight } from '../testing/random_weights.ts';
import type { RefWeight } from '../kernels/gemm_fp8.ref.ts';
import { E4M3_VALUES } from '../kernels/fp8_e4m3.ref.ts';
import { createGemm, type GemmStrategy } from '../kernels/gemm_fp8.ts';
import { createGemv, type GemvStrategy } from '../kernels/gemv_fp8.ts';
import { BLOCK, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import { chooseGemmStrategy, chooseGemvStrategy, type VariantStore } from '../kernels/variant_choice.ts';
import type { BenchCase, PreparedBench } from './bench_case.ts';


/**
 * x [M, K] f32, W [N, K] of `format` (fp8 with block scales), y [M, N]. The strategy is the one
 * this adapter measured fastest for `weights`, unless `strategy` names one.
 */
export function matmulCase(
  kernel: 'gemv_fp8' | 'gemm_fp8',
  weights: WeightFormat,
  shape: { M: number; K: number; N: number },
  note = '',
  strategy?: string,
): BenchCase {
  const suffix = weights === 'fp8' ? '' : `.${weights}_weights`;
  return {
    name: `${kernel}${suffix}`,
    shape,
    note,
    peer: true,
    async prepare(ctx: KernelContext, variantStore: VariantStore): Promise<PreparedBench> {
      const { gpu } = ctx;
      const { M, K, N } = shape;
      const next = rng(M * 7919 + K * 31 + N);
      const x = Float32Array.from({ length: M * K }, () => next() * 2 - 1);
      const w = weights === 'fp8' ? quantizedWeight(N, K, next) : randomWeight(weights, N, K, next);
      const buffers = {
        x: uploadBuffer(gpu.device, x, 'x'),
        weight: uploadBuffer(gpu.device, w.bytes, 'weight'),
        weight_scale_inv: w.scale ? uploadBuffer(gpu.device, w.scale, 'weight_scale_inv') : undefined,
        y: createStorageBuffer(gpu.device, 4 * M * N, 'y'),
      };
      // The strategy this adapter measured fastest (once per adapter, remembered), as the engine will use.
      const maker =
        kernel === 'gemv_fp8'
          ? createGemv(ctx, { weights, strategy: (strategy as GemvStrategy | undefined) ?? (await chooseGemvStrategy(ctx, variantStore, { weights })) })
          : createGemm(ctx, { weights, strategy: (strategy as GemmStrategy | undefined) ?? (await chooseGemmStrategy(ctx, variantStore, { weights })) });
      const call: PreparedCall = maker.prepare({ M, N, K, ...buffers });
      return {
        call,
        variant: maker.variant.strategy,
        async check(run) {
          await run();
          const y = await readF32(gpu.device, buffers.y, M * N);
          // Reference on a sample of outputs: first and last rows and columns.
          let num = 0;
          let den = 0;
          for (const m of new Set([0, M - 1])) {
            for (const n of new Set([0, 1, N >> 1, N - 1])) {
              let acc = 0;
              for (let k = 0; k < K; k++) acc += x[m * K + k] * weightAt(w, n, k, K);
              num += (y[m * N + n] - acc) ** 2;
              den += acc * acc;
            }
          }
          return Math.sqrt(num / Math.max(den, 1e-30));
        },
        destroy() {
          call.destroy();
          for (const b of Object.values(buffers)) b?.destroy();
        },
      };
    },
  };
}

function weightAt(w: RefWeight, n: number, k: number, K: number): number {
  const i = n * K + k;
  if (w.format === 'fp8') return E4M3_VALUES[w.bytes[i]] * w.scale![Math.floor(n / BLOCK) * Math.ceil(K / BLOCK) + Math.floor(k / BLOCK)];
  if (w.format === 'f32') return new Float32Array(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength / 4)[i];
  const bits = new Uint16Array(w.bytes.buffer, w.bytes.byteOffset, w.bytes.byteLength / 2)[i];
  return new Float32Array(new Uint32Array([bits << 16]).buffer)[0];
}
