// GEMM for prefill: y[m, n] = sum_k x[m, k] * W[n, k] for M rows (a chunk of tokens), register-tiled.
// Operands, bindings and the weights / numerics variants: matmul_operands.wgsl (prepended with
// fp8_e4m3.wgsl by src/kernels/shader_compose.ts). Wrapper: src/kernels/gemm_fp8.ts.
// Reference: src/kernels/gemm_fp8.ref.ts (matmulRef).
//
// Every variant adds whole 128-wide K blocks and then scales them, acc += (block * x_scale) * S,
// the order of the official fp8_gemm (src/model/MATH.md 5); x_scale is 1 for weight-only.
//
// Variant axis `strategy`:
//   thread_tile     each invocation owns a tile of y of R = 4 * ROW_GROUPS rows (4 or 32) by 8
//                   columns and reads x and W straight from memory; no workgroup memory, no
//                   barrier (CPU adapters such as SwiftShader). Tiles are numbered along n first
//                   (neighbours share rows of x). Dispatch: ceil(ceil(M/R) * ceil(N/8) / WORKGROUP_SIZE).
//   workgroup_tile  a 16 x 16 workgroup owns a 64 x 64 tile of y, each invocation 4 x 4 of it;
//                   it adds whole steps of 8 columns of K and relies on the loaders' masking
//                   past K (never K_ALIGNED);
//                   each K step of 8 columns stages x and the decoded W in workgroup memory
//                   (coalesced loads, every weight decoded once per 64 rows of x) (GPUs).
//                   Dispatch: ceil(M/64) * ceil(N/64) workgroups.
// Workgroups are spread over (x, y) and flattened as wid.y * nwg.x + wid.x.

const MICRO = 4u; // rows and columns of y per invocation, workgroup_tile

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
        y[y_index(m0 + i, n0 + j)] = acc[i][j];
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
// Each invocation owns a tile of y of 4 * ROW_GROUPS rows by 8 columns: every decoded weight quad
// serves all the rows and every x quad 8 columns, so loads and FP8 decodes are few per FMA. The
// rows are written out as up to eight Rows4 values in a Tile rather than looped over: CPU adapters
// do not unroll WGSL loops, and an array indexed by a loop counter lives in memory there (measured
// 1.5-2x slower than named values).
override WORKGROUP_SIZE: u32 = 64u;
// Row groups of 4 per tile: 1 or 8 (4 or 32 rows), picked by the wrapper from M (the tall tile
// compiles slowly on CPU adapters; see rowGroups in gemm_fp8.ts). A pipeline constant: with 1,
// groups b .. h fold away.
override ROW_GROUPS: u32 = 8u;
const TILE_N = 8u;

// W[n, k .. k+3] for the tile's 8 columns n (w0 .. w3 the first 4, w4 .. w7 the last 4), unscaled.
struct Cols {
  w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
  w4: vec4<f32>, w5: vec4<f32>, w6: vec4<f32>, w7: vec4<f32>,
}

// y[m_i, n0 .. n0+7] for 4 rows m_i of the tile: lo_i the columns n0 .. n0+3, hi_i n0+4 .. n0+7.
struct Rows4 {
  lo0: vec4<f32>, hi0: vec4<f32>, lo1: vec4<f32>, hi1: vec4<f32>,
  lo2: vec4<f32>, hi2: vec4<f32>, lo3: vec4<f32>, hi3: vec4<f32>,
}

// The tile: row groups a .. h, of which the first ROW_GROUPS are used.
struct Tile {
  a: Rows4, b: Rows4, c: Rows4, d: Rows4, e: Rows4, f: Rows4, g: Rows4, h: Rows4,
}

// The rows of x each group reads (clamped to the last row).
struct TileRows {
  a: vec4<u32>, b: vec4<u32>, c: vec4<u32>, d: vec4<u32>, e: vec4<u32>, f: vec4<u32>, g: vec4<u32>, h: vec4<u32>,
}

fn tile_cols(lo: vec4<u32>, hi: vec4<u32>, k: u32) -> Cols {
  return Cols(
    weight_quad(lo.x, k), weight_quad(lo.y, k), weight_quad(lo.z, k), weight_quad(lo.w, k),
    weight_quad(hi.x, k), weight_quad(hi.y, k), weight_quad(hi.z, k), weight_quad(hi.w, k),
  );
}

// t + x[m_i, k .. k+3] . W[n_j, k .. k+3] for the 4 rows m and the 8 columns of w.
fn rows4_step(t: Rows4, m: vec4<u32>, k: u32, w: Cols) -> Rows4 {
  let a0 = x_quad(m.x, k);
  let a1 = x_quad(m.y, k);
  let a2 = x_quad(m.z, k);
  let a3 = x_quad(m.w, k);
  return Rows4(
    t.lo0 + dots(a0, w.w0, w.w1, w.w2, w.w3), t.hi0 + dots(a0, w.w4, w.w5, w.w6, w.w7),
    t.lo1 + dots(a1, w.w0, w.w1, w.w2, w.w3), t.hi1 + dots(a1, w.w4, w.w5, w.w6, w.w7),
    t.lo2 + dots(a2, w.w0, w.w1, w.w2, w.w3), t.hi2 + dots(a2, w.w4, w.w5, w.w6, w.w7),
    t.lo3 + dots(a3, w.w0, w.w1, w.w2, w.w3), t.hi3 + dots(a3, w.w4, w.w5, w.w6, w.w7),
  );
}

