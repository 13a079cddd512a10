// The first half of the routed experts (src/model/MATH.md 4.5, 4.6): for each token t and each
// of its chosen experts e = topk_ids[t, k], the row pair = t * topk + k of
//   h[pair, i] = silu(x[t] . gate_e[i]) * (x[t] . up_e[i])        i < moe_inter_dim
// with gate_e = gate_proj, up_e = up_proj of expert e, block-scaled FP8 or bf16 (the readers and
// the summation order are in moe_experts_common.wgsl): each 128-wide block of a dot product is
// summed, then added times S (fp8, the official fp8_gemm order) or as it is (bf16).
// Reference: src/kernels/moe_experts.ref.ts. Wrapper: src/kernels/moe_experts.ts.
//
// Variant axis `weights`: fp8 (with the scale bindings 3 and 5) or bf16 (no scale bindings).
// Variant axis `path`:
//   decode   one invocation per (pair, 4 columns i): expert ids read from topk_ids, no grouping
//            (T <= 4). Pairs whose expert lies outside the bound range exit at once.
//            Dispatch (ceil(moe_inter / (4 * WORKGROUP_SIZE)), T * topk).
//   decode_route  decode that routes first (no moe_route dispatch): each invocation runs the
//            router's selection for its token from the router logits (moe_route_common.wgsl, the
//            same code as moe_route.wgsl: sigmoid + bias, group limit, top-k, cheap beside a row
//            of gate_up) up to its pair's pick; the down pass runs it again and writes the ids
//            and weights. Variant axes `routing` (noaux_tc, softmax) and `route_reduce` (thread,
//            subgroup: a workgroup's lanes select together) as moe_route.wgsl's.
//            Variant axis `shared`: fused adds the shared experts (one expert of the same
//            moe_inter_dim, their own gate_proj / up_proj at bindings 10-13) as T more rows:
//            wid.y = T * topk + t is token t's shared row of h. none: no such rows.
//            Dispatch (ceil(moe_inter / (4 * WORKGROUP_SIZE)), T * topk [+ T with shared]).
//            Variant axis `reads` (T >= 2: the MTP verify step): per_pair, the above: each row
//            reads its pair's expert, so an expert two tokens chose is read twice. per_expert
//            (moe_experts_union.wgsl lead()): row wid.y = p selects its pick, and whether and
//            where each other token chose that expert; it exits when an earlier token chose it,
//            else serves p and every later token's pair of that expert, each weight quad loaded
//            once and dotted with each of their x rows; the shared experts are one row (T * topk)
//            that computes every token's shared row. The same h, bit for bit: each pair's sums
//            run the same operations in the same order. Dispatch (.., T * topk [+ 1 with shared]).
//   grouped  the pairs sorted by expert (moe_group.wgsl); workgroup (i tile, e, slice) takes the
//            rows of expert first_expert + e in tiles of 4 rows, tile slice, slice + slices, ...;
//            each decoded weight quad serves 4 rows. Experts chosen by no token exit at once.
//            Dispatch (ceil(moe_inter / (4 * WORKGROUP_SIZE)), experts, slices).
// Expert ranges (a stack split over several buffers): one dispatch per range, params.experts and
// params.first_expert its range, the bindings its buffers; unsplit, first_expert = 0 and experts = E.
// One invocation per 4 output columns (columns() of moe_experts_common.wgsl), no barrier (CPU
// adapters, where a barrier is very expensive and every load is a gather).
//
// Bindings:
//   0 params            uniform ExpertParams (n = moe_inter_dim, k = hidden_size)
//   1 x                 [T, hidden_size] f32
//   2 gate_weight       stacked gate_proj.weight (of the range), u32 words
//   3 gate_scale        stacked gate_proj.weight_scale_inv (of the range), f32   (fp8)
//   4 up_weight         stacked up_proj.weight (of the range), u32 words
//   5 up_scale          stacked up_proj.weight_scale_inv (of the range), f32     (fp8)
//   6 h                 [T * topk, moe_inter_dim] f32, written (row = pair); decode_route with
//                       shared: [T * (topk + 1), moe_inter_dim], token t's shared row T * topk + t
//   7 topk_ids          [T * topk] u32                    (decode)
//   7 logits            [T, n_routed_experts] f32, the router gate's output     (decode_route)
//   8 bias              [n_routed_experts] f32, e_score_correction_bias         (decode_route, noaux_tc)
//   9 route             uniform RouteParams (moe_route_common.wgsl)             (decode_route)
//  10 shared_gate_weight  the shared experts' gate_proj.weight, one slot        (decode_route, shared)
//  11 shared_gate_scale   its weight_scale_inv                                  (decode_route, shared, fp8)
//  12 shared_up_weight    the shared experts' up_proj.weight, one slot          (decode_route, shared)
//  13 shared_up_scale     its weight_scale_inv                                  (decode_route, shared, fp8)
//   7 expert_offsets    [E + 1] u32, rows of expert e: expert_offsets[e] .. expert_offsets[e + 1]  (grouped)
//   8 sorted_pairs      [T * topk] u32, the pairs in expert order                                 (grouped)

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> params: ExpertParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gate_weight: array<u32>;
@group(0) @binding(4) var<storage, read> up_weight: array<u32>;
#if weights == fp8
@group(0) @binding(3) var<storage, read> gate_scale: array<f32>;
@group(0) @binding(5) var<storage, read> up_scale: array<f32>;
#endif
@group(0) @binding(6) var<storage, read_write> h: array<f32>;
#if path == decode
@group(0) @binding(7) var<storage, read> topk_ids: array<u32>;
#elif path == decode_route
@group(0) @binding(7) var<storage, read> logits: array<f32>;
#if routing == noaux_tc
@group(0) @binding(8) var<storage, read> bias: array<f32>;
#endif
@group(0) @binding(9) var<uniform> route: RouteParams;
#if shared == fused
@group(0) @binding(10) var<storage, read> shared_gate_weight: array<u32>;
@group(0) @binding(12) var<storage, read> shared_up_weight: array<u32>;
#if weights == fp8
@group(0) @binding(11) var<storage, read> shared_gate_scale: array<f32>;
@group(0) @binding(13) var<storage, read> shared_up_scale: array<f32>;
#endif
#endif
#else
@group(0) @binding(7) var<storage, read> expert_offsets: array<u32>;
@group(0) @binding(8) var<storage, read> sorted_pairs: array<u32>;
#endif

