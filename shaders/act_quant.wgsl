// act_quant for the W8A8 path (official kernel.py act_quant; src/model/MATH.md 5):
// per row m and contiguous group g of 128 columns,
//   amax = max(max |x|, 1e-4),  s = amax / 448 (with UE8M0, scale_fmt "ue8m0": rounded up to a
//   power of two, 2^ceil(log2 s)),  code = e4m3_rne(x / s).
// Needs fp8_e4m3.wgsl (prepended by src/kernels/shader_compose.ts). Wrapper: src/kernels/act_quant.ts;
// reference: src/kernels/act_quant.ref.ts. The codes and scales feed gemv_fp8 / gemm_fp8 (numerics w8a8).
//
// Variant axis `output`:
//   codes        bindings 1 x (read), 2 codes [M, K] e4m3, 4 per u32 (byte j of a word = column
//                4i + j), 3 scales [M, K/128] f32: the operands of gemv_fp8 / gemm_fp8 w8a8
//   dequantized  binding 1 x (read_write): each value replaced in place by e4m3(code) * s, the
//                activation the official fp8_gemm multiplies, for kernels that take f32 input
//                (the expert kernels): y = sum (e4m3(code) * s) * W equals the fp8_gemm sum up to
//                the order of the rounding
//   dequantized_copy  the same values written to binding 2 `rounded` [M, K] f32, x (read) kept:
//                for an input read by Linears of two scale formats (V3.1's routed experts, ue8m0,
//                and shared experts, amax / 448, share the MoE input)
//
// Bindings:
//   0 params  uniform Params
//   1 x       [M, K] f32, K % 128 == 0
//
// Dispatch: one invocation per (m, g), numbered g fastest: ceil(M * K/128 / WORKGROUP_SIZE)
// workgroups over (x, y), flattened as wid.y * nwg.x + wid.x. A group is only 128 values, so one
// invocation reads it twice (amax, then codes) with no barrier: fine on GPUs and CPU adapters.

struct Params {
  M: u32,
  K: u32,
  groups: u32, // K / 128
  _pad: u32,
}

const GROUP = 128u;
const AMAX_FLOOR = 0x38D1B717u; // the bits of 1e-4 rounded to f32, as torch rounds the official clamp

@group(0) @binding(0) var<uniform> params: Params;
#if output == codes
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<f32>;
#elif output == dequantized
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> rounded: array<f32>;
#endif

override WORKGROUP_SIZE: u32 = 64u;
// quantization_config.scale_fmt "ue8m0" (DeepSeek-V3.1): each scale rounded up to a power of two.
override UE8M0: bool = false;

// The smallest power of two >= s for a positive normal f32: the official exp2(ceil(log2(s))),
// taken from the bits so it is exact (an exponent bump unless the fraction is 0, when s already is one).
fn round_up_pow2(s: f32) -> f32 {
  let bits = bitcast<u32>(s);
  let exponent = (bits >> 23u) + select(0u, 1u, (bits & 0x7FFFFFu) != 0u);
  return bitcast<f32>(exponent << 23u);
}

// x / s before the e4m3 rounding. With UE8M0 s = 2^e (2^-22 <= s <= 2^120), so x * 2^-e from the
// bits is the exact quotient on any GPU, and the codes match the reference bit for bit; otherwise
// WGSL's division (2.5 ulp: a code may move one step next to a tie).
fn scaled(v: f32, s: f32) -> f32 {
  if (UE8M0) {
    return v * bitcast<f32>((254u - (bitcast<u32>(s) >> 23u)) << 23u);
  }
  return v / s;
}


@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid; // m * groups + g
  if (group >= params.M * params.groups) {
    return;
  }
  let begin = group * GROUP; // = m * K + g * 128
  var amax = 0.0;
  for (var j = 0u; j < GROUP; j++) {
    amax = max(amax, abs(x[begin + j]));
  }
  var s = div_448(max(amax, bitcast<f32>(AMAX_FLOOR)));
  if (UE8M0) {
    s = round_up_pow2(s);
  }
#if output == dequantized
  for (var j = 0u; j < GROUP; j++) {
    x[begin + j] = e4m3_to_f32(f32_to_e4m3(scaled(x[begin + j], s))) * s;
  }
#elif output == dequantized_copy
  for (var j = 0u; j < GROUP; j++) {
    rounded[begin + j] = e4m3_to_f32(f32_to_e4m3(scaled(x[begin + j], s))) * s;
  }
#else
  scales[group] = s;
  for (var j = 0u; j < GROUP; j += 4u) {
    let q = vec4<u32>(
      f32_to_e4m3(scaled(x[begin + j], s)),
      f32_to_e4m3(scaled(x[begin + j + 1u], s)),
      f32_to_e4m3(scaled(x[begin + j + 2u], s)),
      f32_to_e4m3(scaled(x[begin + j + 3u], s)),
    );
    codes[(begin + j) / 4u] = q.x | (q.y << 8u) | (q.z << 16u) | (q.w << 24u);
  }
#endif
}
