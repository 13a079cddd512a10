// act_quant, the executable spec (src/model/MATH.md section 5; the official kernel.py
// act_quant with scale_fmt None): per row, per contiguous group of 128 columns,
//   amax = max(max |x|, 1e-4),  s = amax / 448,  code = e4m3_rne(x / s)
// all in float32. The WGSL twin is shaders/act_quant.wgsl.

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

export function actQuantRef(x: Float32Array, M: number, K: number): ActQuantized {
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
      const s = Math.fround(Math.max(amax, AMAX_FLOOR) / E4M3_MAX);
      scales[m * groups + g] = s;
      for (let j = 0; j < BLOCK; j++) codes[begin + j] = f32ToE4m3(Math.fround(x[begin + j] / s));
    }
  }
  return { codes, scales };
}