fn silu(z: vec4<f32>) -> vec4<f32> {
  return z / (1.0 + exp(-z)); // z * sigmoid(z); -0 for z -> -inf, as torch
}

// x[t, j .. j+3], zero past hidden_size.
fn x_quad(t: u32, j: u32) -> vec4<f32> {
  let i = t * params.k + j;
  let v = vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
  if (K_ALIGNED) {
    return v;
  }
  return mask_past_k(v, j);
}

// gate_e[row, j .. j+3] and up_e[row, j .. j+3], unscaled; zero past k.
fn gate_quad(e: u32, row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(e, row, j);
#if weights == fp8
  if (K_ALIGNED) {
    return e4m3x4_to_f32(gate_weight[w]);
  }
  return splice_codes(gate_weight[w], gate_weight[w + 1u], row, j);
#elif weights == bf16
  if (K_ALIGNED) {
    return bf16x4_to_f32(gate_weight[w], gate_weight[w + 1u]);
  }
  return splice_bf16(gate_weight[w], gate_weight[w + 1u], gate_weight[w + 2u], row, j);
#endif
}

fn up_quad(e: u32, row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(e, row, j);
#if weights == fp8
  if (K_ALIGNED) {
    return e4m3x4_to_f32(up_weight[w]);
  }
  return splice_codes(up_weight[w], up_weight[w + 1u], row, j);
#elif weights == bf16
  if (K_ALIGNED) {
    return bf16x4_to_f32(up_weight[w], up_weight[w + 1u]);
  }
  return splice_bf16(up_weight[w], up_weight[w + 1u], up_weight[w + 2u], row, j);
#endif
}

// The 4 columns' gate and up rows of expert e at j .. j+3.
struct GateUp {
  g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>, g3: vec4<f32>,
  u0: vec4<f32>, u1: vec4<f32>, u2: vec4<f32>, u3: vec4<f32>,
}

