// The second half of the routed experts (src/model/MATH.md 4.5, 4.6): down_proj of expert
// e = topk_ids[t, k] applied to h[pair] (pair = t * topk + k, from moe_experts_gate_up.wgsl),
// block-scaled FP8 or bf16 (the readers and the summation order are in moe_experts_common.wgsl):
// each 128-wide block summed, then added times S (fp8) or as it is (bf16).
// Reference: src/kernels/moe_experts.ref.ts. Wrapper: src/kernels/moe_experts.ts.
//
// Variant axis `weights`: fp8 (with the scale binding 3) or bf16 (no binding 3).
// Variant axis `path`:
//   decode        out[t, j] = sum over k in order of topk_weights[t, k] * (h[pair] . down_e[j]): the
//                 weighted sum over the chosen experts inside the kernel (no atomics, no combine pass).
//                 One invocation per (t, 4 columns j). Dispatch (ceil(hidden_size / (4 * WORKGROUP_SIZE)), T).
//   decode_route  the decode path that routes first (no moe_route dispatch): each invocation runs
//                 the router's selection for its token (moe_route_common.wgsl, the code of
//                 moe_route.wgsl: the picks' scores and their sum, then the picks again with their
//                 weights) and invocation 0 of workgroup (0, t) writes the token's topk_ids and
//                 topk_weights (for the plan's routing capture). Variant axes `routing` and
//                 `route_reduce` as moe_route.wgsl's. Variant axis `shared`: fused adds the shared experts (one expert
//                 of the same moe_inter_dim, its own down_proj at bindings 7, 8), whose h the gate_up
//                 wrote at row T * topk + t: out[t, j] = routed sum + (h[T * topk + t] . shared_down[j]),
//                 routed first, as the official MoE.forward's y + z (bit for bit the add of the two
//                 that ran as a separate pass). Dispatch as decode.
//                 Variant axis `reads` (T >= 2: the MTP verify step): per_pair, the above (each
//                 token's invocation reads its K experts' rows, so an expert two tokens chose is
//                 read twice). per_expert (moe_experts_union.wgsl): one invocation serves all T
//                 tokens of its 4 columns: it selects for every token, takes each distinct expert
//                 once (each weight quad dotted with the h row of every pair that chose it, the
//                 shared experts' with every token's shared row), keeps each pair's product in a
//                 private array, then sums each token's in k order: the per_pair operations in
//                 the per_pair order, so the same bits. Dispatch (ceil(hidden_size / (4 * WORKGROUP_SIZE)), 1).
//   decode_pairs  the decode path over expert ranges (one dispatch per range, none sees every pair
//                 of a token): y[pair, j] = h[pair] . down_e[j], the same down_dot, for the pairs
//                 whose expert lies in the bound range; moe_combine.wgsl then does the decode
//                 path's weighted sum, the same operations in the same order, so the out is
//                 bit-identical. Dispatch (ceil(hidden_size / (4 * WORKGROUP_SIZE)), T * topk).
//   grouped       y[pair, j] = h[pair] . down_e[j] over the pairs sorted by expert (moe_group.wgsl),
//                 tiles of 4 rows of one expert (first_expert + wid.y) as in moe_experts_gate_up.wgsl;
//                 moe_combine.wgsl then weighs and adds the pairs of each token.
//                 Dispatch (ceil(hidden_size / (4 * WORKGROUP_SIZE)), experts, slices).
// ACCUMULATE (an override, every path): add to what out holds, out = out + v, instead of storing
// v: the shared experts as an MLP after the routed sum where decode_shared does not apply.
// One invocation per 4 output columns (columns() of moe_experts_common.wgsl), no barrier (CPU
// adapters, where a barrier is very expensive and every load is a gather).
//
// Bindings:
//   0 params            uniform ExpertParams (n = hidden_size, k = moe_inter_dim)
//   1 h                 [T * topk, moe_inter_dim] f32
//   2 down_weight       stacked down_proj.weight (of the range), u32 words
//   3 down_scale        stacked down_proj.weight_scale_inv (of the range), f32   (fp8)
//   4 out               decode: [T, hidden_size] f32; decode_pairs, grouped: y [T * topk, hidden_size] f32; written
//   5 topk_ids          [T * topk] u32        (decode, decode_pairs; decode_route: written)
//   6 topk_weights      [T * topk] f32        (decode; decode_route: written)
//   7 shared_weight     the shared experts' down_proj.weight, one [hidden_size, moe_inter_dim] slot (decode_route, shared)
//   8 shared_scale      its weight_scale_inv, f32                                  (decode_route, shared, fp8)
//   9 logits            [T, n_routed_experts] f32, the router gate's output       (decode_route)
//  10 bias              [n_routed_experts] f32, e_score_correction_bias           (decode_route, noaux_tc)
//  11 route             uniform RouteParams (moe_route_common.wgsl)               (decode_route)
//   5 expert_offsets    [E + 1] u32           (grouped)
//   6 sorted_pairs      [T * topk] u32        (grouped)

