// GEMV for decode: y[m, n] = sum_k x[m, k] * W[n, k] for M = 1 .. 4 rows of x (one token, or the
// current token and the MTP draft verified together). Each decoded weight quad is used for all
// rows, so the weight bytes are read once whatever M is.
// Operands, bindings and the weights / numerics variants: matmul_operands.wgsl (prepended with
// fp8_e4m3.wgsl by src/gpu/shader_compose.ts). Wrapper: src/kernels/gemv_fp8.ts.
// Reference: src/kernels/gemm_fp8.ref.ts (matmulRef), the same function for any M.
//
// Variant axis `strategy`:
//   thread_per_4_rows  one invocation per 4 consecutive rows of W (output columns n0 .. n0+3),
//                      running over all of K: each x quad it loads serves 4 columns; no barrier
//                      (CPU adapters such as SwiftShader, where a workgroupBarrier is very expensive
//                      and every load is a gather). Dispatch: ceil(N / (4 * WORKGROUP_SIZE)) workgroups.
//   workgroup_per_row  one workgroup per n; its invocations read consecutive words of the row
//                      (coalesced) and add up in workgroup memory (GPUs). Dispatch: N workgroups.
//   subgroup_per_row   (adapters with 'subgroups'; `enable` in gemv_subgroups.wgsl) one invocation
//                      per n, as its output, but a row's K is split over the lanes of the
//                      invocation's subgroup: the subgroup runs its lanes' rows in turn, each lane
//                      taking quads rank, rank + count, ... (coalesced), then subgroupAdd; no
//                      workgroup memory, no barrier. Correct for any subgroup size and any mapping
//                      of invocations to subgroups (rows are ids, shuffled, not subgroup numbers).
//                      Dispatch: ceil(N / WORKGROUP_SIZE) workgroups.
// Workgroups are spread over (x, y) and flattened as wid.y * nwg.x + wid.x (N = 129280 for lm_head
// exceeds the 65535 per dimension).
//
// Variant axis `linears` (matmul_operands.wgsl): with `two`, q_a_proj and kv_a_proj_with_mqa read
// the same x in one dispatch. The first Linear's units come first (thread_per_4_rows: its ceil(N / 4)
// invocations, so both share workgroups; workgroup_per_row: its N workgroups), the second's follow,
// from params.first_unit_b on; each unit computes its columns exactly as the `one` variant does.

// Variant axis `prologue` (decode plans, src/model/layer.ts): the RMSNorm before a Linear, done by
// the GEMV instead of a dispatch of its own (src/model/MATH.md 4.2):
//   none           x is the Linear's input.
//   rmsnorm        x is the residual stream h [M, K], and the Linear reads RMSNorm(h) * norm_weight:
//                  the dots are taken over h * norm_weight and the finished sums scaled by the row's
//                  1 / sqrt(mean(h^2) + EPS) (a per-row factor, so it moves out of the sum); each
//                  unit sums h's squares itself: all of K (thread_per_4_rows), or its share and then
//                  the workgroup's or the subgroup's sum (the others).
//   rmsnorm_write  as rmsnorm, and workgroup 0 also writes RMSNorm(h) * norm_weight (rmsnorm.wgsl's
//                  formula) into x_normed [M, K], for the kernels after it: the routed experts read
//                  the x the router gate read, the MTP module the hidden state lm_head read.
// Bindings 9 norm_weight [K] f32 and 10 x_normed (rmsnorm_write); ACCUMULATE (matmul_operands.wgsl)
// adds into y: o_proj writing the residual stream h += o_proj(o).

// Rows of x this pipeline computes per call: 1, 2 or 4 (the wrapper picks the smallest >= M). A
// compile-time count, so the loops over rows unroll without a branch (costly on CPU adapters);
// rows from M to ROWS repeat row M - 1 and are not stored.
override ROWS: u32 = 1u;

// Invocations per workgroup; a power of two for workgroup_per_row (its reduction halves it), any
// count for the others.
override WORKGROUP_SIZE: u32 = 64u;

#if prologue != none
@group(0) @binding(9) var<storage, read> norm_weight: array<f32>;
#if prologue == rmsnorm_write
@group(0) @binding(10) var<storage, read_write> x_normed: array<f32>;
#endif

