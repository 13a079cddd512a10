// Float32 values -> the bytes a released DeepSeek-V3 checkpoint stores: BF16, F32, and block-scaled
// FP8 (src/model/MATH.md 3: S = amax(|block|) / 448 per 128x128 block, codes = e4m3(W / S)).
// All little-endian, as safetensors requires.

import { BLOCK } from '../../src/gpu/kernel.ts';
import { E4M3_MAX, f32ToE4m3 as encodeE4m3 } from '../../src/kernels/fp8_e4m3.ref.ts';


/** float32 -> bfloat16, round to nearest even (the upper 16 bits of the rounded float32). */
export function bf16Bytes(values: Float32Array): Uint8Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint8Array(values.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const b = bits[i];
    const rounded = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    view.setUint16(2 * i, rounded, true);
  }
  return out;
}

/** The float32 value of bf16 bytes (for tests). */
export function bf16Values(bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bits = new Uint32Array(bytes.byteLength / 2);
  for (let i = 0; i < bits.length; i++) bits[i] = view.getUint16(2 * i, true) << 16;
  return new Float32Array(bits.buffer);
}

export function f32Bytes(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i], true);
  return out;
}

export interface Fp8Weight {
  /** [out, in] e4m3 codes. */
  readonly codes: Uint8Array;
  /** [ceil(out/128), ceil(in/128)] float32 block scales (`weight_scale_inv`). */
  readonly scaleInv: Float32Array;
}

/**
 * Quantise a row-major [out, in] weight per 128x128 block (edge blocks partial). The block's
 * largest magnitude maps to 448 exactly; an all-zero block gets scale 1 and zero codes.
 */
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
      const s = amax > 0 ? Math.fround(amax / E4M3_MAX) : 1;
      scaleInv[bi * colBlocks + bj] = s;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) codes[r * inDim + c] = encodeE4m3(w[r * inDim + c] / s);
    }
  }
  return { codes, scaleInv };
}
