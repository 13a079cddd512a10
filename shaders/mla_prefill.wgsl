// MLA prefill attention over the latent cache, absorbed form (src/model/MATH.md 4.4 "Absorbed"):
// a chunk of `rows` query rows at positions start_pos .. start_pos + rows - 1 (their cache rows
// already written) attends causally to the cached prefix and to itself, flash-attention style
// (online softmax over key tiles, one pass, no partials). Reference: src/kernels/mla_prefill.ref.ts.
// Wrapper: src/kernels/mla_prefill.ts.
//
//   s_t = (q_lat[r, h] . c_hat[t] + q_pe[r, h] . k_pe[t]) * softmax_scale,   t <= start_pos + r
//   o_lat[r, h] = sum_t softmax_t(s)_t c_hat[t]
//
// Bindings (f32; rkv and dr are multiples of 4, the arrays are read as vec4):
//   0 params   uniform Params
//   1 q_lat    [rows, heads, rkv]
//   2 q_pe     [rows, heads, dr]        (RoPE already applied)
//   3 cache    [maxT, rkv + dr]         row t = [c_hat(t) | k_pe(t)]; only t <= start_pos + r is read
//   4 o_lat    [rows, heads, rkv]       written (the CPU variant also keeps its running sums here)
//
// Dispatch, by the override ONE_PER_INVOCATION:
//   false (GPUs): one workgroup of WG invocations per (query tile of BQ rows, head), item =
//                 tile * heads + h, workgroups = ceil(rows / BQ) * heads over (x, y). Per key tile of
//                 BK positions: the BQ x BK scores into workgroup memory, the online-softmax update
//                 per row, then each invocation adds the tile into its own latent vec4 columns
//                 (lid, lid + WG, ... < MAX_COLS of them) for all BQ rows, in registers: each c_hat
//                 value read serves BQ rows.
//   true (CPU adapters such as SwiftShader, where a workgroupBarrier is very expensive): one
//                 invocation per (row, head), item = r * heads + h, workgroups = ceil(items / WG); keys
//                 in chunks of CHUNK scores in private memory, the running sums in o_lat, no barrier.

