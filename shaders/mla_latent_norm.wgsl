// The latent norms and the cache write of one layer's MLA, for each row t of a step
// (src/model/MATH.md 4.3-4.4), where three passes and a copy used to be:
//   q_a_norm[t]                        = RMSNorm(q_a[t]; q_a_layernorm)            (q_norm == q_a_layernorm)
//   cache[start + t][0 .. rkv)         = RMSNorm(kv_a[t][0 .. rkv); kv_a_layernorm)            c_hat
//   cache[start + t][rkv .. rkv + dr)  = RoPE(kv_a[t][rkv .. rkv + dr), positions[t])          k_pe
// with kv_a = x · kv_a_proj_with_mqaᵀ, whose rows already have the cache's layout [c_kv | k_pe].
// The arithmetic is rmsnorm.wgsl's (the sum of squares in its order, inverseSqrt(sum / width + eps),
// x * inv_rms * w) and rope_rotate.wgsl's (prepended), so the values are those of the separate kernels.
// Reference: src/kernels/mla_latent_norm.ref.ts. Wrapper: src/kernels/mla_latent_norm.ts.
//
// Variant axes: q_norm, q_a_layernorm (q_lora_rank configs) or none (q_proj configs: bindings 6-8
// absent); reduce, below.
//
// Bindings (element indices, f32 unless said):
//   0 params          uniform Params
//   1 kv_a            [rows, kv_rank + 2 * half_dim]
//   2 kv_norm_weight  [kv_rank] kv_a_layernorm
//   3 positions       [rows] u32, absolute positions
//   4 inv_freq        [half_dim] the YaRN table of src/kernels/rope_tables.ts
//   5 cache           one layer of the latent cache, read_write: row t of the step written at
//                     cache_first + t * (kv_rank + 2 * half_dim) (cache_first = start_pos * that)
//   6 q_a             [rows, q_width]                    (q_norm == q_a_layernorm)
//   7 q_norm_weight   [q_width] q_a_layernorm            (q_norm == q_a_layernorm)
//   8 q_a_norm        [rows, q_width], written           (q_norm == q_a_layernorm)
//
// Dispatch, by the variant axis `reduce` (rmsnorm.wgsl's values, each with rmsnorm's arithmetic):
//   thread     (CPU adapters such as SwiftShader, where a workgroupBarrier is very expensive): one
//              invocation per row does all of it, sums in column order; workgroups = ceil(rows / WG).
//   workgroup  (GPUs): one workgroup of WG invocations per row; invocation lid sums columns lid,
//              lid + WG, ... and a tree in workgroup memory adds those up (both norms at once, in the
//              lanes of a vec2: per lane the same additions as rmsnorm's tree); workgroups = rows.
//   subgroup   (adapters with the 'subgroups' feature): one workgroup of WG invocations per row as
//              `workgroup`, the per-invocation sums added by subgroupAdd within each subgroup and
//              one workgroup step between the subgroups (rmsnorm's, on a vec2). Correct for any
//              subgroup size, any WG and any mapping of invocations to subgroups. Its
//              `enable subgroups;` must precede every declaration, so it is not in this file but in
//              the first of the snippets prepended (src/kernels/mla_latent_norm.ts), before
//              rope_rotate.wgsl.
// Workgroups are laid out over (x, y) as wid.y * nwg.x + wid.x.

struct Params {
  rows: u32,
  q_width: u32,
  kv_rank: u32,
  half_dim: u32,
  cache_first: u32,
  eps: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> kv_a: array<f32>;
@group(0) @binding(2) var<storage, read> kv_norm_weight: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(5) var<storage, read_write> cache: array<f32>;
#if q_norm == q_a_layernorm
@group(0) @binding(6) var<storage, read> q_a: array<f32>;
@group(0) @binding(7) var<storage, read> q_norm_weight: array<f32>;
@group(0) @binding(8) var<storage, read_write> q_a_norm: array<f32>;
#endif

override WG: u32 = 256; // `workgroup`: a power of two (the tree reduction halves it)

// Values per kv_a row and per cache row.
fn kv_width() -> u32 {
  return params.kv_rank + 2u * params.half_dim;
}

// (sum of q_a^2, sum of c_kv^2) over the columns first, first + step, ... of row t.
fn sum_squares(t: u32, first: u32, step: u32) -> vec2<f32> {
  var q_acc = 0.0;
#if q_norm == q_a_layernorm
  let q_base = t * params.q_width;
  for (var j = first; j < params.q_width; j += step) {
    let v = q_a[q_base + j];
    q_acc += v * v;
  }
#endif
  let kv_base = t * kv_width();
  var kv_acc = 0.0;
  for (var j = first; j < params.kv_rank; j += step) {
    let v = kv_a[kv_base + j];
    kv_acc += v * v;
  }
  return vec2<f32>(q_acc, kv_acc);
}

// Row t's outputs at the columns (and rope pairs) first, first + step, ..., from its sums of squares.
fn write_row(t: u32, first: u32, step: u32, sums: vec2<f32>) {
#if q_norm == q_a_layernorm
  let q_inv_rms = inverseSqrt(sums.x / f32(params.q_width) + params.eps);
  let q_base = t * params.q_width;
  for (var j = first; j < params.q_width; j += step) {
    q_a_norm[q_base + j] = q_a[q_base + j] * q_inv_rms * q_norm_weight[j];
  }
#endif
  let kv_inv_rms = inverseSqrt(sums.y / f32(params.kv_rank) + params.eps);
  let src = t * kv_width();
  let dst = params.cache_first + t * kv_width();
  for (var j = first; j < params.kv_rank; j += step) {
    cache[dst + j] = kv_a[src + j] * kv_inv_rms * kv_norm_weight[j];
  }
  let position = positions[t];
  for (var i = first; i < params.half_dim; i += step) {
    let at = params.kv_rank + 2u * i;
    let rotated = rope_rotate(vec2(kv_a[src + at], kv_a[src + at + 1u]), position, inv_freq[i]);
    cache[dst + at] = rotated.x;
    cache[dst + at + 1u] = rotated.y;
  }
}

#if reduce == workgroup
var<workgroup> partial: array<vec2<f32>, WG>;

// Sum of `v` over the workgroup; every invocation gets the total.
fn workgroup_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
  partial[lid] = v;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      partial[lid] += partial[lid + half];
    }
    workgroupBarrier();
  }
  return partial[0];
}
#elif reduce == subgroup
var<workgroup> partial: array<vec2<f32>, WG>;

// Sum of `v` over the workgroup; every invocation gets the total. rmsnorm.wgsl's, on two lanes:
// each subgroup leaves its sum in the slot of one of its invocations and zeros in the rest, then
// every subgroup sums all WG slots, its n active invocations taking every n-th slot from their rank.
fn workgroup_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
  let own = subgroupAdd(v);
  partial[lid] = select(vec2<f32>(0.0), own, subgroupElect());
  workgroupBarrier();
  let rank = subgroupExclusiveAdd(1u);
  let n = subgroupAdd(1u);
  var acc = vec2<f32>(0.0);
  for (var j = rank; j < WG; j += n) {
    acc += partial[j];
  }
  return subgroupAdd(acc);
}
#endif

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.y * nwg.x + wid.x;
#if reduce == thread
  let t = group * WG + lid;
  if (t < params.rows) {
    write_row(t, 0u, 1u, sum_squares(t, 0u, 1u));
  }
#else
  if (group >= params.rows) {
    return;
  }
  write_row(group, lid, WG, workgroup_sum(sum_squares(group, lid, WG), lid));
#endif
}
