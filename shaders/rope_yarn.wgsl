// RoPE on interleaved pairs, in place, f32 (src/model/MATH.md 4.3; official apply_rotary_emb):
// pair i of the rope slice of every head of every row rotated by rope_rotate (the shared snippet
// shaders/rope_rotate.wgsl, which also holds the sin/cos evaluation and its error bound), with
// p = positions[row]. Used for k_pe in the cache write; q_pe is rotated by absorb_q
// (shaders/mla_absorb.wgsl) with the same function.
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

  let at = row * params.row_stride + head * params.head_stride + params.rope_offset + 2u * i;
  let rotated = rope_rotate(vec2(x[at], x[at + 1u]), positions[row], inv_freq[i]);
  x[at] = rotated.x;
  x[at + 1u] = rotated.y;
}