struct Params {
  rows: u32,
  heads: u32,
  rkv: u32,
  dr: u32,
  start_pos: u32,
  softmax_scale: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q_lat: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> q_pe: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o_lat: array<vec4<f32>>;

override WG: u32 = 64;
override ONE_PER_INVOCATION: bool = false;

// GPU variant tile: BQ query rows x BK key positions; the wrapper keeps rkv <= 4 * WG * MAX_COLS.
const BQ: u32 = 16u;
const BK: u32 = 16u;
const MAX_COLS: u32 = 2u;
// CPU variant: key positions per chunk (private scores); latent vec4 columns per run over a chunk.
const CHUNK: u32 = 128u;
const COLS: u32 = 4u;
const LOWEST: f32 = -3.4028234e38;

var<workgroup> wg_s: array<f32, BQ * BK>; // scores, then probabilities, of the key tile
var<workgroup> wg_alpha: array<f32, BQ>;  // per row: rescale of the running sums for the new max
var<workgroup> wg_inv_l: array<f32, BQ>;  // per row: 1 / softmax denominator, at the end

// Lengths in vec4. Shifts, not / 4u, taken once before the loops: SwiftShader runs a u32
// division in every lane, and a loop condition on every iteration (see matmul_operands.wgsl).
fn rkv4() -> u32 {
  return params.rkv >> 2u;
}

fn width4() -> u32 {
  return (params.rkv + params.dr) >> 2u;
}

// q_lat[r, h] . c_hat[t] + q_pe[r, h] . k_pe[t], unscaled.
fn dot_qk(r: u32, h: u32, t: u32) -> f32 {
  let lat_quads = rkv4();
  let dr4 = params.dr >> 2u;
  let q = (r * params.heads + h) * lat_quads;
  let qp = (r * params.heads + h) * dr4;
  let row = t * width4();
  var s = vec4(0.0);
  for (var j = 0u; j < lat_quads; j++) {
    s += q_lat[q + j] * cache[row + j];
  }
  let pe = row + lat_quads;
  for (var j = 0u; j < dr4; j++) {
    s += q_pe[qp + j] * cache[pe + j];
  }
  return s.x + s.y + s.z + s.w;
}

// CPU variant: row r, head h, all keys 0 .. start_pos + r in one invocation.
fn row_in_one_invocation(r: u32, h: u32) {
  var p: array<f32, CHUNK>;
  let context = params.start_pos + r + 1u;
  let lat_quads = rkv4();
  let row_quads = width4();
  let out = (r * params.heads + h) * lat_quads;
  let last = lat_quads - 1u;
  var m = LOWEST;
  var l = 0.0;
  for (var first = 0u; first < context; first += CHUNK) {
    let n = min(CHUNK, context - first);
    var m_new = m;
    for (var i = 0u; i < n; i++) {
      p[i] = dot_qk(r, h, first + i) * params.softmax_scale;
      m_new = max(m_new, p[i]);
    }
    let alpha = exp(m - m_new);
    var l_new = l * alpha;
    for (var i = 0u; i < n; i++) {
      p[i] = exp(p[i] - m_new);
      l_new += p[i];
    }
    let is_first = first == 0u;
    let is_last = first + n == context;
    // Running sums rescaled by alpha; on the last chunk divided by l as they are stored.
    let out_scale = select(1.0, 1.0 / l_new, is_last);
    for (var j0 = 0u; j0 < lat_quads; j0 += COLS) {
      // Constant trip count over the columns (the tail clamped to the last column, not stored), as
      // in mla_decode.wgsl: SwiftShader keeps acc in registers then.
      var acc: array<vec4<f32>, COLS>;
      for (var c = 0u; c < COLS; c++) {
        // o_lat holds the sums of the earlier chunks; on the first it is not read (it may be NaN).
        acc[c] = select(o_lat[out + min(j0 + c, last)] * alpha, vec4(0.0), is_first);
      }
      for (var i = 0u; i < n; i++) {
        let row = (first + i) * row_quads;
        for (var c = 0u; c < COLS; c++) {
          acc[c] += p[i] * cache[row + min(j0 + c, last)];
        }
      }
      for (var c = 0u; c < COLS; c++) {
        if (j0 + c <= last) {
          o_lat[out + j0 + c] = acc[c] * out_scale;
        }
      }
    }
    m = m_new;
    l = l_new;
  }
}

// GPU variant: query rows tile * BQ .. + BQ - 1 of head h. `tile` and `h` are uniform over the
// workgroup; rows past the chunk repeat its last row and are not stored.
fn tile_in_workgroup(tile: u32, h: u32, lid: u32) {
  let r0 = tile * BQ;
  let lat_quads = rkv4();
  let row_quads = width4();
  // Keys any row of the tile attends to: 0 .. start_pos + (last row of the tile).
  let keys = params.start_pos + min(r0 + BQ, params.rows);
  let last = params.rows - 1u;
  var acc: array<vec4<f32>, BQ * MAX_COLS>;
  for (var k = 0u; k < BQ * MAX_COLS; k++) {
    acc[k] = vec4(0.0);
  }
  // Softmax state of row lid (invocations lid < BQ).
  var m = LOWEST;
  var l = 0.0;
  for (var k0 = 0u; k0 < keys; k0 += BK) {
    let n = min(BK, keys - k0);
    // Scores: task e = (row i, run of 4 keys); the q row is read once per 4 keys.
    for (var e = lid; e < BQ * BK / 4u; e += WG) {
      let i = e / (BK / 4u);
      let r = min(r0 + i, last);
      for (var u = 0u; u < 4u; u++) {
        let j = (e % (BK / 4u)) * 4u + u;
        let t = k0 + j;
        var s = 0.0;
        if (j < n && t <= params.start_pos + r) {
          s = dot_qk(r, h, t) * params.softmax_scale;
        } else {
          s = LOWEST; // masked (or past the tile): weight exactly 0 below
        }
        wg_s[i * BK + j] = s;
      }
    }
    workgroupBarrier();
    // Online softmax, one invocation per row: new max, probabilities in place, rescale factor.
    if (lid < BQ) {
      var m_new = m;
      for (var j = 0u; j < n; j++) {
        m_new = max(m_new, wg_s[lid * BK + j]);
      }
      let alpha = exp(m - m_new);
      l *= alpha;
      for (var j = 0u; j < n; j++) {
        let s = wg_s[lid * BK + j];
        let p = select(exp(s - m_new), 0.0, s == LOWEST);
        wg_s[lid * BK + j] = p;
        l += p;
      }
      m = m_new;
      wg_alpha[lid] = alpha;
    }
    workgroupBarrier();
    // o[i, col] = alpha_i o[i, col] + sum_j p[i, j] c_hat[k0 + j, col] for the owned columns.
    for (var c = 0u; c < MAX_COLS; c++) {
      let col = lid + c * WG;
      if (col < lat_quads) {
        for (var i = 0u; i < BQ; i++) {
          acc[i * MAX_COLS + c] *= wg_alpha[i];
        }
        for (var j = 0u; j < n; j++) {
          let v = cache[(k0 + j) * row_quads + col];
          for (var i = 0u; i < BQ; i++) {
            acc[i * MAX_COLS + c] += wg_s[i * BK + j] * v;
          }
        }
      }
    }
    workgroupBarrier(); // wg_s and wg_alpha are rewritten by the next tile
  }
  if (lid < BQ) {
    wg_inv_l[lid] = 1.0 / l;
  }
  workgroupBarrier();
  for (var c = 0u; c < MAX_COLS; c++) {
    let col = lid + c * WG;
    if (col < lat_quads) {
      for (var i = 0u; i < BQ; i++) {
        if (r0 + i < params.rows) {
          o_lat[((r0 + i) * params.heads + h) * lat_quads + col] = acc[i * MAX_COLS + c] * wg_inv_l[i];
        }
      }
    }
  }
}

@compute @workgroup_size(WG)
fn mla_prefill(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.y * nwg.x + wid.x;
  if (ONE_PER_INVOCATION) {
    let index = group * WG + lid;
    if (index < params.rows * params.heads) {
      row_in_one_invocation(index / params.heads, index % params.heads);
    }
    return;
  }
  let tiles = (params.rows + BQ - 1u) / BQ;
  if (group >= tiles * params.heads) {
    return;
  }
  tile_in_workgroup(group / params.heads, group % params.heads, lid);
}
