// MLA decode attention, pass 2, dispatched only when the context spans more than one split (pass 1
// does the whole attention otherwise): merges the per-split partial softmaxes of
// shaders/mla_decode.wgsl into o_lat (the flash-decoding reduction), which expand_o
// (shaders/mla_absorb.wgsl) then multiplies by W_UV:
//
//   M = max_s m_s,   L = sum_s l_s exp(m_s - M),   o_lat[r, h, j] = sum_s exp(m_s - M) acc_s[j] / L
//
// over the splits with l_s > 0 (a split past row r's causal limit holds no position for it).
// Reference: src/kernels/mla_decode.ref.ts. Wrapper: src/kernels/mla_decode.ts.
//
// Bindings (element indices, f32):
//   0 params   uniform Params (the same struct as pass 1)
//   1 part_o   [rows, heads, splits, rkv]
//   2 part_ml  [rows, heads, splits, 2] (m, l)
//   3 o_lat    [rows, heads, rkv]
//
// Dispatch, by the variant axis `reduce` (pass 1's: thread and workgroup run the same here):
//   thread, workgroup  one invocation per output element, no barrier (GPUs and CPU adapters alike;
//             the pass reads splits * (rkv + 2) values per (row, head), small beside pass 1), each
//             finding M and L over all splits itself; workgroups = ceil(rows * heads * rkv / WG).
//   subgroup  one workgroup of WG invocations per (row, head), no barrier: in each subgroup the
//             lanes take splits rank, rank + lanes, ..., M by subgroupMax and L by subgroupAdd,
//             then the workgroup's invocations take the columns j = lid, lid + WG, ...;
//             workgroups = rows * heads. Any subgroup size, full or partial (lanes counted).
// Workgroups are laid out over (x, y) as wid.y * nwg.x + wid.x.

#if reduce == subgroup
enable subgroups;
#endif

struct Params {
  rows: u32,
  heads: u32,
  rkv: u32,
  dr: u32,
  start_pos: u32,
  splits: u32,
  softmax_scale: f32,
  scale_cols: u32,
  dn: u32,
  dv: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> part_o: array<f32>;
@group(0) @binding(2) var<storage, read> part_ml: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> o_lat: array<f32>;

override WG: u32 = 64;
const LOWEST: f32 = -3.4028234e38;

#if reduce == subgroup
@compute @workgroup_size(WG)
fn mla_decode_reduce(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let rh = wid.y * nwg.x + wid.x; // r * heads + h
  if (rh >= params.rows * params.heads) {
    return;
  }
  let rank = subgroupExclusiveAdd(1u);
  let lanes = subgroupAdd(1u);
  let first = rh * params.splits;
  var m = LOWEST;
  for (var s = rank; s < params.splits; s += lanes) {
    let ml = part_ml[first + s];
    if (ml.y > 0.0) {
      m = max(m, ml.x);
    }
  }
  m = subgroupMax(m);
  var l = 0.0;
  for (var s = rank; s < params.splits; s += lanes) {
    let ml = part_ml[first + s];
    if (ml.y > 0.0) {
      l += exp(ml.x - m) * ml.y;
    }
  }
  l = subgroupAdd(l);
  for (var j = lid; j < params.rkv; j += WG) {
    var acc = 0.0;
    for (var s = 0u; s < params.splits; s++) {
      let ml = part_ml[first + s];
      if (ml.y > 0.0) {
        acc += exp(ml.x - m) * part_o[(first + s) * params.rkv + j];
      }
    }
    o_lat[rh * params.rkv + j] = acc / l;
  }
}
#else
@compute @workgroup_size(WG)
fn mla_decode_reduce(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = (wid.y * nwg.x + wid.x) * WG + lid;
  if (index >= params.rows * params.heads * params.rkv) {
    return;
  }
  let rh = index / params.rkv; // r * heads + h
  let j = index % params.rkv;
  let first = rh * params.splits;
  var m = LOWEST;
  for (var s = 0u; s < params.splits; s++) {
    let ml = part_ml[first + s];
    if (ml.y > 0.0) {
      m = max(m, ml.x);
    }
  }
  var l = 0.0;
  var acc = 0.0;
  for (var s = 0u; s < params.splits; s++) {
    let ml = part_ml[first + s];
    if (ml.y > 0.0) {
      let w = exp(ml.x - m);
      l += w * ml.y;
      acc += w * part_o[(first + s) * params.rkv + j];
    }
  }
  o_lat[index] = acc / l;
}
#endif
