// RoPE's rotation of one interleaved pair, f32: a shared snippet, prepended by
// src/gpu/shader_compose.ts to shaders/rope_yarn.wgsl (k_pe in place) and to the absorb_q step of
// shaders/mla_absorb.wgsl (q_pe as it is copied out), so both rotate with the same arithmetic
// (src/model/MATH.md 4.3; official apply_rotary_emb). Reference: src/kernels/rope_yarn.ref.ts.
//   a = f32(p) * inv_freq[i]          one float32 multiply, as torch.outer(t, freqs)
//   x[2i]   = x[2i] * cos(a) - x[2i+1] * sin(a)
//   x[2i+1] = x[2i] * sin(a) + x[2i+1] * cos(a)
//
// cos/sin: WGSL's builtins are only specified to 2^-11 absolute error on [-pi, pi] and not at
// all beyond, while angles reach max_position (163840 for V3) here. So the angle is reduced
// to r in about [-pi/4, pi/4] with a = k * pi/2 + r (Cody-Waite, pi/2 split in three parts),
// and sin r, cos r come from their Taylor series, which on that interval are within 2e-9 of
// the truth. See sin_cos below for the error bound.

// pi/2 = PIO2_A + PIO2_B + PIO2_C. PIO2_A and PIO2_B have 5 and 7 significant bits, so k * PIO2_A
// and k * PIO2_B are exact float32 products for k < 2^17 (angles below ~205000), and
// a - k * PIO2_A, then - k * PIO2_B, are exact subtractions. PIO2_C is pi/2 - PIO2_A - PIO2_B
// rounded to float32 (its error is below 4e-12 per unit of k).
const PIO2_A: f32 = 1.5625;
const PIO2_B: f32 = 0.0081787109375;
const PIO2_C: f32 = 1.17615855e-4;
const TWO_OVER_PI: f32 = 0.636619747;

// (cos a, sin a). Error: the reduction adds at most k * 1.1e-11 + 1 ulp of |r| (k = a / (pi/2);
// PIO2_C's own error and the rounding of k * PIO2_C), so 9e-8 at a = 4096 and 1.2e-6 at
// a = 163840; the series 2e-9, and the float32 evaluation about 2 ulp (2.4e-7).
fn sin_cos(a: f32) -> vec2<f32> {
  let k = round(a * TWO_OVER_PI);
  let r = ((a - k * PIO2_A) - k * PIO2_B) - k * PIO2_C;
  let r2 = r * r;
  // sin r = r - r^3/3! + r^5/5! - r^7/7! + r^9/9!,  cos r = 1 - r^2/2! + ... + r^8/8! - r^10/10!
  let s = r + r * r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0))));
  let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0)))));
  // a = k * pi/2 + r: rotate (cos r, sin r) by quadrant k mod 4.
  switch (i32(k) & 3) {
    case 0: { return vec2(c, s); }
    case 1: { return vec2(-s, c); }
    case 2: { return vec2(-c, -s); }
    default: { return vec2(s, -c); }
  }
}

// The pair (x[2i], x[2i+1]) rotated by the angle of `position` and inv_freq[i].
fn rope_rotate(pair: vec2<f32>, position: u32, inv_freq: f32) -> vec2<f32> {
  let cs = sin_cos(f32(position) * inv_freq);
  return vec2(pair.x * cs.x - pair.y * cs.y, pair.x * cs.y + pair.y * cs.x);
}
