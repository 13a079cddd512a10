// Every Linear of the forward pass goes through here: y [M, out] = x [M, in] · Wᵀ with W in its
// checkpoint format. Up to GEMV_MAX_ROWS rows (decode, the MTP verify step) take the GEMV, whose
// decoded weights serve every row; more rows (prefill chunks) take the tiled GEMM. A W split into
// row bands (src/model/placement.ts) is one call per band, each writing its columns of y.
// Two Linears that read the same x (q_a_proj or q_proj, and kv_a_proj_with_mqa) take one GEMV
// dispatch together (gemv_fp8's `linears: 'two'`) when both are whole, of one format, K % 4 == 0
// (every checkpoint) and the adapter binds that many storage buffers; otherwise (and for the GEMM)
// two calls, the same sums.

import { sequence, type BufferResource, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { createGemm, type Gemm, type GemmStrategy } from '../kernels/gemm_fp8.ts';
import { createGemv, GEMV_MAX_ROWS, type Gemv, type GemvStrategy } from '../kernels/gemv_fp8.ts';
import { operandStorageBuffers, type WeightFormat } from '../kernels/matmul_operands.ts';
import type { LinearWeight } from './gpu_weights.ts';

export interface LinearStrategies {
  gemv?: GemvStrategy;
  gemm?: GemmStrategy;
}

export interface LinearArgs {
  M: number;
  x: BufferResource;
  y: BufferResource;
  label?: string;
}

export interface LinearKernels {
  /** Record-once call of one Linear for M rows of x. */
  prepare(weight: LinearWeight, args: LinearArgs): PreparedCall;
  /** y = x · firstᵀ and ySecond = x · secondᵀ: one dispatch where it can (see the top of this file). */
  preparePair(first: LinearWeight, second: LinearWeight, args: LinearArgs & { ySecond: BufferResource; labelSecond?: string }): PreparedCall;
}

/** The matrix kernels of a model, one per (rows class, weight format), made when first needed. */
export function createLinearKernels(ctx: KernelContext, strategies: LinearStrategies = {}): LinearKernels {
  const gemvs = new Map<WeightFormat, Gemv>();
  const pairGemvs = new Map<WeightFormat, Gemv>();
  const gemms = new Map<WeightFormat, Gemm>();
  const canPair = (a: LinearWeight, b: LinearWeight, M: number) =>
    M <= GEMV_MAX_ROWS &&
    a.pieces.length === 1 &&
    b.pieces.length === 1 &&
    a.format === b.format &&
    a.in === b.in &&
    a.in % 4 === 0 &&
    operandStorageBuffers({ weights: a.format, numerics: 'weight_only' }, 'two') <= ctx.gpu.device.limits.maxStorageBuffersPerShaderStage;
  const linear: LinearKernels = {
    preparePair(a, b, { M, x, y, ySecond, label, labelSecond }) {
      if (!canPair(a, b, M)) {
        return sequence([linear.prepare(a, { M, x, y, label }), linear.prepare(b, { M, x, y: ySecond, label: labelSecond })]);
      }
      let gemv = pairGemvs.get(a.format);
      if (!gemv) pairGemvs.set(a.format, (gemv = createGemv(ctx, { weights: a.format, strategy: strategies.gemv, linears: 'two' })));
      const [pa, pb] = [a.pieces[0], b.pieces[0]];
      return gemv.prepare({
        M, N: a.out, K: a.in, x, y, weight: pa.weight, weight_scale_inv: pa.weight_scale_inv,
        second: { N: b.out, weight: pb.weight, weight_scale_inv: pb.weight_scale_inv, y: ySecond },
        label: `${label ?? a.name}+${labelSecond ?? b.name}`,
      });
    },
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
  return linear;
}
