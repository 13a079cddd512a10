// GEMV for decode: y[m, n] = sum_k x[m, k] * W[n, k] for M = 1 .. 4 rows of x (one token, or the
// current token and the MTP draft verified together). Each decoded weight quad is used for all
// rows, so the weight bytes are read once whatever M is.
// Operands, bindings and the weights / numerics variants: matmul_operands.wgsl (prepended with
// fp8_e4m3.wgsl by src/kernels/shader_compose.ts). Wrapper: src/kernels/gemv_fp8.ts.
// Reference: src/kernels/gemm_fp8.ref.ts (matmulRef), the same function for any M.
//
// Variant axis `strategy`:
//   thread_per_4_rows  one invocation per 4 consecutive rows of W (output columns n0 .. n0+3),
//                      running over all of K: each x quad it loads serves 4 columns; no barrier
//                      (CPU adapters such as SwiftShader, where a workgroupBarrier is very expensive
//                      and every load is a gather). Dispatch: ceil(N / (4 * WORKGROUP_SIZE)) workgroups.
//   workgroup_per_row  one workgroup per n; its invocations read consecutive words of the row
//                      (coalesced) and add up in workgroup memory (GPUs). Dispatch: N workgroups.
// Workgroups are spread over (x, y) and flattened as wid.y * nwg.x + wid.x (N = 129280 for lm_head
// exceeds the 65535 per dimension).

// Rows of x this pipeline computes per call: 1, 2 or 4 (the wrapper picks the smallest >= M). A
// compile-time count, so the loops over rows unroll without a branch (costly on CPU adapters);
// rows from M to ROWS repeat row M - 1 and are not stored.
override ROWS: u32 = 1u;

// Invocations per workgroup; a power of two for workgroup_per_row (its reduction halves it).
override WORKGROUP_SIZE: u32 = 64u;

// sum over k .. k+3 of x[m, k] * W[n, k] (unscaled) for rows m < ROWS, in the lanes of a vec4.
// Written out per lane, not as a loop writing d[m]: ROWS is a pipeline constant, so the unused
// lanes fold away, and a CPU adapter never indexes a vector dynamically (which costs a spill).
fn rows_dot_quad(n: u32, k: u32) -> vec4<f32> {
  let w = weight_quad(n, k);
  var d = vec4<f32>(dot(x_quad(0u, k), w), 0.0, 0.0, 0.0);
  if (ROWS >= 2u) {
    d.y = dot(x_quad(min(1u, params.M - 1u), k), w);
  }
  if (ROWS >= 4u) {
    d.z = dot(x_quad(min(2u, params.M - 1u), k), w);
    d.w = dot(x_quad(min(3u, params.M - 1u), k), w);
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
    y[y_index(m, n)] = acc[m];
  }
}

#if strategy == thread_per_4_rows
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let n0 = ((wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid) * 4u;
  if (n0 >= params.N) {
    return;
  }
  // Columns past N read the last row of W (valid memory) and are not stored; rows from M to
  // ROWS repeat row M - 1. One accumulator per row of x, its lanes the 4 columns; written out,
  // not looped over (see rows_dot_quad).
  let n = min(vec4<u32>(n0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.N - 1u));
  let m = min(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.M - 1u));
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    // the official fp8_gemm order: a whole 128-wide block, then (sum * x_scale) * S; the 4
    // columns (n0 % 4 == 0) lie in one 128-row scale block
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
      block0 += dots(x_quad(m.x, k), w0, w1, w2, w3);
      if (ROWS >= 2u) {
        block1 += dots(x_quad(m.y, k), w0, w1, w2, w3);
      }
      if (ROWS >= 4u) {
        block2 += dots(x_quad(m.z, k), w0, w1, w2, w3);
        block3 += dots(x_quad(m.w, k), w0, w1, w2, w3);
      }
    }
    let ws = weight_block_scale(n0, kb);
    acc0 += (block0 * x_block_scale(m.x, kb)) * ws;
    if (ROWS >= 2u) {
      acc1 += (block1 * x_block_scale(m.y, kb)) * ws;
    }
    if (ROWS >= 4u) {
      acc2 += (block2 * x_block_scale(m.z, kb)) * ws;
      acc3 += (block3 * x_block_scale(m.w, kb)) * ws;
    }
  }
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

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let n = wid.y * nwg.x + wid.x;
  if (n >= params.N) {
    return; // the same for the whole workgroup, so the barriers below stay uniform
  }
  // Invocation lid takes quads lid, lid + WORKGROUP_SIZE, ...; each quad lies in one K block and
  // is scaled on its own (the same sum as per block, rounded a little differently).
  var acc = vec4<f32>(0.0);
  let quads = (params.K + 3u) / 4u;
  for (var q = lid; q < quads; q += WORKGROUP_SIZE) {
    let kb = q >> 5u; // q / (BLOCK / 4): a shift, as in matmul_operands.wgsl
    acc += (rows_dot_quad(n, q * 4u) * rows_block_scale(kb)) * weight_block_scale(n, kb);
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      partial[lid] += partial[lid + half];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    store_rows(n, partial[0]);
  }
}
#endif