override WORKGROUP_SIZE: u32 = 64u;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<uniform> params: ExpertParams;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> down_weight: array<u32>;
#if weights == fp8
@group(0) @binding(3) var<storage, read> down_scale: array<f32>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#if path == grouped
@group(0) @binding(5) var<storage, read> expert_offsets: array<u32>;
@group(0) @binding(6) var<storage, read> sorted_pairs: array<u32>;
#elif path == decode_route
@group(0) @binding(5) var<storage, read_write> topk_ids: array<u32>;
@group(0) @binding(6) var<storage, read_write> topk_weights: array<f32>;
#if shared == fused
@group(0) @binding(7) var<storage, read> shared_weight: array<u32>;
#if weights == fp8
@group(0) @binding(8) var<storage, read> shared_scale: array<f32>;
#endif
#endif
@group(0) @binding(9) var<storage, read> logits: array<f32>;
#if routing == noaux_tc
@group(0) @binding(10) var<storage, read> bias: array<f32>;
#endif
@group(0) @binding(11) var<uniform> route: RouteParams;
#else
@group(0) @binding(5) var<storage, read> topk_ids: array<u32>;
#if path == decode
@group(0) @binding(6) var<storage, read> topk_weights: array<f32>;
#endif
#endif

fn h_quad(pair: u32, j: u32) -> vec4<f32> {
  let i = pair * params.k + j;
  let v = vec4<f32>(h[i], h[i + 1u], h[i + 2u], h[i + 3u]);
  if (K_ALIGNED) {
    return v;
  }
  return mask_past_k(v, j);
}

// down_e[row, j .. j+3], unscaled; zero past k.
fn down_quad(e: u32, row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(e, row, j);
#if weights == fp8
  if (K_ALIGNED) {
    return e4m3x4_to_f32(down_weight[w]);
  }
  return splice_codes(down_weight[w], down_weight[w + 1u], row, j);
#elif weights == bf16
  if (K_ALIGNED) {
    return bf16x4_to_f32(down_weight[w], down_weight[w + 1u]);
  }
  return splice_bf16(down_weight[w], down_weight[w + 1u], down_weight[w + 2u], row, j);
#endif
}

#if shared == fused
// The shared experts' down[row, j .. j+3] (slot 0 of its own buffer), as down_quad.
fn shared_quad(row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(0u, row, j);
#if weights == fp8
  if (K_ALIGNED) {
    return e4m3x4_to_f32(shared_weight[w]);
  }
  return splice_codes(shared_weight[w], shared_weight[w + 1u], row, j);
#elif weights == bf16
  if (K_ALIGNED) {
    return bf16x4_to_f32(shared_weight[w], shared_weight[w + 1u]);
  }
  return splice_bf16(shared_weight[w], shared_weight[w + 1u], shared_weight[w + 2u], row, j);
#endif
}

fn shared_quads(i: vec4<u32>, j: u32) -> Down {
  return Down(shared_quad(i.x, j), shared_quad(i.y, j), shared_quad(i.z, j), shared_quad(i.w, j));
}

