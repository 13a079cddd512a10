// Block-scaled FP8 quantisation of a Linear weight, the executable spec (src/model/MATH.md 3):
// per 128x128 block (edge blocks partial) S = amax(|W|) / 448 and Q = e4m3_rne(W / S), both in
// float32, saturating at 448. This is what a released FP8 checkpoint holds; the loader makes it
// on the GPU from a BF16 release (shaders/quantize_fp8.wgsl), the generator on the CPU (tools/).

import { BLOCK } from '../gpu/kernel.ts';
import { E4M3_MAX, f32ToE4m3 } from './fp8_e4m3.ref.ts';

export interface Fp8Weight {
  /** [out, in] e4m3 codes. */
  readonly codes: Uint8Array;
  /** [ceil(out/128), ceil(in/128)] float32 block scales (`weight_scale_inv`). */
  readonly scaleInv: Float32Array;
}

/** 2^-126: a block whose largest magnitude is below it (all zeros in practice) gets S = 1, Q = 0. */
export const SMALLEST_NORMAL_F32 = 2 ** -126;

/** Quantise a row-major [out, in] float32 weight per 128x128 block. */
export function quantizeFp8(w: Float32Array, out: number, inDim: number): Fp8Weight {
  const rowBlocks = Math.ceil(out / BLOCK);
  const colBlocks = Math.ceil(inDim / BLOCK);
  const codes = new Uint8Array(out * inDim);
  const scaleInv = new Float32Array(rowBlocks * colBlocks);
  for (let bi = 0; bi < rowBlocks; bi++) {
    const r0 = bi * BLOCK;
    const r1 = Math.min(r0 + BLOCK, out);
    for (let bj = 0; bj < colBlocks; bj++) {
      const c0 = bj * BLOCK;
      const c1 = Math.min(c0 + BLOCK, inDim);
      let amax = 0;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(w[r * inDim + c]));
      const zero = amax < SMALLEST_NORMAL_F32;
      // float32 divisions: the double quotient of two float32 values rounds to the float32 one
      const s = zero ? 1 : Math.fround(amax / E4M3_MAX);
      scaleInv[bi * colBlocks + bj] = s;
      if (zero) continue;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) codes[r * inDim + c] = f32ToE4m3(w[r * inDim + c] / s);
    }
  }
  return { codes, scaleInv };
}
