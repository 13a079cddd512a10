// Every Linear of the forward pass goes through here: y [M, out] = x [M, in] · Wᵀ with W in its
// checkpoint format. Up to GEMV_MAX_ROWS rows (decode, the MTP verify step) take the GEMV, whose
// decoded weights serve every row; more rows (prefill chunks) take the tiled GEMM. A W split into
// row bands (src/model/placement.ts) is one call per band, each writing its columns of y.

import { sequence, type BufferResource, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { createGemm, type Gemm, type GemmStrategy } from '../kernels/gemm_fp8.ts';
import { createGemv, GEMV_MAX_ROWS, type Gemv, type GemvStrategy } from '../kernels/gemv_fp8.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import type { LinearWeight } from './gpu_weights.ts';

export interface LinearStrategies {
  gemv?: GemvStrategy;
  gemm?: GemmStrategy;
}

export interface LinearKernels {
  /** Record-once call of one Linear for M rows of x. */
  prepare(weight: LinearWeight, args: { M: number; x: BufferResource; y: BufferResource; label?: string }): PreparedCall;
}

/** The matrix kernels of a model, one per (rows class, weight format), made when first needed. */
export function createLinearKernels(ctx: KernelContext, strategies: LinearStrategies = {}): LinearKernels {
  const gemvs = new Map<WeightFormat, Gemv>();
  const gemms = new Map<WeightFormat, Gemm>();
  return {
    prepare(w, { M, x, y, label }) {
      let kernel: Gemv | Gemm;
      if (M <= GEMV_MAX_ROWS) {
        let gemv = gemvs.get(w.format);
        if (!gemv) gemvs.set(w.format, (gemv = createGemv(ctx, { weights: w.format, strategy: strategies.gemv })));
        kernel = gemv;
      } else {
        let gemm = gemms.get(w.format);
        if (!gemm) gemms.set(w.format, (gemm = createGemm(ctx, { weights: w.format, strategy: strategies.gemm })));
        kernel = gemm;
      }
      const name = label ?? w.name;
      const calls = w.pieces.map((p) =>
        kernel.prepare({
          M, N: p.rows, K: w.in, yStride: w.out, yCol: p.firstRow, x, y, weight: p.weight, weight_scale_inv: p.weight_scale_inv,
          label: w.pieces.length === 1 ? name : `${name}[${p.firstRow}:${p.firstRow + p.rows}]`,
        }),
      );
      return sequence(calls);
    },
  };
}
