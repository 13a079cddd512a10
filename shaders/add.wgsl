// In-place elementwise sum a[i] = a[i] + b[i], i < n, f32: the MoE output, routed experts plus
// shared experts (src/model/MATH.md 4.6), before the residual add. Reference: Math.fround(a + b).
// Wrapper: src/kernels/add.ts.
//
// Bindings:
//   0 params  uniform Params
//   1 a       [n] f32, read and written
//   2 b       [n] f32
//
// Dispatch: one invocation per element; workgroups = ceil(n / WORKGROUP_SIZE), laid out over
// (x, y) as group = wid.y * nwg.x + wid.x.

struct Params {
  n: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

override WORKGROUP_SIZE: u32 = 64;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
  if (i < params.n) {
    a[i] = a[i] + b[i];
  }
}
