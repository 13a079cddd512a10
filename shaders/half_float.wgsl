// IEEE half -> f32 bits, a shared snippet (prepended by src/gpu/shader_compose.ts) for the
// kernels that read F16 tensors: embed_gather.wgsl, quantize_fp8.wgsl.

// The f32 bits of an IEEE half: rebias the exponent (15 -> 127) and widen the mantissa; a
// subnormal half m * 2^-24 becomes a normal f32, 2^p * (m / 2^p) with p its leading bit.
// Branch-free (a branch costs more than this arithmetic on CPU adapters).
fn f16_to_f32_bits(half: u32) -> u32 {
  let sign = (half & 0x8000u) << 16u;
  let e = (half >> 10u) & 0x1Fu;
  let m = half & 0x3FFu;
  let normal = sign | ((e + 112u) << 23u) | (m << 13u);
  let inf_nan = sign | 0x7F800000u | (m << 13u);
  let p = firstLeadingBit(m); // garbage when m == 0, and then not selected
  let subnormal = select(sign, sign | ((p + 103u) << 23u) | ((m << ((23u - p) & 31u)) & 0x7FFFFFu), m != 0u);
  return select(select(normal, inf_nan, e == 31u), subnormal, e == 0u);
}
