// e4m3fn (torch.float8_e4m3fn) decode and encode: a shared snippet, prepended to the FP8 kernels
// by src/kernels/shader_compose.ts. Spec and reference: src/kernels/fp8_e4m3.ref.ts
// (src/model/MATH.md section 3): bits `s eeee mmm`, bias 7, subnormals m/8 * 2^-6,
// largest finite 0x7E = 448, 0x7F and 0xFF are NaN, no infinities.

// Four codes packed in a u32 (byte j = element j, little-endian) to their f32 values. Every FP8
// matrix kernel runs this per weight word, so it is written for few and cheap operations (on CPU
// adapters it is ALU work next to the FMAs). Code j's sign goes to bit 31 and its `eeee mmm` to
// bits 20 .. 26, 4 bits above the f32 exponent and fraction; the left shifts are written as
// multiplications by powers of two, which SwiftShader runs faster (measured: a vector shift costs
// it more than a multiply; GPU compilers turn either into the same instruction).
fn e4m3x4_to_f32(word: u32) -> vec4<f32> {
  let sign = vec4<u32>(word * 0x1000000u, word * 0x10000u, word * 0x100u, word) & vec4<u32>(0x80000000u);
  let magnitude = vec4<u32>(word * 0x100000u, word * 0x1000u, word * 0x10u, word >> 4u) & vec4<u32>(0x07F00000u);
  // e >= 1: rebias the exponent 7 -> 127, giving 2^(e-7) * (1 + m/8).
  let normal = bitcast<vec4<f32>>(magnitude + vec4<u32>(120u << 23u));
  // e = 0: the same bits give 2^-7 * (1 + m/8); the subnormal m * 2^-9 is twice that minus 2^-6,
  // exact in f32, and no f32 subnormal appears (a GPU may flush those to zero).
  var value = select(normal, normal * 2.0 - 0.015625, magnitude < vec4<u32>(0x00800000u));
  // 0x7F: a quiet NaN built at run time (a constant NaN is a WGSL compile error).
  value = select(value, bitcast<vec4<f32>>(magnitude | vec4<u32>(0x7FC00000u)), magnitude == vec4<u32>(0x07F00000u));
  return bitcast<vec4<f32>>(bitcast<vec4<u32>>(value) | sign);
}

fn e4m3_to_f32(code: u32) -> f32 {
  return e4m3x4_to_f32(code & 0xFFu).x;
}

// The e4m3 code nearest to x, ties to even; |x| > 448 saturates to ±448 (as the official Triton
// act_quant's conversion does), NaN gives 0x7F, -0 gives 0x80.
fn f32_to_e4m3(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 24u) & 0x80u;
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return 0x7Fu;
  }
  let a = min(abs(x), 448.0);
  if (a < 0.015625) {
    // below 2^-6: subnormal steps of 2^-9. round() is half-to-even in WGSL; 8 becomes 0x08 = 2^-6.
    return sign | u32(round(a * 512.0));
  }
  // Round the f32 fraction to 3 bits, half to even (a carry correctly bumps the exponent), then
  // rebias the exponent 127 -> 7: code = (f32 bits >> 20) - (120 << 3).
  let b = bitcast<u32>(a);
  let rounded = b + 0x7FFFFu + ((b >> 20u) & 1u);
  return sign | ((rounded >> 20u) - (120u << 3u));
}

// amax / 448 rounded to nearest as IEEE f32 division does. WGSL's `/` may be 2.5 ulp off, and the
// scale must match the official one bit for bit, so divide the 24-bit significand by 7 in
// integers (448 = 7 * 2^6). amax is a positive normal f32. Shared by act_quant.wgsl and quantize_fp8.wgsl.
fn div_448(amax: f32) -> f32 {
  let bits = bitcast<u32>(amax);
  let significand = (bits & 0x7FFFFFu) | 0x800000u; // amax = significand * 2^(E - 150)
  // amax / 448 = (significand * 8 / 7) * 2^(E - 159); shift by 2 instead of 3 when 8/7 would
  // carry the quotient past 2^24, so q is always a 24-bit significand.
  let wide = significand >= (7u << 21u);
  let numerator = significand << select(3u, 2u, wide);
  var q = numerator / 7u;
  if (2u * (numerator % 7u) > 7u) {
    q += 1u; // nearest; 7 is odd, so there are no ties
  }
  var exponent = (bits >> 23u) - select(9u, 8u, wide);
  if (q == 0x1000000u) {
    q = 0x800000u;
    exponent += 1u;
  }
  return bitcast<f32>((exponent << 23u) | (q & 0x7FFFFFu));
}