// The RMSNorm's epsilon (the config's rms_norm_eps): a pipeline constant, one per model.
override EPS: f32 = 1e-6;

// norm_weight[k .. k+3] (k % 4 == 0); zero past K, whose indices are clamped in bounds.
fn norm_quad(k: u32) -> vec4<f32> {
  if (K_ALIGNED) {
    return vec4<f32>(norm_weight[k], norm_weight[k + 1u], norm_weight[k + 2u], norm_weight[k + 3u]);
  }
  let last = params.K - 1u;
  let g = vec4<f32>(norm_weight[min(k, last)], norm_weight[min(k + 1u, last)], norm_weight[min(k + 2u, last)], norm_weight[min(k + 3u, last)]);
  return mask_past_k(g, k);
}

// Sums of h[m, 4q .. 4q+3]^2 over the quads q = first, first + step, ... < ceil(K / 4), for the
// rows m < ROWS in the lanes of a vec4 (rows from M on repeat row M - 1).
fn squares(first: u32, step: u32) -> vec4<f32> {
  var s = vec4<f32>(0.0);
  let quads = (params.K + 3u) >> 2u;
  for (var q = first; q < quads; q += step) {
    let k = q * 4u;
    let h0 = x_quad(0u, k);
    s.x += dot(h0, h0);
    if (ROWS >= 2u) {
      let h1 = x_quad(min(1u, params.M - 1u), k);
      s.y += dot(h1, h1);
    }
    if (ROWS >= 4u) {
      let h2 = x_quad(min(2u, params.M - 1u), k);
      let h3 = x_quad(min(3u, params.M - 1u), k);
      s.z += dot(h2, h2);
      s.w += dot(h3, h3);
    }
  }
  return s;
}

// 1 / sqrt(mean(h^2) + EPS) of each row, from its sum of squares (rmsnorm.wgsl's formula).
fn inverse_rms(sum_sq: vec4<f32>) -> vec4<f32> {
  return inverseSqrt(sum_sq / f32(params.K) + EPS);
}

#if prologue == rmsnorm_write
// x_normed[m, k] = h[m, k] * inv_rms[m] * norm_weight[k] for the quads first, first + step, ...
fn write_normed(inv_rms: vec4<f32>, first: u32, step: u32) {
  let quads = (params.K + 3u) >> 2u;
  for (var q = first; q < quads; q += step) {
    let k = q * 4u;
    let g = norm_quad(k);
    for (var m = 0u; m < params.M; m++) {
      let v = x_quad(m, k) * inv_rms[m] * g;
      for (var j = 0u; j < 4u && k + j < params.K; j++) {
        x_normed[m * params.K + k + j] = v[j];
      }
    }
  }
}
#endif
#endif

// norm_weight[k .. k+3] with a norm prologue, loaded once per quad for all rows (x_in); else unused.
fn g_quad(k: u32) -> vec4<f32> {
#if prologue != none
  return norm_quad(k);
#else
  return vec4<f32>(1.0);
#endif
}

// x[m, k .. k+3] as the Linear's dots take it: h * norm_weight (g = g_quad(k)) with a norm
// prologue, whose 1 / rms scales the finished sums; else x itself.
fn x_in(m: u32, k: u32, g: vec4<f32>) -> vec4<f32> {
  return normed_in(x_quad(m, k), g);
}

// x_in of a loaded quad v = x_quad(m, k).
fn normed_in(v: vec4<f32>, g: vec4<f32>) -> vec4<f32> {
#if prologue != none
  return v * g;
#else
  return v;
#endif
}

#if prologue != none
// thread_per_4_rows: the sums of h^2 of rows m.x .. m.w so far, added as block_dots loads each quad
// (every k once, in order: squares(0u, 1u)'s sums).
var<private> row_squares: vec4<f32>;
#endif

// block_dots' loads of row quads, squared into row_squares with a norm prologue.
fn row_quad(lane: u32, m: u32, k: u32) -> vec4<f32> {
  let v = x_quad(m, k);
#if prologue != none
  switch lane {
    case 0u: { row_squares.x += dot(v, v); }
    case 1u: { row_squares.y += dot(v, v); }
    case 2u: { row_squares.z += dot(v, v); }
    default: { row_squares.w += dot(v, v); }
  }
#endif
  return v;
}

