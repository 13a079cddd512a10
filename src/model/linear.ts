// Every Linear of the forward pass goes through here: y [M, out] = x [M, in] · Wᵀ with W in its
// checkpoint format. Up to GEMV_MAX_ROWS rows (decode, the MTP verify step) take the GEMV, whose
// decoded weights serve every row; more rows (prefill chunks) take the tiled GEMM. A W split into
// row bands (src/model/placement.ts) is one call per band, each writing its columns of y.
// Two Linears that read the same x (q_a_proj or q_proj, and kv_a_proj_with_mqa) take one GEMV
// dispatch together (gemv_fp8's `linears: 'two'`) when both are whole, of one format, K % 4 == 0
// (every checkpoint) and the adapter binds that many storage buffers; otherwise (and for the GEMM)
// two calls, the same sums.
// Decode plans fuse the RMSNorm before a Linear into its GEMV (`norm`: x is then the residual stream
// h) and add o_proj into h (`accumulate`): gemv_fp8's prologue and ACCUMULATE. A W in row bands runs
// the prologue in every band; the first writes the normed rows.

import { sequence, type BufferResource, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { createGemm, type Gemm, type GemmStrategy } from '../kernels/gemm_fp8.ts';
import { ArgumentError } from '../errors.ts';
import { createGemv, GEMV_MAX_ROWS, type Gemv, type GemvNorm, type GemvPrologue, type GemvStrategy } from '../kernels/gemv_fp8.ts';
import { operandStorageBuffers, type WeightFormat } from '../kernels/matmul_operands.ts';
import type { LinearWeight } from './gpu_weights.ts';

export interface LinearStrategies {
  gemv?: GemvStrategy;
  gemm?: GemmStrategy;
}

export interface LinearArgs {
  M: number;
  /** The input; with `norm`, the residual stream h that the GEMV normalises first. */
  x: BufferResource;
  y: BufferResource;
  /** RMSNorm(x) * norm.weight is the input (at most GEMV_MAX_ROWS rows). */
  norm?: GemvNorm;
  /** y += x · Wᵀ (at most GEMV_MAX_ROWS rows). */
  accumulate?: boolean;
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
  const gemvs = new Map<string, Gemv>();
  const gemms = new Map<WeightFormat, Gemm>();
  const gemvFor = (weights: WeightFormat, prologue: GemvPrologue, linears: 'one' | 'two' = 'one') => {
    const key = `${weights}|${prologue}|${linears}`;
    let gemv = gemvs.get(key);
    if (!gemv) gemvs.set(key, (gemv = createGemv(ctx, { weights, strategy: strategies.gemv, linears, prologue })));
    return gemv;
  };
  const prologueOf = (norm: GemvNorm | undefined): GemvPrologue => (!norm ? 'none' : norm.xNormed ? 'rmsnorm_write' : 'rmsnorm');
  const canPair = (a: LinearWeight, b: LinearWeight, M: number, norm: GemvNorm | undefined) =>
    M <= GEMV_MAX_ROWS &&
    a.pieces.length === 1 &&
    b.pieces.length === 1 &&
    a.format === b.format &&
    a.in === b.in &&
    a.in % 4 === 0 &&
    operandStorageBuffers({ weights: a.format, numerics: 'weight_only' }, 'two') + (norm ? 1 : 0) <= ctx.gpu.device.limits.maxStorageBuffersPerShaderStage;
  const linear: LinearKernels = {
    preparePair(a, b, { M, x, y, ySecond, label, labelSecond, norm, accumulate }) {
      if (norm?.xNormed) throw new ArgumentError(`${label ?? a.name}: a pair of Linears does not write the normed rows (norm.xNormed)`);
      if (!canPair(a, b, M, norm)) {
        return sequence([linear.prepare(a, { M, x, y, label, norm, accumulate }), linear.prepare(b, { M, x, y: ySecond, label: labelSecond, norm, accumulate })]);
      }
      const gemv = gemvFor(a.format, prologueOf(norm), 'two');
      const [pa, pb] = [a.pieces[0], b.pieces[0]];
      return gemv.prepare({
        M, N: a.out, K: a.in, x, y, weight: pa.weight, weight_scale_inv: pa.weight_scale_inv, norm, accumulate,
        second: { N: b.out, weight: pb.weight, weight_scale_inv: pb.weight_scale_inv, y: ySecond },
        label: `${label ?? a.name}+${labelSecond ?? b.name}`,
      });
    },
    prepare(w, { M, x, y, label, norm, accumulate }) {
      const name = label ?? w.name;
      if (M <= GEMV_MAX_ROWS) {
        // the first band writes the normed rows; every band normalises for itself
        const calls = w.pieces.map((p, i) => {
          const bandNorm = norm && i > 0 ? { weight: norm.weight, eps: norm.eps } : norm;
          return gemvFor(w.format, prologueOf(bandNorm)).prepare({
            M, N: p.rows, K: w.in, yStride: w.out, yCol: p.firstRow, x, y, weight: p.weight, weight_scale_inv: p.weight_scale_inv, norm: bandNorm, accumulate,
            label: w.pieces.length === 1 ? name : `${name}[${p.firstRow}:${p.firstRow + p.rows}]`,
          });
        });
        return sequence(calls);
      }
      if (norm || accumulate) throw new ArgumentError(`${name}: a norm prologue or accumulate is for at most ${GEMV_MAX_ROWS} rows (the GEMV), got M=${M}`);
      let gemm = gemms.get(w.format);
      if (!gemm) gemms.set(w.format, (gemm = createGemm(ctx, { weights: w.format, strategy: strategies.gemm })));
      const kernel = gemm;
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
