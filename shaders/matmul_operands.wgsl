// The operands of the matrix kernels gemv_fp8.wgsl and gemm_fp8.wgsl, y[m, n] = sum_k x[m, k] * W[n, k]:
// bindings and loaders for each named variant. A shared snippet, prepended (after fp8_e4m3.wgsl)
// by src/kernels/shader_compose.ts; the TS side of these bindings is src/kernels/matmul_operands.ts.
//
// Variant axes:
//   weights   fp8   W = e4m3(Q) * S: Q [N, K] e4m3fn bytes, row-major, rows not padded (byte n*K + k),
//                   4 per u32; S = weight_scale_inv [ceil(N/128), ceil(K/128)] f32 (src/model/MATH.md 3)
//             bf16  W [N, K] bf16 (the top half of an f32), 2 per u32, element n*K + k
//             f32   W [N, K] f32 (kept as u32 bits)
//   numerics  weight_only  x [M, K] f32
//             w8a8         x [M, K] e4m3 codes from act_quant.wgsl, 4 per u32 (K % 128 == 0),
//                          x_scale [M, K/128] f32; y adds (block dot * x_scale) * S per 128-wide
//                          K block, as the official fp8_gemm does (src/model/MATH.md 5)
//   linears   one  one W and its y
//             two  (gemv_fp8 only) two Linears of the same format reading the same x, W [N, K]
//                  into y and W_b [n_b, K] into y_b (q_a_proj and kv_a_proj_with_mqa): one dispatch,
//                  the units from params.first_unit_b on computing the second; every access
//                  to W, S, N and y goes through the accessors below, which pick the workgroup's one
//
// Bindings:
//   0 params           uniform MatmulParams
//   1 x                [M, K] f32, or [M, K/4] u32 (w8a8)
//   2 weight           u32 words holding W as above
//   3 y                f32, written: y[m, n] at m * y_stride + y_col + n (y_stride = N, y_col = 0
//                      for a whole Linear; a row band of a split W writes its columns of the
//                      full y, src/model/linear.ts)
//   4 weight_scale_inv [ceil(N/128), ceil(K/128)] f32   (fp8 only)
//   5 x_scale          [M, K/128] f32                   (w8a8 only)
//   6 weight_b         u32 words holding W_b            (linears == two)
//   7 y_b              f32, written: y_b[m, n] at m * y_stride_b + y_col_b + n   (linears == two)
//   8 weight_scale_inv_b  [ceil(n_b/128), ceil(K/128)] f32   (linears == two, fp8)

struct MatmulParams {
  M: u32,
  N: u32,
  K: u32,
  k_blocks: u32, // ceil(K / 128): row stride of weight_scale_inv and x_scale
  y_stride: u32, // elements between rows of y (>= y_col + N)
  y_col: u32, // the column of y that output n = 0 goes to
#if linears == two
  n_b: u32, // the second Linear's N, y_stride and y_col
  y_stride_b: u32,
  y_col_b: u32,
  first_unit_b: u32, // the first unit (invocation or workgroup, gemv_fp8.wgsl) of the second Linear
#endif
}

const BLOCK = 128u; // the 128 x 128 scale blocks of the checkpoint, 1 x 128 groups of act_quant

// Word indices in the loaders are taken with shifts and masks, never / and %: SwiftShader runs a
// u32 division (even by a constant 4) as a division in every lane, and weight[element / 4u] made
// the FP8 GEMM about 5% slower than weight[element >> 2u] (measured, BENCHMARKS.md). Left shifts of the bf16
// halves are multiplications, which it also runs faster than shifts.

// K % 4 == 0 (every real checkpoint): each row starts on a word and no quad runs past K, so the
// loaders below skip the splicing and masking (a pipeline constant: the other path folds away;
// on CPU adapters those selects cost more than the loads).
override K_ALIGNED: bool = false;

