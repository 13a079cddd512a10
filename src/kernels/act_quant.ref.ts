// act_quant, the executable spec (src/model/MATH.md section 5; the official kernel.py
// act_quant): per row, per contiguous group of 128 columns,
//   amax = max(max |x|, 1e-4),  s = amax / 448,  code = e4m3_rne(x / s)
// all in float32; with scale_fmt "ue8m0" (V3.1) s is first rounded up to a power of two,
// s = 2^ceil(log2 s) (the clamp applies in both formats). The WGSL twin is shaders/act_quant.wgsl.

import { BLOCK } from '../gpu/kernel.ts';
import { E4M3_MAX, f32ToE4m3 } from './fp8_e4m3.ref.ts';

export interface ActQuantized {
  /** [M, K] e4m3 codes. */
  codes: Uint8Array;
  /** [M, K/128] f32 scales. */
  scales: Float32Array;
}

/** The float32 clamp of the official kernel: amax = max(amax, 1e-4). */
export const AMAX_FLOOR = Math.fround(1e-4);

/**
 * 2^ceil(log2 s) for a positive normal float32 s: the official exp2(ceil(log2(s))), taken from the
 * bits so it is exact (the exponent bumped unless the fraction is 0, when s already is a power of two).
 */
export function roundUpPow2(s: number): number {
  const bits = new Uint32Array(new Float32Array([s]).buffer)[0];
  const exponent = (bits >>> 23) + ((bits & 0x7fffff) !== 0 ? 1 : 0);
  return new Float32Array(new Uint32Array([exponent << 23]).buffer)[0];
}

/**
 * How act_quant stores each group's scale: 'f32' amax / 448 as it comes (scale_fmt null, DeepSeek-V3),
 * 'ue8m0' rounded up to a power of two first (scale_fmt "ue8m0", DeepSeek-V3.1).
 */
export type ActScaleFormat = 'f32' | 'ue8m0';

/** Codes and scales of x [M, K]; scaleFormat 'ue8m0' rounds each scale up to a power of two before quantising. */
export function actQuantRef(x: Float32Array, M: number, K: number, scaleFormat: ActScaleFormat = 'f32'): ActQuantized {
  if (K % BLOCK !== 0) throw new RangeError(`act_quant needs K to be a multiple of ${BLOCK}, got ${K}`);
  const groups = K / BLOCK;
  const codes = new Uint8Array(M * K);
  const scales = new Float32Array(M * groups);
  for (let m = 0; m < M; m++) {
    for (let g = 0; g < groups; g++) {
      const begin = m * K + g * BLOCK;
      let amax = 0;
      for (let j = 0; j < BLOCK; j++) amax = Math.max(amax, Math.abs(x[begin + j]));
      // a float32 division; the JS double quotient rounds to the same float32
      const s0 = Math.fround(Math.max(amax, AMAX_FLOOR) / E4M3_MAX);
      const s = scaleFormat === 'ue8m0' ? roundUpPow2(s0) : s0;
      scales[m * groups + g] = s;
      for (let j = 0; j < BLOCK; j++) codes[begin + j] = f32ToE4m3(Math.fround(x[begin + j] / s));
    }
  }
  return { codes, scales };
}
