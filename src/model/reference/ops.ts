// The few dense operations the CPU reference forward is built from. Activations are f32 arrays
// (the official f32 run holds float32 tensors between operations); every sum is accumulated in
// float64, so each result is the exact value rounded once to f32.

import type { DeepseekV3Config } from '../../config.ts';
import { actQuantRef, type ActScaleFormat } from '../../kernels/act_quant.ref.ts';
import { E4M3_VALUES } from '../../kernels/fp8_e4m3.ref.ts';
import { BLOCK } from '../../gpu/kernel.ts';
import { rmsNormRef } from '../../kernels/rmsnorm.ref.ts';
import type { ModelNumerics } from '../model_kernels.ts';

/**
 * W8A8 (src/model/MATH.md 5, the official gemm_impl "fp8"): the act_quant scale format of each
 * official Linear class. `plain` for Linear (q_a_proj, kv_a_proj_with_mqa, the routed experts),
 * which passes the config's scale_fmt on; `parallel` for ColumnParallelLinear / RowParallelLinear
 * (q_proj, q_b_proj, kv_b_proj, o_proj, dense MLP, shared experts), which never does. Every Linear
 * the FP8 release quantises is taken to be FP8 (an FP8 checkpoint, or one loaded with `quantise`).
 */
export interface ActRounding {
  readonly plain: ActScaleFormat;
  readonly parallel: ActScaleFormat;
}

/** The rounding of `numerics` for `config`: null for weight_only (inputs as they are). */
export function actRounding(config: DeepseekV3Config, numerics: ModelNumerics = 'weight_only'): ActRounding | null {
  if (numerics === 'weight_only') return null;
  return { plain: config.quantization_config?.scale_fmt === 'ue8m0' ? 'ue8m0' : 'f32', parallel: 'f32' };
}

/**
 * The input of an FP8 Linear on the W8A8 path: x [rows, K] with each value replaced by the FP8
 * value act_quant makes of it, e4m3(code) * s (kernels/act_quant.ref.ts; K a multiple of 128).
 * format null (weight-only): x itself.
 */
export function roundInput(x: Float32Array, rows: number, K: number, format: ActScaleFormat | null): Float32Array {
  if (format === null) return x;
  const { codes, scales } = actQuantRef(x, rows, K, format);
  return Float32Array.from(codes, (code, i) => E4M3_VALUES[code] * scales[Math.floor(i / BLOCK)]);
}

/** y [rows, out] = x [rows, in] @ W^T, W [out, in] (PyTorch Linear layout, as stored). */
export function linear(x: Float32Array, rows: number, W: Float32Array, out: number, inDim: number): Float32Array {
  if (x.length !== rows * inDim || W.length !== out * inDim) {
    throw new RangeError(`linear: x has ${x.length} values for [${rows}, ${inDim}], W has ${W.length} for [${out}, ${inDim}]`);
  }
  const y = new Float32Array(rows * out);
  for (let t = 0; t < rows; t++) {
    const xo = t * inDim;
    for (let n = 0; n < out; n++) {
      const wo = n * inDim;
      let acc = 0;
      for (let k = 0; k < inDim; k++) acc += x[xo + k] * W[wo + k];
      y[t * out + n] = acc;
    }
  }
  return y;
}

/**
 * RMSNorm of each row of x [rows, stride] at columns offset .. offset+width-1, into a packed
 * [rows, width] array (kernels/rmsnorm.ref.ts; eps is config.rms_norm_eps).
 */
export function rmsNorm(x: Float32Array, rows: number, width: number, weight: Float32Array, eps: number, layout = { stride: width, offset: 0 }): Float32Array {
  const y = new Float32Array(rows * width);
  rmsNormRef({ rows, width, eps, x, weight, y, xLayout: layout });
  return y;
}

/**
 * silu(x W1^T) * (x W3^T) W2^T: the SwiGLU MLP of dense layers, experts and shared experts (4.5).
 * round (W8A8): x, and the hidden state before W2, rounded with that scale format (roundInput).
 */
export function swiglu(
  x: Float32Array, rows: number, d: number, inter: number, w1: Float32Array, w3: Float32Array, w2: Float32Array, round: ActScaleFormat | null = null,
): Float32Array {
  const xq = roundInput(x, rows, d, round);
  const gate = linear(xq, rows, w1, inter, d);
  const up = linear(xq, rows, w3, inter, d);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    // official: F.silu(w1(x)) * w3(x), two float32 tensors
    gate[i] = Math.fround(g / (1 + Math.exp(-g))) * up[i];
  }
  return linear(roundInput(gate, rows, inter, round), rows, w2, d, inter);
}

/** In place a += b. */
export function addInto(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

/** Index of the largest value, lowest index on ties (torch.argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Rows of a [rows, width] array as views. */
export function splitRows(x: Float32Array, rows: number, width: number): Float32Array[] {
  return Array.from({ length: rows }, (_, t) => x.subarray(t * width, (t + 1) * width));
}