// The shared experts' S[i0 / 128, kb] (fp8); 1 for bf16 (block * 1 is block, exactly).
fn shared_block_scale(i0: u32, kb: u32) -> f32 {
#if weights == fp8
  return shared_scale[expert_scale_index(0u, i0, kb)];
#else
  return 1.0;
#endif
}

// h[row] . shared_down[i] for the 4 columns i, summed as down_dot.
fn shared_dot(i: vec4<u32>, i0: u32, row: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = vec4<f32>(0.0);
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad(block, h_quad(row, j), shared_quads(i, j));
    }
    acc += block * shared_block_scale(i0, kb);
  }
  return acc;
}
#endif

// S_e[i0 / 128, kb] (fp8); 1 for bf16, which has no scales.
fn down_block_scale(e: u32, i0: u32, kb: u32) -> f32 {
#if weights == fp8
  return down_scale[expert_scale_index(e, i0, kb)];
#else
  return 1.0;
#endif
}

// The 4 columns' rows of down_e at j .. j+3.
struct Down {
  w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
}

fn down_quads(e: u32, i: vec4<u32>, j: u32) -> Down {
  return Down(down_quad(e, i.x, j), down_quad(e, i.y, j), down_quad(e, i.z, j), down_quad(e, i.w, j));
}

fn add_quad(s: vec4<f32>, a: vec4<f32>, w: Down) -> vec4<f32> {
  return s + dots(a, w.w0, w.w1, w.w2, w.w3);
}

// out[row, out_col + i0 .. out_col + i0+3] = v, the columns that exist (out_col 0 but for a row band).
// ACCUMULATE: out = out + v instead.
fn store_out(row: u32, i0: u32, v: vec4<f32>) {
  let at = row * params.out_stride + params.out_col + i0;
  if (i0 + 3u < params.n) {
    if (ACCUMULATE) {
      out[at] = out[at] + v.x;
      out[at + 1u] = out[at + 1u] + v.y;
      out[at + 2u] = out[at + 2u] + v.z;
      out[at + 3u] = out[at + 3u] + v.w;
    } else {
      out[at] = v.x;
      out[at + 1u] = v.y;
      out[at + 2u] = v.z;
      out[at + 3u] = v.w;
    }
  } else {
    for (var c = 0u; i0 + c < params.n; c++) {
      if (ACCUMULATE) {
        out[at + c] = out[at + c] + v[c];
      } else {
        out[at + c] = v[c];
      }
    }
  }
}

#if path != grouped
// h[pair] . down_e[i] for the 4 columns i (i0 = i.x % 4 == 0: one scale block).
fn down_dot(e: u32, i: vec4<u32>, i0: u32, pair: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = vec4<f32>(0.0);
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad(block, h_quad(pair, j), down_quads(e, i, j));
    }
    acc += block * down_block_scale(e, i0, kb);
  }
  return acc;
}
#endif

#if reads == per_expert
// The dot products of up to 4 rows of h with one expert's 4 columns: slot c for sharer c.
// Named slots, not an array: CPU adapters keep named values in registers, indexed ones in memory.
struct Dots4 {
  a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>,
}

fn slot(v: Dots4, c: u32) -> vec4<f32> {
  return select(select(select(v.d, v.c, c == 2u), v.b, c == 1u), v.a, c == 0u);
}

// b + each of the first `count` rows' h[row, j .. j+3] dotted with the one quad w.
fn add_quad4(b: Dots4, w: Down, rows: vec4<u32>, count: u32, j: u32) -> Dots4 {
  var r = b;
  r.a = add_quad(r.a, h_quad(rows.x, j), w);
  if (TOKENS > 1u && count > 1u) {
    r.b = add_quad(r.b, h_quad(rows.y, j), w);
  }
  if (TOKENS > 2u && count > 2u) {
    r.c = add_quad(r.c, h_quad(rows.z, j), w);
  }
  if (TOKENS > 3u && count > 3u) {
    r.d = add_quad(r.d, h_quad(rows.w, j), w);
  }
  return r;
}