// Add into y instead of storing (store_y); set by gemv_fp8 only (the GEMM stores its tiles itself).
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(2) var<storage, read> weight: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if weights == fp8
@group(0) @binding(4) var<storage, read> weight_scale_inv: array<f32>;
#endif
#if numerics == w8a8
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(5) var<storage, read> x_scale: array<f32>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif

// ---- the Linear this workgroup computes: W's words, S, N and y ----
#if linears == two
@group(0) @binding(6) var<storage, read> weight_b: array<u32>;
@group(0) @binding(7) var<storage, read_write> y_b: array<f32>;
#if weights == fp8
@group(0) @binding(8) var<storage, read> weight_scale_inv_b: array<f32>;
#endif

// Set by the kernel's main before any access: the same for every invocation of a workgroup, so
// the branches below never diverge within one.
var<private> second: bool = false;

// W_b[n, k .. k+3] without its block scale, and S_b[n / 128, kb]: weight_quad_aligned and
// weight_block_scale for the second Linear. A copy rather than a choice inside the loaders (WGSL
// functions cannot take a storage buffer): on SwiftShader, which runs both sides of a branch, a
// choice at every load made the pair 2x slower than two calls at K=2048 (a select: 1.45x), so
// thread_per_4_rows chooses once per K block (1.3-1.5x there; at the shipped model's K=256 the pair
// costs what two calls do; 20 calls a pass, interleaved). Two-Linears calls take K % 4 == 0 only
// (every checkpoint), so the splicing loaders have no copy.
fn weight_b_quad(n: u32, k: u32) -> vec4<f32> {
  let element = n * params.K + k;
#if weights == fp8
  return e4m3x4_to_f32(weight_b[element >> 2u]);
#elif weights == bf16
  let low = weight_b[element >> 1u];
  let high = weight_b[(element >> 1u) + 1u];
  return bitcast<vec4<f32>>(vec4<u32>(low * 0x10000u, low & 0xFFFF0000u, high * 0x10000u, high & 0xFFFF0000u));
#else
  return bitcast<vec4<f32>>(vec4<u32>(weight_b[element], weight_b[element + 1u], weight_b[element + 2u], weight_b[element + 3u]));
#endif
}

fn weight_b_block_scale(n: u32, kb: u32) -> f32 {
#if weights == fp8
  return weight_scale_inv_b[(n >> 7u) * params.k_blocks + kb];
#else
  return 1.0;
#endif
}
#endif

// Rows of W (columns of y) of the Linear.
fn out_n() -> u32 {
#if linears == two
  if (second) {
    return params.n_b;
  }
#endif
  return params.N;
}

// Where y[m, n] is stored.
fn y_index(m: u32, n: u32) -> u32 {
#if linears == two
  if (second) {
    return m * params.y_stride_b + params.y_col_b + n;
  }
#endif
  return m * params.y_stride + params.y_col + n;
}

// y[i] = v (i from y_index); ACCUMULATE: y[i] = y[i] + v, one addition (the GEMV's residual
// epilogue: o_proj adding into the residual stream h, each element read and written by the one
// invocation that computes it).
fn store_y(i: u32, v: f32) {
#if linears == two
  if (second) {
    if (ACCUMULATE) {
      y_b[i] = y_b[i] + v;
    } else {
      y_b[i] = v;
    }
    return;
  }
#endif
  if (ACCUMULATE) {
    y[i] = y[i] + v;
  } else {
    y[i] = v;
  }
}

// Zero the lanes of a quad that lie past the end of a row (k .. k+3 with k + 3 >= K), so the
// next row's values never enter the sum. Branch-free, as the word splices below: on CPU
// adapters a branch costs more than the arithmetic it skips.
fn mask_past_k(v: vec4<f32>, k: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), v, vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.K));
}