// The weight block scale of the unit's Linear (W's or W_b's).
fn linear_block_scale(n: u32, kb: u32) -> f32 {
#if linears == two
  if (second) {
    return weight_b_block_scale(n, kb);
  }
#endif
  return weight_block_scale(n, kb);
}

// W[n, k .. k+3] of the unit's Linear, chosen per quad: for workgroup_per_row (GPUs), where the
// choice is the same for the whole workgroup and costs next to nothing (K % 4 == 0 with two).
fn linear_weight_quad(n: u32, k: u32) -> vec4<f32> {
#if linears == two
  if (second) {
    return weight_b_quad(n, k);
  }
#endif
  return weight_quad(n, k);
}

// sum over k .. k+3 of x[m, k] * W[n, k] (unscaled) for rows m < ROWS, in the lanes of a vec4.
// Written out per lane, not as a loop writing d[m]: ROWS is a pipeline constant, so the unused
// lanes fold away, and a CPU adapter never indexes a vector dynamically (which costs a spill).
fn rows_dot_quad(n: u32, k: u32) -> vec4<f32> {
  return rows_dot(linear_weight_quad(n, k), k);
}

// rows_dot_quad given the weight quad w = W[n, k .. k+3].
fn rows_dot(w: vec4<f32>, k: u32) -> vec4<f32> {
  let g = g_quad(k);
  var d = vec4<f32>(dot(x_in(0u, k, g), w), 0.0, 0.0, 0.0);
  if (ROWS >= 2u) {
    d.y = dot(x_in(min(1u, params.M - 1u), k, g), w);
  }
  if (ROWS >= 4u) {
    d.z = dot(x_in(min(2u, params.M - 1u), k, g), w);
    d.w = dot(x_in(min(3u, params.M - 1u), k, g), w);
  }
  return d;
}

// The act_quant scales of rows m < ROWS in K block kb (1 for weight_only).
fn rows_block_scale(kb: u32) -> vec4<f32> {
  var s = vec4<f32>(1.0);
  for (var m = 0u; m < ROWS; m++) {
    s[m] = x_block_scale(min(m, params.M - 1u), kb);
  }
  return s;
}

fn store_rows(n: u32, acc: vec4<f32>) {
  for (var m = 0u; m < min(params.M, ROWS); m++) {
    store_y(y_index(m, n), acc[m]);
  }
}

// (a unit's index within its Linear, that Linear's N) for unit = an invocation (thread_per_4_rows,
// subgroup_per_row) or a workgroup (workgroup_per_row); with two Linears, also picks the one the unit computes. Made
// from ids and params only, so a workgroup's result is uniform (the barriers of workgroup_per_row
// follow a return on it; `second`, a private variable, does not count as uniform).
fn linear_unit(unit: u32) -> vec2<u32> {
#if linears == two
  second = unit >= params.first_unit_b;
  if (unit >= params.first_unit_b) {
    return vec2<u32>(unit - params.first_unit_b, params.n_b);
  }
#endif
  return vec2<u32>(unit, params.N);
}

#if strategy == thread_per_4_rows
// The unscaled sums over K block kb of x[m_j, k] * W[n_i, k]: column j of the result for row m_j of
// x, its lanes the 4 columns n_i.
fn block_dots(n: vec4<u32>, m: vec4<u32>, kb: u32) -> mat4x4<f32> {
  var block0 = vec4<f32>(0.0);
  var block1 = vec4<f32>(0.0);
  var block2 = vec4<f32>(0.0);
  var block3 = vec4<f32>(0.0);
  let k_end = min(kb * BLOCK + BLOCK, params.K);
  for (var k = kb * BLOCK; k < k_end; k += 4u) {
    let w0 = weight_quad(n.x, k);
    let w1 = weight_quad(n.y, k);
    let w2 = weight_quad(n.z, k);
    let w3 = weight_quad(n.w, k);
    let g = g_quad(k);
    block0 += dots(normed_in(row_quad(0u, m.x, k), g), w0, w1, w2, w3);
    if (ROWS >= 2u) {
      block1 += dots(normed_in(row_quad(1u, m.y, k), g), w0, w1, w2, w3);
    }
    if (ROWS >= 4u) {
      block2 += dots(normed_in(row_quad(2u, m.z, k), g), w0, w1, w2, w3);
      block3 += dots(normed_in(row_quad(3u, m.w, k), g), w0, w1, w2, w3);
    }
  }
  return mat4x4<f32>(block0, block1, block2, block3);
}

