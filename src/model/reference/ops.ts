// The few dense operations the CPU reference forward is built from. Activations are f32 arrays
// (the official f32 run holds float32 tensors between operations); every sum is accumulated in
// float64, so each result is the exact value rounded once to f32.

import { rmsNormRef } from '../../kernels/rmsnorm.ref.ts';

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

/** silu(x W1^T) * (x W3^T) W2^T: the SwiGLU MLP of dense layers, experts and shared experts (4.5). */
export function swiglu(x: Float32Array, rows: number, d: number, inter: number, w1: Float32Array, w3: Float32Array, w2: Float32Array): Float32Array {
  const gate = linear(x, rows, w1, inter, d);
  const up = linear(x, rows, w3, inter, d);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    // official: F.silu(w1(x)) * w3(x), two float32 tensors
    gate[i] = Math.fround(g / (1 + Math.exp(-g))) * up[i];
  }
  return linear(gate, rows, w2, d, inter);
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
