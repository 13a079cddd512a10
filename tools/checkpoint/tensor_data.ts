// Float32 values -> the bytes a released DeepSeek-V3 checkpoint stores: BF16, F32, and block-scaled
// FP8 (src/model/MATH.md 3; the quantiser is the engine's reference, src/kernels/quantize_fp8.ref.ts).
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
