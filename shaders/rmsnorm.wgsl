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
// Dispatch, by the override ROW_PER_THREAD:
//   false (GPUs): one workgroup of WG invocations per row, a tree reduction in workgroup memory;
//                 workgroups = rows, laid out over (x, y) as row = wid.y * nwg.x + wid.x.
//   true (CPU adapters such as SwiftShader, where a workgroupBarrier is very expensive): one
//                 invocation per row, no barrier; workgroups = ceil(rows / WG), same (x, y) layout.

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

override WG: u32 = 256; // a power of two (the tree reduction halves it)
override ROW_PER_THREAD: bool = false;

var<workgroup> partial: array<f32, WG>;

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

@compute @workgroup_size(WG)
fn rmsnorm(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.y * nwg.x + wid.x;
  if (ROW_PER_THREAD) {
    let row = group * WG + lid;
    if (row < params.rows) {
      write_normalised(row, 0u, 1u, sum_squares(row, 0u, 1u));
    }
    return;
  }
  if (group >= params.rows) {
    return;
  }
  let total = workgroup_sum(sum_squares(group, lid, WG), lid);
  write_normalised(group, lid, WG, total);
}

@compute @workgroup_size(WG)
fn add_rmsnorm(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.y * nwg.x + wid.x;
  if (ROW_PER_THREAD) {
    let row = group * WG + lid;
    if (row < params.rows) {
      write_normalised(row, 0u, 1u, add_then_sum_squares(row, 0u, 1u));
    }
    return;
  }
  if (group >= params.rows) {
    return;
  }
  let total = workgroup_sum(add_then_sum_squares(group, lid, WG), lid);
  write_normalised(group, lid, WG, total);
}
