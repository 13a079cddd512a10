// The second half of the routed experts (DEEPSEEK_V3_MATH.md 4.5, 4.6): down_proj of expert
// e = topk_ids[t, k] applied to h[pair] (pair = t * topk + k, from moe_experts_gate_up.wgsl),
// block-scaled FP8 (moe_experts_common.wgsl); each 128-wide block summed, then scaled by S.
// Reference: src/kernels/moe_experts.ref.ts. Wrapper: src/kernels/moe_experts.ts.
//
// Variant axis `path`:
//   decode   out[t, j] = sum over k in order of topk_weights[t, k] * (h[pair] . down_e[j]): the
//            weighted sum over the chosen experts inside the kernel (no atomics, no combine pass).
//            One invocation per (t, j). Dispatch (ceil(hidden_size / WORKGROUP_SIZE), T).
//   grouped  y[pair, j] = h[pair] . down_e[j] over the pairs sorted by expert (moe_group.wgsl),
//            tiles of 4 rows of one expert as in moe_experts_gate_up.wgsl; moe_combine.wgsl
//            then weighs and adds the pairs of each token. Dispatch (ceil(hidden_size / WORKGROUP_SIZE), E, slices).
// One invocation per output column, no barrier (CPU adapters, where a barrier is very expensive).
//
// Bindings:
//   0 params            uniform ExpertParams (n = hidden_size, k = moe_inter_dim)
//   1 h                 [T * topk, moe_inter_dim] f32
//   2 down_weight       stacked down_proj.weight, u32 words
//   3 down_scale        stacked down_proj.weight_scale_inv, f32
//   4 out               decode: [T, hidden_size] f32; grouped: y [T * topk, hidden_size] f32; written
//   5 topk_ids          [T * topk] u32        (decode)
//   6 topk_weights      [T * topk] f32        (decode)
//   5 expert_offsets    [E + 1] u32           (grouped)
//   6 sorted_pairs      [T * topk] u32        (grouped)

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> params: ExpertParams;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> down_weight: array<u32>;
@group(0) @binding(3) var<storage, read> down_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#if path == decode
@group(0) @binding(5) var<storage, read> topk_ids: array<u32>;
@group(0) @binding(6) var<storage, read> topk_weights: array<f32>;
#else
@group(0) @binding(5) var<storage, read> expert_offsets: array<u32>;
@group(0) @binding(6) var<storage, read> sorted_pairs: array<u32>;
#endif

// h[pair, j .. j+3], zero past moe_inter_dim.
fn h_quad(pair: u32, j: u32) -> vec4<f32> {
  let i = pair * params.k + j;
  return mask_past_k(vec4<f32>(h[i], h[i + 1u], h[i + 2u], h[i + 3u]), j);
}

fn down_quad(e: u32, row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(e, row, j);
  return splice_codes(down_weight[w], down_weight[w + 1u], row, j);
}

#if path == decode
// h[pair] . down_e[row], block by block.
fn down_dot(e: u32, row: u32, pair: u32) -> f32 {
  var acc = 0.0;
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = 0.0;
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block += dot(h_quad(pair, j), down_quad(e, row, j));
    }
    acc += block * down_scale[expert_scale_index(e, row, kb)];
  }
  return acc;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x * WORKGROUP_SIZE + lid;
  let t = wid.y;
  if (row >= params.n) {
    return;
  }
  var acc = 0.0;
  for (var k = 0u; k < params.topk; k++) {
    let pair = t * params.topk + k;
    acc += topk_weights[pair] * down_dot(topk_ids[pair], row, pair);
  }
  out[t * params.n + row] = acc;
}
#elif path == grouped
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x * WORKGROUP_SIZE + lid;
  let e = wid.y;
  let rows_end = expert_offsets[e + 1u];
  if (row >= params.n) {
    return;
  }
  for (var r = expert_offsets[e] + 4u * wid.z; r < rows_end; r += 4u * nwg.z) {
    // sorted rows r .. r+3; past rows_end, repeat the last row (computed, not stored)
    let last = min(r + 4u, rows_end) - 1u;
    let pairs = vec4<u32>(sorted_pairs[r], sorted_pairs[min(r + 1u, last)], sorted_pairs[min(r + 2u, last)], sorted_pairs[min(r + 3u, last)]);
    var acc = vec4<f32>(0.0);
    for (var kb = 0u; kb < params.k_blocks; kb++) {
      var block = vec4<f32>(0.0);
      let j_end = min(kb * BLOCK + BLOCK, params.k);
      for (var j = kb * BLOCK; j < j_end; j += 4u) {
        let w = down_quad(e, row, j);
        block += vec4<f32>(dot(h_quad(pairs.x, j), w), dot(h_quad(pairs.y, j), w), dot(h_quad(pairs.z, j), w), dot(h_quad(pairs.w, j), w));
      }
      acc += block * down_scale[expert_scale_index(e, row, kb)];
    }
    for (var m = 0u; m < last + 1u - r; m++) {
      out[pairs[m] * params.n + row] = acc[m];
    }
  }
}
#endif
