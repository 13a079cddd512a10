// The first half of the routed experts (DEEPSEEK_V3_MATH.md 4.5, 4.6): for each token t and each
// of its chosen experts e = topk_ids[t, k], the row pair = t * topk + k of
//   h[pair, i] = silu(x[t] . gate_e[i]) * (x[t] . up_e[i])        i < moe_inter_dim
// with gate_e = gate_proj, up_e = up_proj of expert e, block-scaled FP8 (moe_experts_common.wgsl).
// Each 128-wide block of a dot product is summed, then scaled by S (the official fp8_gemm order).
// Reference: src/kernels/moe_experts.ref.ts. Wrapper: src/kernels/moe_experts.ts.
//
// Variant axis `path`:
//   decode   one invocation per (pair, i): expert ids read from topk_ids, no grouping (T <= 4).
//            Dispatch (ceil(moe_inter / WORKGROUP_SIZE), T * topk).
//   grouped  the pairs sorted by expert (moe_group.wgsl); workgroup (i tile, e, slice) takes the
//            rows of expert e in tiles of 4 rows, tile slice, slice + slices, ...; each decoded
//            weight quad serves 4 rows. Experts chosen by no token exit at once.
//            Dispatch (ceil(moe_inter / WORKGROUP_SIZE), E, slices).
// One invocation per output column, no barrier (CPU adapters, where a barrier is very expensive).
//
// Bindings:
//   0 params            uniform ExpertParams (n = moe_inter_dim, k = hidden_size)
//   1 x                 [T, hidden_size] f32
//   2 gate_weight       stacked gate_proj.weight, u32 words
//   3 gate_scale        stacked gate_proj.weight_scale_inv, f32
//   4 up_weight         stacked up_proj.weight, u32 words
//   5 up_scale          stacked up_proj.weight_scale_inv, f32
//   6 h                 [T * topk, moe_inter_dim] f32, written (row = pair)
//   7 topk_ids          [T * topk] u32                    (decode)
//   7 expert_offsets    [E + 1] u32, rows of expert e: expert_offsets[e] .. expert_offsets[e + 1]  (grouped)
//   8 sorted_pairs      [T * topk] u32, the pairs in expert order                                 (grouped)

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> params: ExpertParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gate_weight: array<u32>;
@group(0) @binding(3) var<storage, read> gate_scale: array<f32>;
@group(0) @binding(4) var<storage, read> up_weight: array<u32>;
@group(0) @binding(5) var<storage, read> up_scale: array<f32>;
@group(0) @binding(6) var<storage, read_write> h: array<f32>;
#if path == decode
@group(0) @binding(7) var<storage, read> topk_ids: array<u32>;
#else
@group(0) @binding(7) var<storage, read> expert_offsets: array<u32>;
@group(0) @binding(8) var<storage, read> sorted_pairs: array<u32>;
#endif

fn silu(z: f32) -> f32 {
  return z / (1.0 + exp(-z)); // z * sigmoid(z); -0 for z -> -inf, as torch
}

// x[t, j .. j+3], zero past hidden_size.
fn x_quad(t: u32, j: u32) -> vec4<f32> {
  let i = t * params.k + j;
  return mask_past_k(vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]), j);
}

fn gate_quad(e: u32, row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(e, row, j);
  return splice_codes(gate_weight[w], gate_weight[w + 1u], row, j);
}

fn up_quad(e: u32, row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(e, row, j);
  return splice_codes(up_weight[w], up_weight[w + 1u], row, j);
}

#if path == decode
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wid.x * WORKGROUP_SIZE + lid;
  let pair = wid.y;
  if (i >= params.n) {
    return;
  }
  let e = topk_ids[pair];
  let t = pair / params.topk;
  var gate = 0.0;
  var up = 0.0;
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var gate_block = 0.0;
    var up_block = 0.0;
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      let xq = x_quad(t, j);
      gate_block += dot(xq, gate_quad(e, i, j));
      up_block += dot(xq, up_quad(e, i, j));
    }
    let s = expert_scale_index(e, i, kb);
    gate += gate_block * gate_scale[s];
    up += up_block * up_scale[s];
  }
  h[pair * params.n + i] = silu(gate) * up;
}
#elif path == grouped
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = wid.x * WORKGROUP_SIZE + lid;
  let e = wid.y;
  let rows_end = expert_offsets[e + 1u];
  if (i >= params.n) {
    return;
  }
  for (var r = expert_offsets[e] + 4u * wid.z; r < rows_end; r += 4u * nwg.z) {
    // rows r .. r+3; past rows_end, repeat the last row (computed, not stored)
    let last = min(r + 4u, rows_end) - 1u;
    let pairs = vec4<u32>(sorted_pairs[r], sorted_pairs[min(r + 1u, last)], sorted_pairs[min(r + 2u, last)], sorted_pairs[min(r + 3u, last)]);
    let tokens = pairs / vec4<u32>(params.topk);
    var gate = vec4<f32>(0.0);
    var up = vec4<f32>(0.0);
    for (var kb = 0u; kb < params.k_blocks; kb++) {
      var gate_block = vec4<f32>(0.0);
      var up_block = vec4<f32>(0.0);
      let j_end = min(kb * BLOCK + BLOCK, params.k);
      for (var j = kb * BLOCK; j < j_end; j += 4u) {
        let g = gate_quad(e, i, j);
        let u = up_quad(e, i, j);
        let x0 = x_quad(tokens.x, j);
        let x1 = x_quad(tokens.y, j);
        let x2 = x_quad(tokens.z, j);
        let x3 = x_quad(tokens.w, j);
        gate_block += vec4<f32>(dot(x0, g), dot(x1, g), dot(x2, g), dot(x3, g));
        up_block += vec4<f32>(dot(x0, u), dot(x1, u), dot(x2, u), dot(x3, u));
      }
      let s = expert_scale_index(e, i, kb);
      gate += gate_block * gate_scale[s];
      up += up_block * up_scale[s];
    }
    for (var m = 0u; m < last + 1u - r; m++) {
      h[pairs[m] * params.n + i] = silu(gate[m]) * up[m];
    }
  }
}
#endif
