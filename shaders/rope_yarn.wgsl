// RoPE on interleaved pairs, in place, f32 (src/model/MATH.md 4.3; official apply_rotary_emb):
//   a = f32(p) * inv_freq[i]          one float32 multiply, as torch.outer(t, freqs)
//   x[2i]   = x[2i] * cos(a) - x[2i+1] * sin(a)
//   x[2i+1] = x[2i] * sin(a) + x[2i+1] * cos(a)
// for pair i of the rope slice of every head of every row, p = positions[row].
// Reference: src/kernels/rope_yarn.ref.ts. Wrapper: src/kernels/rope_yarn.ts.
//
// Bindings:
//   0 params     uniform Params
//   1 x          f32, read_write; pair i of head h of row t starts at
//                t * row_stride + h * head_stride + rope_offset + 2 * i
//                (q: [T, H, dq], head_stride dq, rope_offset qk_nope_head_dim;
//                 k_pe: kv_a_proj_with_mqa rows [T, rkv + dr], heads 1, rope_offset rkv)
//   2 positions  [rows] u32, absolute positions
//   3 inv_freq   [half_dim] f32, the YaRN table of src/model/rope.ts
//
// Dispatch: one invocation per pair, rows * heads * half_dim in all, WG per workgroup, the
// workgroups laid out over (x, y) as wid.y * nwg.x + wid.x.
//
// cos/sin: WGSL's builtins are only specified to 2^-11 absolute error on [-pi, pi] and not at
// all beyond, while angles reach max_position (163840 for V3) here. So the angle is reduced
// to r in about [-pi/4, pi/4] with a = k * pi/2 + r (Cody-Waite, pi/2 split in three parts),
// and sin r, cos r come from their Taylor series, which on that interval are within 2e-9 of
// the truth. See sin_cos below for the error bound.

struct Params {
  rows: u32,
  heads: u32,
  half_dim: u32,
  row_stride: u32,
  head_stride: u32,
  rope_offset: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;

override WG: u32 = 64;

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

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let id = (wid.y * nwg.x + wid.x) * WG + lid;
  if (id >= params.rows * params.heads * params.half_dim) {
    return;
  }
  let i = id % params.half_dim;
  let head = (id / params.half_dim) % params.heads;
  let row = id / (params.half_dim * params.heads);

  let cs = sin_cos(f32(positions[row]) * inv_freq[i]);
  let at = row * params.row_stride + head * params.head_stride + params.rope_offset + 2u * i;
  let x0 = x[at];
  let x1 = x[at + 1u];
  x[at] = x0 * cs.x - x1 * cs.y;
  x[at + 1u] = x0 * cs.y + x1 * cs.x;
}