fn add_block4(acc: Dots4, block: Dots4, scale: f32) -> Dots4 {
  var r = acc;
  r.a = acc.a + block.a * scale;
  if (TOKENS > 1u) {
    r.b = acc.b + block.b * scale;
  }
  if (TOKENS > 2u) {
    r.c = acc.c + block.c * scale;
  }
  if (TOKENS > 3u) {
    r.d = acc.d + block.d * scale;
  }
  return r;
}

// down_dot of each of the first `count` rows, expert e's quads loaded once.
fn down_dots(e: u32, i: vec4<u32>, i0: u32, rows: vec4<u32>, count: u32) -> Dots4 {
  var acc = Dots4();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = Dots4();
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad4(block, down_quads(e, i, j), rows, count, j);
    }
    acc = add_block4(acc, block, down_block_scale(e, i0, kb));
  }
  return acc;
}

#if shared == fused
// shared_dot of each of the first `count` rows, the shared experts' quads loaded once.
fn shared_dots(i: vec4<u32>, i0: u32, rows: vec4<u32>, count: u32) -> Dots4 {
  var acc = Dots4();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = Dots4();
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad4(block, shared_quads(i, j), rows, count, j);
    }
    acc = add_block4(acc, block, shared_block_scale(i0, kb));
  }
  return acc;
}
#endif

// Each pair's h[pair] . down_e[i], e its pick (a NONE pick's read as the per_pair variant reads it).
var<private> pair_dots: array<vec4<f32>, MAX_PAIRS>;
#endif

#if path == decode_pairs
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i0 = (wid.x * WORKGROUP_SIZE + lid) * 4u;
  let pair = wid.y;
  // the pair's slot in the bound range; an expert below first_expert wraps past experts
  let e = topk_ids[pair] - params.first_expert;
  if (i0 >= params.n || e >= params.experts) {
    return;
  }
  store_out(pair, i0, down_dot(e, columns(i0), i0, pair));
}
#elif path == grouped
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i0 = (wid.x * WORKGROUP_SIZE + lid) * 4u;
  let e = wid.y; // the slot in the bound range; expert first_expert + e
  let rows_end = expert_offsets[params.first_expert + e + 1u];
  if (i0 >= params.n) {
    return;
  }
  let i = columns(i0);
  for (var r = expert_offsets[params.first_expert + e] + 4u * wid.z; r < rows_end; r += 4u * nwg.z) {
    // sorted rows r .. r+3; past rows_end, repeat the last row (computed, not stored)
    let last = min(r + 4u, rows_end) - 1u;
    let pairs = vec4<u32>(sorted_pairs[r], sorted_pairs[min(r + 1u, last)], sorted_pairs[min(r + 2u, last)], sorted_pairs[min(r + 3u, last)]);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kb = 0u; kb < params.k_blocks; kb++) {
      var b0 = vec4<f32>(0.0);
      var b1 = vec4<f32>(0.0);
      var b2 = vec4<f32>(0.0);
      var b3 = vec4<f32>(0.0);
      let j_end = min(kb * BLOCK + BLOCK, params.k);
      for (var j = kb * BLOCK; j < j_end; j += 4u) {
        let w = down_quads(e, i, j);
        b0 = add_quad(b0, h_quad(pairs.x, j), w);
        b1 = add_quad(b1, h_quad(pairs.y, j), w);
        b2 = add_quad(b2, h_quad(pairs.z, j), w);
        b3 = add_quad(b3, h_quad(pairs.w, j), w);
      }
      let scale = down_block_scale(e, i0, kb);
      acc0 += b0 * scale;
      acc1 += b1 * scale;
      acc2 += b2 * scale;
      acc3 += b3 * scale;
    }
    store_out(pairs.x, i0, acc0);
    if (r + 1u <= last) {
      store_out(pairs.y, i0, acc1);
    }
    if (r + 2u <= last) {
      store_out(pairs.z, i0, acc2);
    }
    if (r + 3u <= last) {
      store_out(pairs.w, i0, acc3);
    }
  }
}
#elif path == decode
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i0 = (wid.x * WORKGROUP_SIZE + lid) * 4u;
  let t = wid.y;
  if (i0 >= params.n) {
    return;
  }
  let i = columns(i0);
  var acc = vec4<f32>(0.0);
  for (var k = 0u; k < params.topk; k++) {
    let pair = t * params.topk + k;
    acc += topk_weights[pair] * down_dot(topk_ids[pair], i, i0, pair);
  }
  store_out(t, i0, acc);
}
#elif path == decode_route
#if reads == per_expert
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i0 = (wid.x * WORKGROUP_SIZE + lid) * 4u;
  // route_reduce subgroup: columns past n return after the selection (see the per_pair main)
  let past_n = i0 >= params.n;