#if linears == two
// block_dots over W_b (weight_b_quad; K % 4 == 0).
fn block_dots_b(n: vec4<u32>, m: vec4<u32>, kb: u32) -> mat4x4<f32> {
  var block0 = vec4<f32>(0.0);
  var block1 = vec4<f32>(0.0);
  var block2 = vec4<f32>(0.0);
  var block3 = vec4<f32>(0.0);
  let k_end = min(kb * BLOCK + BLOCK, params.K);
  for (var k = kb * BLOCK; k < k_end; k += 4u) {
    let w0 = weight_b_quad(n.x, k);
    let w1 = weight_b_quad(n.y, k);
    let w2 = weight_b_quad(n.z, k);
    let w3 = weight_b_quad(n.w, k);
    let g = g_quad(k);
    block0 += dots(normed_in(row_quad(0u, m.x, k), g), w0, w1, w2, w3);
    if (ROWS >= 2u) {
      block1 += dots(normed_in(row_quad(1u, m.y, k), g), w0, w1, w2, w3);
    }
    if (ROWS >= 4u) {
      block2 += dots(normed_in(row_quad(2u, m.z, k), g), w0, w1, w2, w3);
      block3 += dots(normed_in(row_quad(3u, m.w, k), g), w0, w1, w2, w3);
    }
  }
  return mat4x4<f32>(block0, block1, block2, block3);
}
#endif

// block_dots of the invocation's Linear: one choice per K block (see weight_b_quad).
fn linear_block_dots(n: vec4<u32>, m: vec4<u32>, kb: u32) -> mat4x4<f32> {
#if linears == two
  if (second) {
    return block_dots_b(n, m, kb);
  }
#endif
  return block_dots(n, m, kb);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let flat = wid.y * nwg.x + wid.x;
  let linear = linear_unit(flat * WORKGROUP_SIZE + lid);
  let n0 = linear.x * 4u;
  if (n0 >= linear.y) {
#if prologue == rmsnorm_write
    // workgroup 0 writes x_normed whether or not its invocations have columns
    if (flat == 0u) {
      write_normed(inverse_rms(squares(0u, 1u)), lid, WORKGROUP_SIZE);
    }
#endif
    return;
  }
  // Columns past N read the last row of W (valid memory) and are not stored; rows from M to
  // ROWS repeat row M - 1. One accumulator per row of x, its lanes the 4 columns; written out,
  // not looped over (see rows_dot_quad).
  let n = min(vec4<u32>(n0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(linear.y - 1u));
  let m = min(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.M - 1u));
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    // the official fp8_gemm order: a whole 128-wide block, then (sum * x_scale) * S; the 4
    // columns (n0 % 4 == 0) lie in one 128-row scale block
    let block = linear_block_dots(n, m, kb);
    let ws = linear_block_scale(n0, kb);
    acc0 += (block[0] * x_block_scale(m.x, kb)) * ws;
    if (ROWS >= 2u) {
      acc1 += (block[1] * x_block_scale(m.y, kb)) * ws;
    }
    if (ROWS >= 4u) {
      acc2 += (block[2] * x_block_scale(m.z, kb)) * ws;
      acc3 += (block[3] * x_block_scale(m.w, kb)) * ws;
    }
  }
#if prologue != none
  // the squares of every k, summed as block_dots loaded them
  let inv_rms = inverse_rms(row_squares);
#if prologue == rmsnorm_write
  if (flat == 0u) {
    write_normed(inv_rms, lid, WORKGROUP_SIZE);
  }
#endif
  acc0 *= inv_rms.x;
  acc1 *= inv_rms.y;
  acc2 *= inv_rms.z;
  acc3 *= inv_rms.w;