fn gate_up_quads(e: u32, i: vec4<u32>, j: u32) -> GateUp {
  return GateUp(
    gate_quad(e, i.x, j), gate_quad(e, i.y, j), gate_quad(e, i.z, j), gate_quad(e, i.w, j),
    up_quad(e, i.x, j), up_quad(e, i.y, j), up_quad(e, i.z, j), up_quad(e, i.w, j),
  );
}

// One row's sums over the 4 columns: gate and up, for a 128-wide block or the whole row.
struct Sums {
  gate: vec4<f32>,
  up: vec4<f32>,
}

fn add_quad(s: Sums, a: vec4<f32>, w: GateUp) -> Sums {
  return Sums(s.gate + dots(a, w.g0, w.g1, w.g2, w.g3), s.up + dots(a, w.u0, w.u1, w.u2, w.u3));
}

// s + block * (the gate and up block scales), fp8; s + block, bf16 (no scales: `scale` unused).
fn scaled(s: Sums, block: Sums, scale: vec2<f32>) -> Sums {
#if weights == fp8
  return Sums(s.gate + block.gate * scale.x, s.up + block.up * scale.y);
#else
  return Sums(s.gate + block.gate, s.up + block.up);
#endif
}

// S_e[i0 / 128, kb] of gate and up (fp8); unused for bf16.
fn gate_up_scales(e: u32, i0: u32, kb: u32) -> vec2<f32> {
#if weights == fp8
  let at = expert_scale_index(e, i0, kb);
  return vec2<f32>(gate_scale[at], up_scale[at]);
#else
  return vec2<f32>(1.0);
#endif
}

fn add_scaled_block(s: Sums, block: Sums, e: u32, i0: u32, kb: u32) -> Sums {
  return scaled(s, block, gate_up_scales(e, i0, kb));
}

// h[pair, out_col + i0 .. out_col + i0+3] = silu(gate) * up, the columns that exist (out_col 0 but for a row band).
fn store_h(pair: u32, i0: u32, s: Sums) {
  let v = silu(s.gate) * s.up;
  let at = pair * params.out_stride + params.out_col + i0;
  if (i0 + 3u < params.n) {
    h[at] = v.x;
    h[at + 1u] = v.y;
    h[at + 2u] = v.z;
    h[at + 3u] = v.w;
  } else {
    for (var c = 0u; i0 + c < params.n; c++) {
      h[at + c] = v[c];
    }
  }
}

#if path != grouped
// h of one pair: the 4 columns i0 .. i0+3 of expert slot e for token t.
fn pair_hidden(pair: u32, t: u32, e: u32, i0: u32) {
  let i = columns(i0);
  var sums = Sums();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = Sums();
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad(block, x_quad(t, j), gate_up_quads(e, i, j));
    }
    sums = add_scaled_block(sums, block, e, i0, kb);
  }
  store_h(pair, i0, sums);
}
#endif

#if path == decode
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i0 = (wid.x * WORKGROUP_SIZE + lid) * 4u;
  let pair = wid.y;
  // the pair's slot in the bound range; an expert below first_expert wraps past experts
  let e = topk_ids[pair] - params.first_expert;
  if (i0 >= params.n || e >= params.experts) {
    return;
  }
  pair_hidden(pair, pair / params.topk, e, i0);
}
#elif path == decode_route
#if shared == fused
// The shared experts' gate and up rows at j .. j+3 (slot 0 of their own buffers), as gate_quad / up_quad.
fn shared_gate_quad(row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(0u, row, j);
#if weights == fp8
  if (K_ALIGNED) {
    return e4m3x4_to_f32(shared_gate_weight[w]);
  }
  return splice_codes(shared_gate_weight[w], shared_gate_weight[w + 1u], row, j);
#elif weights == bf16
  if (K_ALIGNED) {
    return bf16x4_to_f32(shared_gate_weight[w], shared_gate_weight[w + 1u]);
  }
  return splice_bf16(shared_gate_weight[w], shared_gate_weight[w + 1u], shared_gate_weight[w + 2u], row, j);
#endif
}

fn shared_up_quad(row: u32, j: u32) -> vec4<f32> {
  let w = expert_word(0u, row, j);
#if weights == fp8
  if (K_ALIGNED) {
    return e4m3x4_to_f32(shared_up_weight[w]);
  }
  return splice_codes(shared_up_weight[w], shared_up_weight[w + 1u], row, j);
#elif weights == bf16
  if (K_ALIGNED) {
    return bf16x4_to_f32(shared_up_weight[w], shared_up_weight[w + 1u]);
  }
  return splice_bf16(shared_up_weight[w], shared_up_weight[w + 1u], shared_up_weight[w + 2u], row, j);
#endif
}

