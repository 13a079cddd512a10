// The benchmark's FMA ceiling: each invocation runs 8 independent fma chains of ITERATIONS steps
// in registers, then writes one value so the work cannot be dropped.
// Bindings: 0 out [workgroups * 64] f32 (read_write).  Dispatch: (workgroups, 1, 1) of 64.
// FLOPs: workgroups * 64 * ITERATIONS * 8 * 2.

override ITERATIONS: u32 = 1024u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let seed = f32(gid.x) * 1e-7;
  var a = vec4<f32>(seed, seed + 0.1, seed + 0.2, seed + 0.3);
  var b = vec4<f32>(seed + 0.4, seed + 0.5, seed + 0.6, seed + 0.7);
  let m = vec4<f32>(0.999999);
  let c = vec4<f32>(1e-7);
  for (var i = 0u; i < ITERATIONS; i++) {
    a = fma(a, m, c);
    b = fma(b, m, c);
  }
  let s = a + b;
  out[gid.x] = s.x + s.y + s.z + s.w;
}