#if route_reduce == thread
  if (past_n) {
    return; // never the writer below, whose i0 is 0
  }
#endif
  route_weights();
  let pairs = params.tokens * params.topk;
  if (wid.x == 0u && lid == 0u) {
    for (var p = 0u; p < pairs; p++) {
      topk_ids[p] = picks[p];
      topk_weights[p] = pick_weights[p];
    }
  }
  if (past_n) {
    return;
  }
  let i = columns(i0);
  // Each distinct expert once, in the order its leading pairs come.
  for (var p = 0u; p < pairs; p++) {
    if (chosen_before(p)) {
      continue;
    }
    let s = sharers(p);
    if (s.count == 1u) {
      pair_dots[p] = down_dot(picks[p], i, i0, p); // down_dots of one row, without its slots
      continue;
    }
    let y = down_dots(picks[p], i, i0, s.pairs, s.count);
    for (var c = 0u; c < s.count; c++) {
      pair_dots[s.pairs[c]] = slot(y, c);
    }
  }
#if shared == fused
  let tokens = min(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.tokens - 1u));
  let z = shared_dots(i, i0, vec4<u32>(pairs) + tokens, params.tokens);
#endif
  // Each token's weighted sum in k order, as the per_pair main adds them.
  for (var t = 0u; t < params.tokens; t++) {
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < params.topk; k++) {
      let pair = t * params.topk + k;
      acc += pick_weights[pair] * pair_dots[pair];
    }
#if shared == fused
    acc = acc + slot(z, t); // routed sum + shared experts
#endif
    store_out(t, i0, acc);
  }
}
#else
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i0 = (wid.x * WORKGROUP_SIZE + lid) * 4u;
  let t = wid.y;
  // route_reduce subgroup: the selection needs every lane of the subgroup, so columns past n
  // skip their sums only (all invocations of the workgroup route the same token).
  let past_n = i0 >= params.n;
#if route_reduce == thread
  if (past_n) {
    return; // never the writer below, whose i0 is 0
  }
#endif
  let writer = wid.x == 0u && lid == 0u;
  prepare_scores(t);
  let kept = kept_groups(t);
  // The picks of moe_route.wgsl's main, in its order: first their unbiased scores' sum ...
  var prev = Pick(0.0, NONE);
  var sum = 0.0;
  for (var k = 0u; k < params.topk; k++) {
    let pick = next_pick(t, kept, prev);
    var s = 0.0;
    if (pick.id != NONE) {
      s = weight_score(t, pick.id);
      prev = pick;
    }
    sum += s;
  }
  // ... then the same picks with their weights: the decode path's weighted sum.
  let i = columns(i0);
  var acc = vec4<f32>(0.0);
  prev = Pick(0.0, NONE);
  for (var k = 0u; k < params.topk; k++) {
    let pick = next_pick(t, kept, prev);
    var s = 0.0;
    if (pick.id != NONE) {
      s = weight_score(t, pick.id);
      prev = pick;
    }
    let w = routing_weight(s, sum);
    let pair = t * params.topk + k;
    if (writer) {
      topk_ids[pair] = pick.id;
      topk_weights[pair] = w;
    }
    if (!past_n) {
      acc += w * down_dot(pick.id, i, i0, pair);
    }
  }
  if (past_n) {
    return;
  }
#if shared == fused
  acc = acc + shared_dot(i, i0, params.tokens * params.topk + t); // routed sum + shared experts
#endif
  store_out(t, i0, acc);
}
#endif
#endif