// W[n, k .. k+3] without the block scale (k % 4 == 0); zero past K.
fn weight_quad(n: u32, k: u32) -> vec4<f32> {
  if (K_ALIGNED) {
    return weight_quad_aligned(n, k);
  }
#if weights == fp8
  // When K % 4 != 0 a row starts inside a word: splice the quad from two words.
  let byte = n * params.K + k;
  let shift = (byte & 3u) * 8u;
  let lo = weight[byte >> 2u];
  let hi = weight[(byte >> 2u) + 1u];
  let codes = select((lo >> shift) | (hi << (32u - shift)), lo, shift == 0u);
  return mask_past_k(e4m3x4_to_f32(codes), k);
#elif weights == bf16
  // When K is odd, odd rows start in the upper half of a word: splice the quad from three words.
  let element = n * params.K + k;
  let word = element >> 1u;
  var low = weight[word];
  var high = weight[word + 1u];
  let next = weight[word + 2u];
  let odd = (element & 1u) != 0u;
  low = select(low, (low >> 16u) | (high * 0x10000u), odd);
  high = select(high, (high >> 16u) | (next * 0x10000u), odd);
  let bits = vec4<u32>(low * 0x10000u, low & 0xFFFF0000u, high * 0x10000u, high & 0xFFFF0000u);
  return mask_past_k(bitcast<vec4<f32>>(bits), k);
#else
  let element = n * params.K + k;
  let bits = vec4<u32>(weight[element], weight[element + 1u], weight[element + 2u], weight[element + 3u]);
  return mask_past_k(bitcast<vec4<f32>>(bits), k);
#endif
}

// weight_quad when K % 4 == 0.
fn weight_quad_aligned(n: u32, k: u32) -> vec4<f32> {
  let element = n * params.K + k;
#if weights == fp8
  return e4m3x4_to_f32(weight[element >> 2u]);
#elif weights == bf16
  let low = weight[element >> 1u];
  let high = weight[(element >> 1u) + 1u];
  return bitcast<vec4<f32>>(vec4<u32>(low * 0x10000u, low & 0xFFFF0000u, high * 0x10000u, high & 0xFFFF0000u));
#else
  return bitcast<vec4<f32>>(vec4<u32>(weight[element], weight[element + 1u], weight[element + 2u], weight[element + 3u]));
#endif
}

// S[n / 128, kb]; 1 for bf16 and f32 weights.
fn weight_block_scale(n: u32, kb: u32) -> f32 {
#if weights == fp8
  return weight_scale_inv[(n >> 7u) * params.k_blocks + kb]; // n / BLOCK
#else
  return 1.0;
#endif
}

// x[m, k .. k+3] (k % 4 == 0); zero past K. w8a8: the e4m3 values of the codes.
fn x_quad(m: u32, k: u32) -> vec4<f32> {
#if numerics == w8a8
  return e4m3x4_to_f32(x[(m * params.K + k) >> 2u]); // K % 128 == 0: rows are word aligned
#else
  let i = m * params.K + k;
  let v = vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
  if (K_ALIGNED) {
    return v;
  }
  return mask_past_k(v, k);
#endif
}

// The act_quant scale of row m in K block kb; 1 for weight_only.
fn x_block_scale(m: u32, kb: u32) -> f32 {
#if numerics == w8a8
  return x_scale[m * params.k_blocks + kb];
#else
  return 1.0;
#endif
}

// (a . w_j) over k .. k+3 for 4 columns j, in the lanes of a vec4.
fn dots(a: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(a, w0), dot(a, w1), dot(a, w2), dot(a, w3));
}

// y[m, n0 .. n0+3] = v, the row and the columns that exist.
fn store_quad(v: vec4<f32>, m: u32, n0: u32) {
  if (m >= params.M) {
    return;
  }
  let at = y_index(m, n0);
  if (n0 + 3u < out_n()) {
    store_y(at, v.x);
    store_y(at + 1u, v.y);
    store_y(at + 2u, v.z);
    store_y(at + 3u, v.w);
  } else {
    for (var j = 0u; n0 + j < out_n(); j++) {
      store_y(at + j, v[j]);
    }
  }
}
