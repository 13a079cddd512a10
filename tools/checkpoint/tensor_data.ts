// Float32 values -> the bytes a released DeepSeek-V3 checkpoint stores: BF16, F32, and block-scaled
// FP8 (src/model/MATH.md 3; `fp8Quantize` gives the bits of the engine's reference quantiser,
// src/kernels/quantize_fp8.ref.ts, faster; tensor_data.test.ts holds them to it).
// All little-endian, as safetensors requires.

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

/**
 * Block-scaled FP8 of a row-major [rows, cols] float32 weight: bit for bit the engine's reference
 * `quantizeFp8` (src/kernels/quantize_fp8.ref.ts: S = fround(amax / 448) per 128x128 block, codes
 * f32ToE4m3(W / S)), about 20 times faster, which a real-size checkpoint needs. The quotient is
 * rounded to float32 as the reference does, then rounded to 3 mantissa bits on its bits.
 */
export function fp8Quantize(w: Float32Array, rows: number, cols: number): { codes: Uint8Array; scaleInv: Float32Array } {
  const rowBlocks = Math.ceil(rows / 128);
  const colBlocks = Math.ceil(cols / 128);
  const codes = new Uint8Array(rows * cols);
  const scaleInv = new Float32Array(rowBlocks * colBlocks);
  const q = new Float32Array(128);
  const qBits = new Uint32Array(q.buffer);
  for (let bi = 0; bi < rowBlocks; bi++) {
    const r0 = bi * 128;
    const r1 = Math.min(r0 + 128, rows);
    for (let bj = 0; bj < colBlocks; bj++) {
      const c0 = bj * 128;
      const c1 = Math.min(c0 + 128, cols);
      let amax = 0;
      for (let r = r0; r < r1; r++) {
        for (let i = r * cols + c0, end = r * cols + c1; i < end; i++) {
          const a = Math.abs(w[i]);
          if (a > amax) amax = a;
        }
      }
      const zero = amax < 2 ** -126;
      const s = zero ? 1 : Math.fround(amax / 448);
      scaleInv[bi * colBlocks + bj] = s;
      if (zero) continue;
      for (let r = r0; r < r1; r++) {
        const at = r * cols + c0;
        const n = c1 - c0;
        for (let k = 0; k < n; k++) q[k] = w[at + k] / s; // rounded to float32, as f32ToE4m3 does
        for (let k = 0; k < n; k++) codes[at + k] = e4m3FromBits(qBits[k], q[k]);
      }
    }
  }
  return { codes, scaleInv };
}

/** f32ToE4m3 (src/kernels/fp8_e4m3.ref.ts) of the float32 `value` whose bits are `bits`. */
function e4m3FromBits(bits: number, value: number): number {
  const sign = bits >>> 31 ? 0x80 : 0;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return 0x7f; // NaN
  if (abs >= 0x43e00000) return sign | 0x7e; // |v| >= 448 saturates
  if (abs < 0x3c800000) {
    // below 2^-6: subnormal steps of 2^-9, ties to even; 8 is the smallest normal, 0x08
    const x = Math.abs(value) * 512;
    const r = Math.round(x);
    return sign | (r - x === 0.5 && r % 2 !== 0 ? r - 1 : r);
  }
  // Round the 23-bit mantissa to 3 bits, ties to even (a carry moves into the exponent), then
  // rebias the exponent from 127 to 7: (e + 127) << 3 - (127 - 7) << 3.
  return sign | (((abs + 0x7ffff + ((abs >>> 20) & 1)) >>> 20) - 960);
}
