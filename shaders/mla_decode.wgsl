// MLA decode attention over the latent cache, absorbed form (src/model/MATH.md 4.4 "Absorbed"),
// through W_UV: o[r, h] = W_UV[h] @ o_lat[r, h]. Pass 1 of flash-decoding: each split of CHUNK cache
// positions gives, per (row, head), a partial softmax (max m, sum l) and the unnormalised weighted
// latent sum acc = sum_t exp(s_t - m) c_hat[t].
//   One split (contexts up to CHUNK positions: every decode step of a short chat): this pass also
//     does the rest, o_lat = acc / l and then o = W_UV[h] @ o_lat, one dispatch where there were
//     three (pass 1, the merge, expand_o). o_lat = acc / l is bit for bit what the merge
//     (shaders/mla_decode_reduce.wgsl) computes from one split (its weight exp(m - m) is 1), and the
//     W_UV sum is expand_o's (shaders/mla_absorb.wgsl), loop and loaders (shaders/kv_b_proj.wgsl).
//   More splits: the merge writes o_lat, then expand_o writes o (src/kernels/mla_decode.ts).
// Reference: src/kernels/mla_decode.ref.ts, then expandORef of mla_absorb.ref.ts.
// Wrapper: src/kernels/mla_decode.ts.
//
// Why W_UV here, per (row, head), and not the merge in expand_o's prologue: expand_o runs one
// invocation per output element (heads * dv), so each would redo its head's merge of splits * rkv
// partials, dv times the reads of the merge pass (V3: 128 x 16 splits x 512 per element at 4096
// positions, ~0.5 GB per layer). Here the (row, head) item already holds o_lat: on a GPU it is the
// workgroup per head that W_UV wants (each invocation then owns outputs v = lid, lid + WG, ...), on
// a CPU adapter one invocation does the dv * rkv products of its head (2048 for the shipped
// checkpoint, far less than the ~0.3 ms SwiftShader charges per dispatch). Measured on SwiftShader
// (bench --decode and a per-pipeline count of one decode step, the shipped checkpoint, 5 layers):
// the attention core went from 25 dispatches per token (RoPE on q, absorb_q, pass 1, merge,
// expand_o) to 10 (absorb_q with RoPE, this pass).
//
//   s_t = (q_lat[r, h] . c_hat[t] + q_pe[r, h] . k_pe[t]) * softmax_scale,   t <= start_pos + r
//
// Variant axes (src/gpu/shader_compose.ts): weights  fp8 | bf16 | f32, how kv_b_proj is stored;
// reduce  thread | workgroup | subgroup, the dispatch below (thread and workgroup are the override
// ONE_PER_INVOCATION; subgroup needs 'subgroups', its `enable` in mla_decode_subgroups.wgsl).
//
// Bindings (f32 unless said; rkv and dr are multiples of 4, the arrays are read as vec4 for fewer load instructions):
//   0 params            uniform Params
//   1 q_lat             [rows, heads, rkv]
//   2 q_pe              [rows, heads, dr]        (RoPE already applied)
//   3 cache             [maxT, rkv + dr]         row t = [c_hat(t) | k_pe(t)]; only rows t <= start_pos + r are read
//   4 part_o            [rows, heads, splits, rkv]: acc per split; with one split o_lat = acc / l
//   5 part_ml           [rows, heads, splits, 2] (m, l), splits > 1 only; l = 0 marks a split with no
//                       position for that row
//   6 kv_b              kv_b_proj.weight [heads * (dn + dv), rkv] as u32 words (shaders/kv_b_proj.wgsl)
//   7 o                 [rows, heads * dv], written with one split
//   8 weight_scale_inv  fp8 only: [ceil(heads * (dn + dv) / 128), ceil(rkv / 128)]
//
// Items: item = (split * rows + r) * heads + h, for split < splits = ceil((start_pos + rows) / CHUNK).
// Dispatch, by the variant axis `reduce` (and for thread / workgroup the override ONE_PER_INVOCATION):
//   workgroup (GPUs): one workgroup of WG invocations per item; scores in workgroup memory, each invocation
//                 then owns the latent vec4 columns lid, lid + WG, ... and the outputs v = lid, lid + WG, ...;
//                 workgroups = items over (x, y).
//   thread (CPU adapters such as SwiftShader, where a workgroupBarrier is very expensive): one invocation
//                 per item, scores in private memory, no barrier; workgroups = ceil(items / WG).
//   subgroup      one workgroup per item as `workgroup`, its reductions by subgroups: position i
//                 belongs to the subgroup holding invocation i % WG, whose lanes split its score's
//                 dot product (vec4 quads rank, rank + lanes, ...: consecutive lanes read
//                 consecutive quads of a cache row) into one subgroupAdd; the softmax max and sum
//                 go within each subgroup, then through one slot per invocation in workgroup
//                 memory, read in slot order by every invocation (so all divide by the same l).
//                 2 barriers (workgroup: 3), no invocation scanning all CHUNK scores. The weighted
//                 latent sum and W_UV are `workgroup`'s (W_UV's sum stays expand_o's, bit for bit).
//                 Any subgroup size and mapping of invocations to subgroups: lanes are counted.