#endif
  store_quad(acc0, 0u, n0);
  if (ROWS >= 2u && params.M >= 2u) {
    store_quad(acc1, 1u, n0);
  }
  if (ROWS >= 4u && params.M >= 3u) {
    store_quad(acc2, 2u, n0);
  }
  if (ROWS >= 4u && params.M >= 4u) {
    store_quad(acc3, 3u, n0);
  }
}
#elif strategy == workgroup_per_row
var<workgroup> partial: array<vec4<f32>, WORKGROUP_SIZE>;
#if prologue != none
var<workgroup> partial_squares: array<vec4<f32>, WORKGROUP_SIZE>;
#endif

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let flat = wid.y * nwg.x + wid.x;
  let linear = linear_unit(flat);
  let n = linear.x;
  if (n >= linear.y) {
    return; // the same for the whole workgroup, so the barriers below stay uniform
  }
  // Invocation lid takes quads lid, lid + WORKGROUP_SIZE, ...; each quad lies in one K block and
  // is scaled on its own (the same sum as per block, rounded a little differently).
  var acc = vec4<f32>(0.0);
  let quads = (params.K + 3u) / 4u;
  for (var q = lid; q < quads; q += WORKGROUP_SIZE) {
    let kb = q >> 5u; // q / (BLOCK / 4): a shift, as in matmul_operands.wgsl
    acc += (rows_dot_quad(n, q * 4u) * rows_block_scale(kb)) * linear_block_scale(n, kb);
  }
  partial[lid] = acc;
#if prologue != none
  partial_squares[lid] = squares(lid, WORKGROUP_SIZE);
#endif
  workgroupBarrier();
  for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      partial[lid] += partial[lid + half];
#if prologue != none
      partial_squares[lid] += partial_squares[lid + half];
#endif
    }
    workgroupBarrier();
  }
#if prologue != none
  let inv_rms = inverse_rms(partial_squares[0]);
#if prologue == rmsnorm_write
  if (flat == 0u) {
    write_normed(inv_rms, lid, WORKGROUP_SIZE);
  }
#endif
  if (lid == 0u) {
    store_rows(n, partial[0] * inv_rms);
  }
#else
  if (lid == 0u) {
    store_rows(n, partial[0]);
  }
#endif
}
#elif strategy == subgroup_per_row
// This lane's share of row n: sum over its quads q = rank, rank + count, ... < ceil(K / 4) of
// x[m, 4q ..] . W[n, 4q ..], each quad scaled on its own as in workgroup_per_row (a lane's quads
// of one K block are few, and with a subgroup wider than a block's 32 quads the lanes would
// otherwise idle). The Linear is chosen once per row, not per load (see weight_b_quad): `second`
// is the same for every lane here, as all take the same row.
fn lane_share(n: u32, rank: u32, count: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  let quads = (params.K + 3u) >> 2u;
#if linears == two
  if (second) {
    for (var q = rank; q < quads; q += count) {
      let kb = q >> 5u; // q / (BLOCK / 4)
      acc += (rows_dot(weight_b_quad(n, q * 4u), q * 4u) * rows_block_scale(kb)) * weight_b_block_scale(n, kb);
    }
    return acc;
  }
#endif
  for (var q = rank; q < quads; q += count) {
    let kb = q >> 5u;
    acc += (rows_dot(weight_quad(n, q * 4u), q * 4u) * rows_block_scale(kb)) * weight_block_scale(n, kb);
  }
  return acc;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) lanes: u32,
) {
  let flat = wid.y * nwg.x + wid.x;
  let unit = flat * WORKGROUP_SIZE + lid;
  // K is split over the lanes that exist: a subgroup may be partial (WORKGROUP_SIZE not a
  // multiple of the subgroup size). No invocation returns before the subgroup operations: units
  // past N compute a clamped row and store nothing.
  let rank = subgroupExclusiveAdd(1u);
  let count = subgroupAdd(1u);
  var own = vec4<f32>(0.0);
  for (var j = 0u; j < lanes; j++) {
    // Lane j's row, computed by all (a missing lane j gives an unused value, clamped in bounds)
    let linear = linear_unit(subgroupShuffle(unit, j));
    let sum = subgroupAdd(lane_share(min(linear.x, linear.y - 1u), rank, count));
    own = select(own, sum, lane == j);
  }
#if prologue != none
  // h's squares split over the lanes as K is; rows are the same for every lane.
  let inv_rms = inverse_rms(subgroupAdd(squares(rank, count)));
  own *= inv_rms;
#if prologue == rmsnorm_write
  if (flat == 0u) {
    write_normed(inv_rms, lid, WORKGROUP_SIZE);
  }
#endif
#endif
  let linear = linear_unit(unit);
  if (linear.x < linear.y) {
    store_rows(linear.x, own);
  }
}
#endif
