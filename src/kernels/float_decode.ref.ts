// Little-endian f32 and f16 bytes as f32 values, for the CPU references (bf16 and e4m3 are
// decoded in gemm_fp8.ref.ts and fp8_e4m3.ref.ts).

/** Little-endian f32 values (copied: safetensors offsets need not be 4-byte aligned). */
export function decodeF32(bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float32Array.from({ length: bytes.byteLength / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

/** Little-endian IEEE half values: sign, 5-bit exponent (bias 15), 10-bit mantissa. */
export function decodeF16(bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float32Array.from({ length: bytes.byteLength / 2 }, (_, i) => {
    const h = view.getUint16(2 * i, true);
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) return sign * m * 2 ** -24;
    if (e === 31) return m ? NaN : sign * Infinity;
    return sign * (1 + m / 1024) * 2 ** (e - 15);
  });
}