fn shared_gate_up_quads(i: vec4<u32>, j: u32) -> GateUp {
  return GateUp(
    shared_gate_quad(i.x, j), shared_gate_quad(i.y, j), shared_gate_quad(i.z, j), shared_gate_quad(i.w, j),
    shared_up_quad(i.x, j), shared_up_quad(i.y, j), shared_up_quad(i.z, j), shared_up_quad(i.w, j),
  );
}

// The shared experts' gate and up block scales (fp8); unused for bf16.
fn shared_scales(i0: u32, kb: u32) -> vec2<f32> {
#if weights == fp8
  let at = expert_scale_index(0u, i0, kb);
  return vec2<f32>(shared_gate_scale[at], shared_up_scale[at]);
#else
  return vec2<f32>(1.0);
#endif
}

// h of token t's shared row (T * topk + t): the pair_hidden of the shared experts' weights.
fn shared_hidden(row: u32, t: u32, i0: u32) {
  let i = columns(i0);
  var sums = Sums();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = Sums();
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad(block, x_quad(t, j), shared_gate_up_quads(i, j));
    }
    sums = scaled(sums, block, shared_scales(i0, kb));
  }
  store_h(row, i0, sums);
}
#endif

#if reads == per_expert
// The sums of up to 4 rows of h that one weight quad serves: slot c for sharer c.
struct Sums4 {
  a: Sums, b: Sums, c: Sums, d: Sums,
}

// b + each of the first `count` tokens' x[t, j .. j+3] dotted with the one quad w. Named slots,
// not an array: CPU adapters keep named values in registers, indexed ones in memory.
fn add_quad4(b: Sums4, w: GateUp, tokens: vec4<u32>, count: u32, j: u32) -> Sums4 {
  var r = b;
  r.a = add_quad(r.a, x_quad(tokens.x, j), w);
  if (TOKENS > 1u && count > 1u) {
    r.b = add_quad(r.b, x_quad(tokens.y, j), w);
  }
  if (TOKENS > 2u && count > 2u) {
    r.c = add_quad(r.c, x_quad(tokens.z, j), w);
  }
  if (TOKENS > 3u && count > 3u) {
    r.d = add_quad(r.d, x_quad(tokens.w, j), w);
  }
  return r;
}

fn add_block4(s: Sums4, b: Sums4, scale: vec2<f32>) -> Sums4 {
  var r = s;
  r.a = scaled(r.a, b.a, scale);
  if (TOKENS > 1u) {
    r.b = scaled(r.b, b.b, scale);
  }
  if (TOKENS > 2u) {
    r.c = scaled(r.c, b.c, scale);
  }
  if (TOKENS > 3u) {
    r.d = scaled(r.d, b.d, scale);
  }
  return r;
}

fn store_h4(rows: vec4<u32>, count: u32, i0: u32, s: Sums4) {
  store_h(rows.x, i0, s.a);
  if (TOKENS > 1u && count > 1u) {
    store_h(rows.y, i0, s.b);
  }
  if (TOKENS > 2u && count > 2u) {
    store_h(rows.z, i0, s.c);
  }
  if (TOKENS > 3u && count > 3u) {
    store_h(rows.w, i0, s.d);
  }
}

// h of the pairs of s, all of expert slot e: each pair's pair_hidden, the weights loaded once.
fn union_hidden(e: u32, s: Sharers, i0: u32) {
  let i = columns(i0);
  let tokens = s.pairs / vec4<u32>(params.topk);
  var sums = Sums4();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = Sums4();
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad4(block, gate_up_quads(e, i, j), tokens, s.count, j);
    }
    sums = add_block4(sums, block, gate_up_scales(e, i0, kb));
  }
  store_h4(s.pairs, s.count, i0, sums);
}