fn tile_step(t: Tile, m: TileRows, k: u32, w: Cols) -> Tile {
  var r = t;
  r.a = rows4_step(t.a, m.a, k, w);
  if (ROW_GROUPS == 8u) {
    r.b = rows4_step(t.b, m.b, k, w);
    r.c = rows4_step(t.c, m.c, k, w);
    r.d = rows4_step(t.d, m.d, k, w);
    r.e = rows4_step(t.e, m.e, k, w);
    r.f = rows4_step(t.f, m.f, k, w);
    r.g = rows4_step(t.g, m.g, k, w);
    r.h = rows4_step(t.h, m.h, k, w);
  }
  return r;
}

// acc + (block * x_scale[m_i, kb]) * ws: one K block in the official fp8_gemm order (x_scale is 1
// for weight-only).
fn rows4_add_scaled(acc: Rows4, block: Rows4, m: vec4<u32>, kb: u32, ws: f32) -> Rows4 {
  let s = vec4<f32>(x_block_scale(m.x, kb), x_block_scale(m.y, kb), x_block_scale(m.z, kb), x_block_scale(m.w, kb));
  return Rows4(
    acc.lo0 + (block.lo0 * s.x) * ws, acc.hi0 + (block.hi0 * s.x) * ws,
    acc.lo1 + (block.lo1 * s.y) * ws, acc.hi1 + (block.hi1 * s.y) * ws,
    acc.lo2 + (block.lo2 * s.z) * ws, acc.hi2 + (block.hi2 * s.z) * ws,
    acc.lo3 + (block.lo3 * s.w) * ws, acc.hi3 + (block.hi3 * s.w) * ws,
  );
}

fn tile_add_scaled(acc: Tile, block: Tile, m: TileRows, kb: u32, ws: f32) -> Tile {
  var r = acc;
  r.a = rows4_add_scaled(acc.a, block.a, m.a, kb, ws);
  if (ROW_GROUPS == 8u) {
    r.b = rows4_add_scaled(acc.b, block.b, m.b, kb, ws);
    r.c = rows4_add_scaled(acc.c, block.c, m.c, kb, ws);
    r.d = rows4_add_scaled(acc.d, block.d, m.d, kb, ws);
    r.e = rows4_add_scaled(acc.e, block.e, m.e, kb, ws);
    r.f = rows4_add_scaled(acc.f, block.f, m.f, kb, ws);
    r.g = rows4_add_scaled(acc.g, block.g, m.g, kb, ws);
    r.h = rows4_add_scaled(acc.h, block.h, m.h, kb, ws);
  }
  return r;
}

fn rows4_store(t: Rows4, m0: u32, n0: u32) {
  store_quad(t.lo0, m0, n0);
  store_quad(t.hi0, m0, n0 + 4u);
  store_quad(t.lo1, m0 + 1u, n0);
  store_quad(t.hi1, m0 + 1u, n0 + 4u);
  store_quad(t.lo2, m0 + 2u, n0);
  store_quad(t.hi2, m0 + 2u, n0 + 4u);
  store_quad(t.lo3, m0 + 3u, n0);
  store_quad(t.hi3, m0 + 3u, n0 + 4u);
}

fn tile_store(t: Tile, m0: u32, n0: u32) {
  rows4_store(t.a, m0, n0);
  if (ROW_GROUPS == 8u) {
    rows4_store(t.b, m0 + 4u, n0);
    rows4_store(t.c, m0 + 8u, n0);
    rows4_store(t.d, m0 + 12u, n0);
    rows4_store(t.e, m0 + 16u, n0);
    rows4_store(t.f, m0 + 20u, n0);
    rows4_store(t.g, m0 + 24u, n0);
    rows4_store(t.h, m0 + 28u, n0);
  }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let tile = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
  let n_tiles = (params.N + TILE_N - 1u) / TILE_N;
  let m0 = (tile / n_tiles) * 4u * ROW_GROUPS;
  let n0 = (tile % n_tiles) * TILE_N;
  if (m0 >= params.M) {
    return;
  }
  // Rows and columns past the edge read the last one (valid memory); they are not stored.
  let m = TileRows(
    clamped(m0, params.M), clamped(m0 + 4u, params.M), clamped(m0 + 8u, params.M), clamped(m0 + 12u, params.M),
    clamped(m0 + 16u, params.M), clamped(m0 + 20u, params.M), clamped(m0 + 24u, params.M), clamped(m0 + 28u, params.M),
  );
  let n_lo = clamped(n0, params.N);
  let n_hi = clamped(n0 + 4u, params.N);
  var acc = Tile();
  for (var kb = 0u; kb < params.k_blocks; kb++) {
    var block = Tile();
    let k_end = min(kb * BLOCK + BLOCK, params.K);
    for (var k = kb * BLOCK; k < k_end; k += 4u) {
      block = tile_step(block, m, k, tile_cols(n_lo, n_hi, k));
    }
    acc = tile_add_scaled(acc, block, m, kb, weight_block_scale(n0, kb)); // the 8 columns lie in one 128-row scale block
  }
  tile_store(acc, m0, n0);
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