struct Params {
  rows: u32,
  heads: u32,
  rkv: u32,
  dr: u32,
  start_pos: u32,
  splits: u32,
  softmax_scale: f32,
  scale_cols: u32, // ceil(rkv / 128): row stride of weight_scale_inv
  dn: u32, // qk_nope_head_dim
  dv: u32, // v_head_dim
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q_lat: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> q_pe: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> part_o: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read> kv_b: array<u32>;
@group(0) @binding(7) var<storage, read_write> o: array<f32>;
#if weights == fp8
@group(0) @binding(8) var<storage, read> weight_scale_inv: array<f32>;
#endif

override WG: u32 = 64;
override ONE_PER_INVOCATION: bool = false;
// Cache positions per split; at most MAX_CHUNK (the private score array of the CPU variant).
override CHUNK: u32 = 256;
const MAX_CHUNK: u32 = 256u;
// Latent vec4 columns accumulated together by the CPU variant: each cache row is read in runs of COLS.
const COLS: u32 = 4u;
const LOWEST: f32 = -3.4028234e38;
// kv_b_proj.wgsl's quads are whole words: the wrapper requires rkv % 4 == 0.
const RKV_ALIGNED: bool = true;

var<workgroup> wg_p: array<f32, CHUNK>;

struct Item {
  r: u32,
  h: u32,
  split: u32,
  first: u32, // first cache position of the split
  n: u32,     // positions of the split that row r attends to (0 .. CHUNK)
}

fn item_of(index: u32) -> Item {
  var it: Item;
  it.h = index % params.heads;
  it.r = (index / params.heads) % params.rows;
  it.split = index / (params.heads * params.rows);
  it.first = it.split * CHUNK;
  let context = params.start_pos + it.r + 1u;
  it.n = select(0u, min(CHUNK, context - it.first), context > it.first);
  return it;
}

// Lengths in vec4. Shifts, not / 4u, taken once before the loops: SwiftShader runs a u32
// division in every lane, and a loop condition on every iteration (see matmul_operands.wgsl).
fn rkv4() -> u32 {
  return params.rkv >> 2u;
}

fn width4() -> u32 {
  return (params.rkv + params.dr) >> 2u;
}

fn score(it: Item, t: u32) -> f32 {
  let lat_quads = rkv4();
  let dr4 = params.dr >> 2u;
  let q = (it.r * params.heads + it.h) * lat_quads;
  let qp = (it.r * params.heads + it.h) * dr4;
  let row = t * width4();
  var s = vec4(0.0);
  for (var j = 0u; j < lat_quads; j++) {
    s += q_lat[q + j] * cache[row + j];
  }
  let pe = row + lat_quads;
  for (var j = 0u; j < dr4; j++) {
    s += q_pe[qp + j] * cache[pe + j];
  }
  return (s.x + s.y + s.z + s.w) * params.softmax_scale;
}

// With one split, part_index is r * heads + h, and part_o holds o_lat.
fn part_index(it: Item) -> u32 {
  return (it.r * params.heads + it.h) * params.splits + it.split;
}

// The split's latent vec4 column j: normalised (o_lat) when it is the only split, else a partial.
fn store_column(out: u32, j: u32, acc: vec4<f32>, l: f32) {
  if (params.splits == 1u) {
    part_o[out + j] = acc / l;
  } else {
    part_o[out + j] = acc;
  }
}

// One split: o[r, h, v] = sum_c o_lat[r, h, c] * W_UV[h][v, c], with o_lat in part_o; the loop of
// expand_o in mla_absorb.wgsl, so the same sum in the same order.
fn expand_o(it: Item, v: u32) {
  let rh = it.r * params.heads + it.h;
  let w_uv = it.h * (params.dn + params.dv) + params.dn + v; // row of W_UV[h][v, :] in kv_b_proj
  let lat = rh * rkv4();
  var acc = 0.0;
  for (var c = 0u; c < params.rkv; c += 4u) {
    acc += dot(part_o[lat + (c >> 2u)], kv_b_quad(w_uv, c));
  }
  o[rh * params.dv + v] = acc;
}

// CPU variant: the whole item in one invocation.
fn item_in_one_invocation(it: Item) {
  var p: array<f32, MAX_CHUNK>;
  var m = LOWEST;
  for (var i = 0u; i < it.n; i++) {
    p[i] = score(it, it.first + i);
    m = max(m, p[i]);
  }
  var l = 0.0;
  for (var i = 0u; i < it.n; i++) {
    p[i] = exp(p[i] - m);
    l += p[i];
  }
  let lat_quads = rkv4();
  let row_quads = width4();
  let out = part_index(it) * lat_quads;
  let last = lat_quads - 1u;
  for (var j0 = 0u; j0 < lat_quads; j0 += COLS) {
    // A constant trip count over the columns (the tail clamped to the last column, its sums not
    // stored) lets the compiler keep acc in registers: SwiftShader spills a dynamically indexed one.
    var acc: array<vec4<f32>, COLS>;
    for (var c = 0u; c < COLS; c++) {
      acc[c] = vec4(0.0); // explicit: SwiftShader did not re-zero a loop-scoped var on each iteration
    }
    for (var i = 0u; i < it.n; i++) {
      let row = (it.first + i) * row_quads;
      for (var c = 0u; c < COLS; c++) {
        acc[c] += p[i] * cache[row + min(j0 + c, last)];
      }
    }
    for (var c = 0u; c < COLS; c++) {
      if (j0 + c <= last) {
        store_column(out, j0 + c, acc[c], l);
      }
    }
  }
  if (params.splits > 1u) {
    part_ml[part_index(it)] = vec2(m, l);
    return;
  }
  // This invocation wrote o_lat in part_o: its own reads of it see the values.
  for (var v = 0u; v < params.dv; v++) {
    expand_o(it, v);
  }
}

// GPU variant: one item per workgroup. `it` is uniform over the workgroup.
// The end of a workgroup's item, given the scores' exp(s - m) in wg_p and their sum l: o_lat's
// columns (quads lid, lid + WG, ...), then (m, l) for the merge pass, or with one split o itself.
fn finish_in_workgroup(it: Item, lid: u32, m: f32, l: f32) {
  let lat_quads = rkv4();
  let row_quads = width4();
  let out = part_index(it) * lat_quads;
  for (var j = lid; j < lat_quads; j += WG) {
    var acc = vec4(0.0);
    for (var i = 0u; i < it.n; i++) {
      acc += wg_p[i] * cache[(it.first + i) * row_quads + j];
    }
    store_column(out, j, acc, l);
  }
  if (params.splits > 1u) {
    if (lid == 0u) {
      part_ml[part_index(it)] = vec2(m, l);
    }
    return;
  }
  storageBarrier(); // o_lat's columns, written to part_o by every invocation of the workgroup
  for (var v = lid; v < params.dv; v += WG) {
    expand_o(it, v);
  }
}

fn item_in_workgroup(it: Item, lid: u32) {
  for (var i = lid; i < it.n; i += WG) {
    wg_p[i] = score(it, it.first + i);
  }
  workgroupBarrier();
  // Every invocation scans the (at most CHUNK) scores: cheaper than a tree of barriers.
  var m = LOWEST;
  for (var i = 0u; i < it.n; i++) {
    m = max(m, wg_p[i]);
  }
  workgroupBarrier();
  for (var i = lid; i < it.n; i += WG) {
    wg_p[i] = exp(wg_p[i] - m);
  }
  workgroupBarrier();
  // Every invocation sums l (the one split's o_lat divides by it), in the order of the CPU variant.
  var l = 0.0;
  for (var i = 0u; i < it.n; i++) {
    l += wg_p[i];
  }
  finish_in_workgroup(it, lid, m, l);
}

#if reduce == subgroup
// One slot per invocation: a subgroup's max and its share of l, read back in slot order.
var<workgroup> wg_max: array<f32, WG>;
var<workgroup> wg_sum: array<f32, WG>;

// This lane's share of score(it, t) before the scale: quads rank, rank + count, ... of q . row.
fn score_share(it: Item, t: u32, rank: u32, count: u32) -> f32 {
  let lat_quads = rkv4();
  let dr4 = params.dr >> 2u;
  let q = (it.r * params.heads + it.h) * lat_quads;
  let qp = (it.r * params.heads + it.h) * dr4;
  let row = t * width4();
  var s = vec4(0.0);
  for (var j = rank; j < lat_quads; j += count) {
    s += q_lat[q + j] * cache[row + j];
  }
  let pe = row + lat_quads;
  for (var j = rank; j < dr4; j += count) {
    s += q_pe[qp + j] * cache[pe + j];
  }
  return s.x + s.y + s.z + s.w;
}

// Subgroup variant: one item per workgroup. `it` is uniform over the workgroup.
fn item_in_subgroups(it: Item, lid: u32) {
  let rank = subgroupExclusiveAdd(1u);
  let count = subgroupAdd(1u);
  // Scores: position i belongs to the subgroup holding invocation i % WG (the adapter forms the
  // subgroups; a ballot finds the owner), whose lanes split its dot product; its first lane stores it.
  var m = LOWEST;
  var slot = 0u; // i % WG
  for (var i = 0u; i < it.n; i++) {
    if (subgroupAny(lid == slot)) {
      let s = subgroupAdd(score_share(it, it.first + i, rank, count)) * params.softmax_scale;
      m = max(m, s);
      if (rank == 0u) {
        wg_p[i] = s;
      }
    }
    slot = select(slot + 1u, 0u, slot + 1u == WG);
  }
  wg_max[lid] = m; // the subgroup's max in each of its slots
  workgroupBarrier();
  m = LOWEST;
  for (var g = 0u; g < WG; g++) {
    m = max(m, wg_max[g]);
  }
  // exp(s - m) by position over all invocations; each subgroup's share of l, then l in slot order.
  var own = 0.0;
  for (var i = lid; i < it.n; i += WG) {
    let p = exp(wg_p[i] - m);
    wg_p[i] = p;
    own += p;
  }
  own = subgroupAdd(own);
  wg_sum[lid] = select(0.0, own, rank == 0u); // the subgroup's share in one of its slots, zeros in the rest
  workgroupBarrier();
  var total = 0.0;
  for (var g = 0u; g < WG; g++) {
    total += wg_sum[g];
  }
  finish_in_workgroup(it, lid, m, total);
}
#endif

@compute @workgroup_size(WG)
fn mla_decode(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.y * nwg.x + wid.x;
  let items = params.splits * params.rows * params.heads;
  if (ONE_PER_INVOCATION) {
    let index = group * WG + lid;
    if (index < items) {
      item_in_one_invocation(item_of(index));
    }
    return;
  }
  if (group >= items) {
    return;
  }
#if reduce == subgroup
  item_in_subgroups(item_of(group), lid);
#else
  item_in_workgroup(item_of(group), lid);
#endif
}
