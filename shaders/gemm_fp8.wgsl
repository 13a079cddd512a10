// GEMM for prefill: y[m, n] = sum_k x[m, k] * W[n, k] for M rows (a chunk of tokens), register-tiled.
// Operands, bindings and the weights / numerics variants: matmul_operands.wgsl (prepended with
// fp8_e4m3.wgsl by src/kernels/shader_compose.ts). Wrapper: src/kernels/gemm_fp8.ts.
// Reference: src/kernels/gemm_fp8.ref.ts (matmulRef).
//
// Every variant adds whole 128-wide K blocks and then scales them, acc += (block * x_scale) * S,
// the order of the official fp8_gemm (DEEPSEEK_V3_MATH.md 5).
//
// Variant axis `strategy`, each invocation owning a 4 x 4 tile of y (rows m, columns n):
//   thread_tile     invocations read x and W straight from memory; no workgroup memory, no
//                   barrier (CPU adapters such as SwiftShader). Tiles are numbered along n first
//                   (neighbours share rows of x). Dispatch: ceil(ceil(M/4) * ceil(N/4) / WORKGROUP_SIZE).
//   workgroup_tile  a 16 x 16 workgroup owns a 64 x 64 tile of y; each K step of 8 columns stages
//                   x and the decoded W in workgroup memory (coalesced loads, every weight decoded
//                   once per 64 rows of x) (GPUs). Dispatch: ceil(M/64) * ceil(N/64) workgroups.
// Workgroups are spread over (x, y) and flattened as wid.y * nwg.x + wid.x.

const MICRO = 4u; // rows and columns of y per invocation

// sum over k .. k+3 of x[m_i, k] * W[n_j, k] for a 4 x 4 tile given by row and column indices.
fn micro_tile_quad(m: vec4<u32>, n: vec4<u32>, k: u32) -> mat4x4<f32> {
  // mat4x4 columns are rows of x here: result[i][j] = x[m_i] . W[n_j]
  let w0 = weight_quad(n.x, k);
  let w1 = weight_quad(n.y, k);
  let w2 = weight_quad(n.z, k);
  let w3 = weight_quad(n.w, k);
  var t: mat4x4<f32>;
  for (var i = 0u; i < MICRO; i++) {
    let a = x_quad(m[i], k);
    t[i] = vec4<f32>(dot(a, w0), dot(a, w1), dot(a, w2), dot(a, w3));
  }
  return t;
}

// acc[i] += (block[i] * x_scale[m_i]) * S[n / 128] for one K block; the 4 columns n0 .. n0+3
// (n0 % 4 == 0) share one 128-row scale block.
fn add_scaled_block(acc: ptr<function, mat4x4<f32>>, block: mat4x4<f32>, m: vec4<u32>, n0: u32, kb: u32) {
  let ws = weight_block_scale(n0, kb);
  for (var i = 0u; i < MICRO; i++) {
    (*acc)[i] += (block[i] * x_block_scale(m[i], kb)) * ws;
  }
}

fn store_tile(acc: mat4x4<f32>, m0: u32, n0: u32) {
  for (var i = 0u; i < MICRO; i++) {
    for (var j = 0u; j < MICRO; j++) {
      if (m0 + i < params.M && n0 + j < params.N) {
        y[(m0 + i) * params.N + n0 + j] = acc[i][j];
      }
    }
  }
}

// Indices m0 .. m0+3 clamped to the last row, so edge tiles read valid rows (their results are
// not stored).
fn clamped(first: u32, count: u32) -> vec4<u32> {
  return min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(count - 1u));
}

#if strategy == thread_tile
override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let tile = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
  let n_tiles = (params.N + MICRO - 1u) / MICRO;
  let m0 = (tile / n_tiles) * MICRO;
  let n0 = (tile % n_tiles) * MICRO;
  if (m0 >= params.M) {
    return;
  }
  let m = clamped(m0, params.M);
  let n = clamped(n0, params.N);
  var acc = mat4x4<f32>();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = mat4x4<f32>();
    let k_end = min(kb * BLOCK + BLOCK, params.K);
    for (var k = kb * BLOCK; k < k_end; k += 4u) {
      block += micro_tile_quad(m, n, k);
    }
    add_scaled_block(&acc, block, m, n0, kb);
  }
  store_tile(acc, m0, n0);
}
#elif strategy == workgroup_tile
const TILE = 64u; // rows and columns of y per workgroup: 16 x 16 invocations of 4 x 4
const STEP = 8u; // K columns staged per step; divides BLOCK

// [STEP, TILE]: column k of the step, then row (x) or column (W) of the tile
var<workgroup> x_tile: array<f32, STEP * TILE>;
var<workgroup> w_tile: array<f32, STEP * TILE>;

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let tile = wid.y * nwg.x + wid.x;
  let n_tiles = (params.N + TILE - 1u) / TILE;
  let m_tiles = (params.M + TILE - 1u) / TILE;
  if (tile >= n_tiles * m_tiles) {
    return; // the same for the whole workgroup, so the barriers below stay uniform
  }
  let tile_m0 = (tile / n_tiles) * TILE;
  let tile_n0 = (tile % n_tiles) * TILE;
  // computing: this invocation's 4 x 4 micro tile
  let row = (lid / 16u) * MICRO;
  let col = (lid % 16u) * MICRO;
  let m0 = tile_m0 + row;
  let n0 = tile_n0 + col;
  let m = clamped(m0, params.M);
  // staging: a step is 64 rows x 2 quads of x and as many of W; invocations 0 .. 127 load one
  // quad of x each, 128 .. 255 one quad of W
  let stages_w = lid >= 128u;
  let stage_row = (lid % 128u) / 2u;
  let stage_k = (lid % 2u) * 4u;
  let stage_m = tile_m0 + stage_row;
  let stage_n = tile_n0 + stage_row;

  var acc = mat4x4<f32>();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = mat4x4<f32>();
    let k_end = min(kb * BLOCK + BLOCK, params.K);
    for (var k0 = kb * BLOCK; k0 < k_end; k0 += STEP) {
      var quad = vec4<f32>(0.0);
      if (stages_w && stage_n < params.N) {
        quad = weight_quad(stage_n, k0 + stage_k);
      } else if (!stages_w && stage_m < params.M) {
        quad = x_quad(stage_m, k0 + stage_k);
      }
      for (var j = 0u; j < 4u; j++) {
        let at = (stage_k + j) * TILE + stage_row;
        if (stages_w) {
          w_tile[at] = quad[j];
        } else {
          x_tile[at] = quad[j];
        }
      }
      workgroupBarrier();
      for (var kk = 0u; kk < STEP; kk++) {
        let base = kk * TILE;
        let a = vec4<f32>(x_tile[base + row], x_tile[base + row + 1u], x_tile[base + row + 2u], x_tile[base + row + 3u]);
        let b = vec4<f32>(w_tile[base + col], w_tile[base + col + 1u], w_tile[base + col + 2u], w_tile[base + col + 3u]);
        block += mat4x4<f32>(b * a.x, b * a.y, b * a.z, b * a.w); // block[i][j] += x[m_i] * W[n_j]
      }
      workgroupBarrier();
    }
    add_scaled_block(&acc, block, m, min(n0, params.N - 1u), kb);
  }
  store_tile(acc, m0, n0);
}
#endif
