// The two per-head products of absorbed MLA attention (src/model/MATH.md 4.4; official model.py
// MLA.forward with attn_impl "absorb"): wkv_b = weight_dequant(kv_b_proj.weight) viewed as
// [heads, dn + dv, rkv], W_UK[h] = wkv_b[h, :dn], W_UV[h] = wkv_b[h, dn:]. All math f32.
//   absorb_q  q_lat[r, h, c] = sum_{d < dn} q[r, h, d] * W_UK[h][d, c]     (einsum "shd,hdc->shc")
//             q_pe[r, h, :]  = RoPE(q[r, h, dn:], positions[r])            (apply_rotary_emb)
//   expand_o  o[r, h, v]     = sum_{c < rkv} o_lat[r, h, c] * W_UV[h][v, c] (einsum "shc,hdc->shd")
// RoPE is rope_rotate of the shared snippet shaders/rope_rotate.wgsl, the arithmetic of
// shaders/rope_yarn.wgsl: rotating q_pe as it is copied out saves the rope dispatch (and a pass over
// q) that rotated q in place before. q itself is left unrotated; only q_pe is read after this.
// kv_b_proj is read by the loaders of the shared snippet shaders/kv_b_proj.wgsl. expand_o follows
// mla_prefill, and mla_decode's merge past one split; with one split mla_decode applies W_UV itself
// with the same loop (shaders/mla_decode.wgsl).
// Reference: src/kernels/mla_absorb.ref.ts. Wrapper: src/kernels/mla_absorb.ts.
//
// Variant axes (src/gpu/shader_compose.ts):
//   step     absorb_q | expand_o (the bindings above)
//   weights  fp8   kv_b_proj.weight [heads * (dn + dv), rkv] e4m3 bytes, row-major, 4 per u32, times
//                  weight_scale_inv [ceil(heads * (dn + dv) / 128), ceil(rkv / 128)] f32; the 128-row
//                  blocks do not align with heads, so each element takes the scale of its own block
//            bf16  the same matrix in bf16 (the top half of an f32), 2 per u32
//            f32   the same matrix in f32 (kept as u32 bits)
//
// Bindings:
//   0 params            uniform Params
//   1 q | o_lat         absorb_q: [rows, heads, dn + dr] f32; expand_o: [rows, heads, rkv] f32
//   2 kv_b              u32 words holding kv_b_proj.weight as above
//   3 q_lat | o         absorb_q: [rows, heads, rkv] f32; expand_o: [rows, heads * dv] f32; written
//   4 weight_scale_inv  fp8 only
//   5 q_pe              absorb_q only: [rows, heads, dr] f32, written
//   6 positions         absorb_q only: [rows] u32, the absolute position of each row
//   7 inv_freq          absorb_q only: [dr / 2] f32, the YaRN table (src/kernels/rope_tables.ts)
//
// Dispatch: absorb_q: one invocation per 4 consecutive q_lat columns and per q_pe pair,
// rows * heads * (ceil(rkv / 4) + dr / 2); expand_o: one per output element, rows * heads * dv. Both
// read kv_b_proj a quad of columns at a time (one word of FP8 codes, one scale), which on CPU
// adapters, where every read is a gather, matters more than the FMAs. Workgroups = ceil(count /
// WORKGROUP_SIZE), laid out over (x, y) as group = wid.y * nwg.x + wid.x.

struct Params {
  rows: u32,
  heads: u32,
  dn: u32, // qk_nope_head_dim
  dr: u32, // qk_rope_head_dim
  dv: u32, // v_head_dim
  rkv: u32, // kv_lora_rank
  scale_cols: u32, // ceil(rkv / 128): row stride of weight_scale_inv
  count: u32, // invocations that write something
}

// rkv % 4 == 0 (every real checkpoint): each row of kv_b_proj starts on a word, so a quad of
// columns is one FP8 word and lies in one 128-column scale block (a pipeline constant).
override RKV_ALIGNED: bool = false;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> kv_b: array<u32>;
#if step == absorb_q
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> q_lat: array<f32>;
@group(0) @binding(5) var<storage, read_write> q_pe: array<f32>;
@group(0) @binding(6) var<storage, read> positions: array<u32>;
@group(0) @binding(7) var<storage, read> inv_freq: array<f32>;
#else
@group(0) @binding(1) var<storage, read> o_lat: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
#endif
#if weights == fp8
@group(0) @binding(4) var<storage, read> weight_scale_inv: array<f32>;
#endif

override WORKGROUP_SIZE: u32 = 64;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
  if (index >= params.count) {
    return;
  }
#if step == absorb_q
  // index runs over [rows, heads, quads + dr / 2]: quads of q_lat columns, then the q_pe pairs.
  let quads = (params.rkv + 3u) / 4u;
  let width = quads + params.dr / 2u;
  let rh = index / width; // r * heads + h
  let j = index - rh * width;
  let q_row = rh * (params.dn + params.dr);
  if (j >= quads) {
    let i = j - quads; // pair i of the rope part
    let at = q_row + params.dn + 2u * i;
    let rotated = rope_rotate(vec2(q[at], q[at + 1u]), positions[rh / params.heads], inv_freq[i]);
    let to = rh * params.dr + 2u * i;
    q_pe[to] = rotated.x;
    q_pe[to + 1u] = rotated.y;
    return;
  }
  let c0 = 4u * j;
  let w_uk = (rh % params.heads) * (params.dn + params.dv); // row of W_UK[h][0, :] in kv_b_proj
  var acc = vec4<f32>(0.0);
  for (var d = 0u; d < params.dn; d++) {
    acc += q[q_row + d] * kv_b_quad(w_uk + d, c0);
  }
  let at = rh * params.rkv + c0;
  if (c0 + 3u < params.rkv) {
    q_lat[at] = acc.x;
    q_lat[at + 1u] = acc.y;
    q_lat[at + 2u] = acc.z;
    q_lat[at + 3u] = acc.w;
  } else {
    for (var c = 0u; c0 + c < params.rkv; c++) {
      q_lat[at + c] = acc[c];
    }
  }
#else
  // index runs over [rows, heads, dv], the layout of o.
  let rh = index / params.dv; // r * heads + h
  let v = index - rh * params.dv;
  let w_uv = (rh % params.heads) * (params.dn + params.dv) + params.dn + v; // row of W_UV[h][v, :]
  let lat = rh * params.rkv;
  var acc = 0.0;
  for (var c = 0u; c < params.rkv; c += 4u) {
    var o_quad = vec4<f32>(o_lat[lat + c], o_lat[lat + c + 1u], o_lat[lat + c + 2u], o_lat[lat + c + 3u]);
    if (!RKV_ALIGNED) {
      // past rkv: the next head's values (or a clamped read), weighted by nothing
      o_quad = select(vec4<f32>(0.0), o_quad, vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.rkv));
    }
    acc += dot(o_quad, kv_b_quad(w_uv, c));
  }
  o[index] = acc;
#endif
}