#if shared == fused
// Every token's shared row (T * topk + t): each shared_hidden, the weights loaded once.
fn shared_union_hidden(i0: u32) {
  let i = columns(i0);
  let tokens = min(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.tokens - 1u));
  var sums = Sums4();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = Sums4();
    let j_end = min(kb * BLOCK + BLOCK, params.k);
    for (var j = kb * BLOCK; j < j_end; j += 4u) {
      block = add_quad4(block, shared_gate_up_quads(i, j), tokens, params.tokens, j);
    }
    sums = add_block4(sums, block, shared_scales(i0, kb));
  }
  store_h4(vec4<u32>(params.tokens * params.topk) + tokens, params.tokens, i0, sums);
}
#endif
#endif

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i0 = (wid.x * WORKGROUP_SIZE + lid) * 4u;
  // route_reduce subgroup: the selection needs every lane of the subgroup, so columns past n
  // return only after it (all invocations of the workgroup route the same token).
  let past_n = i0 >= params.n;
#if route_reduce == thread
  if (past_n) {
    return;
  }
#endif
  let pair = wid.y;
  let pairs = params.tokens * params.topk;
#if shared == fused
  if (pair >= pairs) {
    if (!past_n) {
#if reads == per_expert
      shared_union_hidden(i0); // the one shared row: every token's
#else
      shared_hidden(pair, pair - pairs, i0);
#endif
    }
    return;
  }
#endif
#if reads == per_expert
  // none to serve: p's pick is NONE, or an earlier token chose its expert (that token's row serves p)
  let row = lead(pair);
  let e = row.e - params.first_expert;
  let s = row.s;
  if (past_n || s.count == 0u) {
    return;
  }
  if (s.count == 1u) {
    pair_hidden(pair, pair / params.topk, e, i0); // union_hidden of one pair, without its slots
  } else {
    union_hidden(e, s, i0);
  }
#else
  let t = pair / params.topk;
  let mine = pair % params.topk;
  // The picks of moe_route.wgsl's main, in its order, up to this pair's.
  prepare_scores(t);
  let kept = kept_groups(t);
  var prev = Pick(0.0, NONE);
  var id = NONE;
  for (var k = 0u; k <= mine; k++) {
    let pick = next_pick(t, kept, prev);
    if (pick.id != NONE) {
      prev = pick;
    }
    id = pick.id;
  }
  // the pair's slot in the bound range; an expert below first_expert (or none: NONE) wraps past experts
  let e = id - params.first_expert;
  if (past_n || e >= params.experts) {
    return;
  }
  pair_hidden(pair, t, e, i0);
#endif
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
    // rows r .. r+3; past rows_end, repeat the last row (computed, not stored). Written out per
    // row, not looped over: CPU adapters keep named values in registers, indexed ones in memory.
    let last = min(r + 4u, rows_end) - 1u;
    let pairs = vec4<u32>(sorted_pairs[r], sorted_pairs[min(r + 1u, last)], sorted_pairs[min(r + 2u, last)], sorted_pairs[min(r + 3u, last)]);
    let tokens = pairs / vec4<u32>(params.topk);
    var s0 = Sums();
    var s1 = Sums();
    var s2 = Sums();
    var s3 = Sums();
    for (var kb = 0u; kb < params.k_blocks; kb++) {
      var b0 = Sums();
      var b1 = Sums();
      var b2 = Sums();
      var b3 = Sums();
      let j_end = min(kb * BLOCK + BLOCK, params.k);
      for (var j = kb * BLOCK; j < j_end; j += 4u) {
        let w = gate_up_quads(e, i, j);
        b0 = add_quad(b0, x_quad(tokens.x, j), w);
        b1 = add_quad(b1, x_quad(tokens.y, j), w);
        b2 = add_quad(b2, x_quad(tokens.z, j), w);
        b3 = add_quad(b3, x_quad(tokens.w, j), w);
      }
      s0 = add_scaled_block(s0, b0, e, i0, kb);
      s1 = add_scaled_block(s1, b1, e, i0, kb);
      s2 = add_scaled_block(s2, b2, e, i0, kb);
      s3 = add_scaled_block(s3, b3, e, i0, kb);
    }
    store_h(pairs.x, i0, s0);
    if (r + 1u <= last) {
      store_h(pairs.y, i0, s1);
    }
    if (r + 2u <= last) {
      store_h(pairs.z, i0, s2);
    }
    if (r + 3u <= last) {
      store_h(pairs.w, i0, s3);
    }
  }
}
#endif
