// RMSNorm over rows, f32 (src/model/MATH.md 4.2): y = x / sqrt(mean(x^2) + eps) * w.
// Reference: src/kernels/rmsnorm.ref.ts. Wrapper: src/kernels/rmsnorm.ts.
//
// Two entry points, one per variant of the bindings:
//   rmsnorm      y = RMSNorm(x)
//   add_rmsnorm  x = x + delta (the residual stream, updated in place), then y = RMSNorm(x)
//
// Bindings (element indices, f32):
//   0 params  uniform Params
//   1 x       [rows, x_stride] read_write; row t normalises x[t*x_stride + x_offset ..][0 .. width)
//             (read only by `rmsnorm`; read_write so both variants share one declaration)
//   2 weight  [width] the norm weight, f32
//   3 y       [rows, y_stride]; row t written at y[t*y_stride + y_offset ..][0 .. width)
//   4 delta   [rows, x_stride] `add_rmsnorm` only; same layout as x
//
// Dispatch, by the variant axis `reduce`:
//   thread     (CPU adapters such as SwiftShader, where a workgroupBarrier is very expensive): one
//              invocation per row, no barrier; workgroups = ceil(rows / WG), laid out over (x, y)
//              as group = wid.y * nwg.x + wid.x.
//   workgroup  (GPUs): one workgroup of WG invocations per row, a tree reduction in workgroup
//              memory (log2(WG) + 2 barriers); workgroups = rows, same (x, y) layout.
//   subgroup   (adapters with the 'subgroups' feature): one workgroup of WG invocations per row as
//              `workgroup`; each subgroup sums with subgroupAdd and the subgroups' sums meet in one
//              workgroup step (one barrier). Correct for any subgroup size, any WG, and any mapping
//              of invocations to subgroups. With WG no larger than a subgroup the step has one
//              sum to add; it stays, as skipping it would assume how the adapter forms subgroups
//              (on SwiftShader, subgroups of 4 and WG 4, a row timed the same with and without it).

#if reduce == subgroup
enable subgroups;
#endif

struct Params {
  rows: u32,
  width: u32,
  x_stride: u32,
  x_offset: u32,
  y_stride: u32,
  y_offset: u32,
  eps: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;

override WG: u32 = 256; // `workgroup`: a power of two (the tree reduction halves it)

// Sum of x^2 over the columns first, first + step, ... of one row.
fn sum_squares(row: u32, first: u32, step: u32) -> f32 {
  let base = row * params.x_stride + params.x_offset;
  var acc = 0.0;
  for (var j = first; j < params.width; j += step) {
    let v = x[base + j];
    acc += v * v;
  }
  return acc;
}

// The same after adding delta into x (each column is written by the invocation that reads it).
fn add_then_sum_squares(row: u32, first: u32, step: u32) -> f32 {
  let base = row * params.x_stride + params.x_offset;
  var acc = 0.0;
  for (var j = first; j < params.width; j += step) {
    let v = x[base + j] + delta[base + j];
    x[base + j] = v;
    acc += v * v;
  }
  return acc;
}

fn write_normalised(row: u32, first: u32, step: u32, sum_sq: f32) {
  let inv_rms = inverseSqrt(sum_sq / f32(params.width) + params.eps);
  let src = row * params.x_stride + params.x_offset;
  let dst = row * params.y_stride + params.y_offset;
  for (var j = first; j < params.width; j += step) {
    y[dst + j] = x[src + j] * inv_rms * weight[j];
  }
}

#if reduce == workgroup
var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation gets the total.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      partial[lid] += partial[lid + half];
    }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier(); // partial is reused by the next call
  return total;
}
#elif reduce == subgroup
var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation gets the total.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
  let own = subgroupAdd(v);
  // Which invocations share a subgroup is the adapter's choice (no subgroup_id builtin here):
  // each subgroup leaves its sum in the slot of one of its invocations and zeros in the rest,
  // then every subgroup sums all WG slots, its n active invocations taking every n-th slot from
  // their rank. No assumption on the subgroup size, or that subgroups are full.
  partial[lid] = select(0.0, own, subgroupElect());
  workgroupBarrier();
  let rank = subgroupExclusiveAdd(1u);
  let n = subgroupAdd(1u);
  var acc = 0.0;
  for (var j = rank; j < WG; j += n) {
    acc += partial[j];
  }
  return subgroupAdd(acc);
}
#endif

@compute @workgroup_size(WG)
fn rmsnorm(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.y * nwg.x + wid.x;
#if reduce == thread
  let row = group * WG + lid;
  if (row < params.rows) {
    write_normalised(row, 0u, 1u, sum_squares(row, 0u, 1u));
  }
#else
  if (group >= params.rows) {
    return;
  }
  let total = workgroup_sum(sum_squares(group, lid, WG), lid);
  write_normalised(group, lid, WG, total);
#endif
}

@compute @workgroup_size(WG)
fn add_rmsnorm(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.y * nwg.x + wid.x;
#if reduce == thread
  let row = group * WG + lid;
  if (row < params.rows) {
    write_normalised(row, 0u, 1u, add_then_sum_squares(row, 0u, 1u));
  }
#else
  if (group >= params.rows) {
    return;
  }
  let total = workgroup_sum(add_then_sum_squares(group, lid, WG), lid);
  write_normalised(group, lid, WG, total);
#endif
}
