// Shared by moe_experts_gate_up.wgsl and moe_experts_down.wgsl (prepended after fp8_e4m3.wgsl by
// src/gpu/shader_compose.ts): the params of one expert linear y = x W_e^T and the readers of
// the stacked expert weights (src/model/placement.ts), or of one range of them (a stack split over
// several buffers: the slots below are then e - first_expert), or of a row band of one (a dense
// MLP's or the shared experts' projection split by rows: n is the band's rows, its output columns
// land at out_col .. out_col + n - 1 of rows out_stride wide). Variant axis `weights`:
//   fp8   weight            expert e's Q [n, k] e4m3 bytes, row-major, rows not padded, starting at
//                           word e * slot_words (byte e * align4(n * k)); 4 codes per u32
//         weight_scale_inv  expert e's S [ceil(n/128), ceil(k/128)] f32, starting at e * slot_scales
//         W[i, j] = e4m3(Q[i, j]) * S[i / 128, j / 128] (src/model/MATH.md 3)
//   bf16  weight            expert e's W [n, k] bf16 (the top half of an f32), row-major, rows not
//                           padded, starting at word e * slot_words (byte e * align4(2 * n * k));
//                           2 per u32, the low half the even element; no scales
//
// Summation order, both formats: a dot product is summed in 128-wide blocks of j (each block in
// quads j .. j+3, ascending, the 4 lanes by dot()), and the block sums are added in block order,
// each times its scale S for fp8 (the official fp8_gemm order), as they are for bf16, unscaled.
// One loop for both formats: the bf16 sums differ from a single running sum only in rounding.

struct ExpertParams {
  tokens: u32,      // T
  topk: u32,        // num_experts_per_tok (1 for a dense MLP or the shared experts)
  experts: u32,     // experts in the bound stacked buffers: E, or the count of an expert range
  n: u32,           // output width of the linear: moe_inter_dim (gate/up) or hidden_size (down)
  k: u32,           // input width: hidden_size (gate/up) or moe_inter_dim (down)
  k_blocks: u32,    // ceil(k / 128): the blocks of a dot product; row stride of weight_scale_inv
  slot_words: u32,  // u32 words from one expert's weight to the next: align4(n * k * bytes per weight) / 4
  slot_scales: u32, // fp8: f32 from one expert's weight_scale_inv to the next, ceil(n / 128) * k_blocks; bf16: 0
  first_expert: u32, // the bound buffers hold experts first_expert .. first_expert + experts - 1 (slot e - first_expert); 0 unsplit
  out_stride: u32,  // row stride of the written buffer: n, or the full width when the bound weight is a row band
  out_col: u32,     // the column of the written buffer that output column 0 goes to: 0, or the band's first row
}

const BLOCK = 128u; // the 128 x 128 scale blocks of the checkpoint

// k % 4 == 0 (every real checkpoint): each row starts on a word and no quad runs past k, so the
// readers skip the splicing and masking (a pipeline constant: the other path folds away; on CPU
// adapters those selects and the extra load cost more than the rest of the read). The same test
// for both formats: a bf16 row starts on a word whenever k is even, but with k % 4 == 2 its last
// quad still runs past k and needs the mask, so such a k takes the general path (where the bf16
// splice then never shifts); no checkpoint has one, so it gets no pipeline of its own.
override K_ALIGNED: bool = false;

// Each invocation computes 4 consecutive output columns i0 .. i0+3 (i0 % 4 == 0), so every
// activation quad it loads serves 4 weight rows, and the 4 rows share one 128-row scale block.
// Columns past n read the last row (valid memory) and are not stored.
fn columns(i0: u32) -> vec4<u32> {
  return min(vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.n - 1u));
}

// (a . w_c) for the 4 columns c, in the lanes of a vec4.
fn dots(a: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(a, w0), dot(a, w1), dot(a, w2), dot(a, w3));
}

// Zero the lanes of a quad at columns j .. j+3 that lie at or past k (the next row's values, or
// whatever a clamped read returned). Branch-free: on CPU adapters a branch costs more than this.
fn mask_past_k(v: vec4<f32>, j: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), v, vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.k));
}

// The word index of W_e[row, j] (j % 4 == 0) and the quad W_e[row, j .. j+3] from the words that
// hold it: aligned (K_ALIGNED) from 1 word (fp8) or 2 (bf16); spliced, when a row starts inside a
// word, from 2 (fp8) or 3 (bf16) and masked past k. The kernels load the words (one reader per
// weight binding: WGSL passes no storage pointers) and call these.
// (Shifts and masks, not / and %: SwiftShader divides in every lane, see matmul_operands.wgsl.
// The bf16 left shifts are multiplications, which it also runs faster.)
#if weights == fp8
fn expert_word(e: u32, row: u32, j: u32) -> u32 {
  return e * params.slot_words + ((row * params.k + j) >> 2u);
}

// `first` holds byte row * k + j of the slot, `second` is the next word.
fn splice_codes(first: u32, second: u32, row: u32, j: u32) -> vec4<f32> {
  let shift = ((row * params.k + j) & 3u) * 8u;
  let codes = select((first >> shift) | (second << (32u - shift)), first, shift == 0u);
  return mask_past_k(e4m3x4_to_f32(codes), j);
}

// Index of S_e[row / 128, kb] in the stacked weight_scale_inv.
fn expert_scale_index(e: u32, row: u32, kb: u32) -> u32 {
  return e * params.slot_scales + (row >> 7u) * params.k_blocks + kb; // row / BLOCK
}
#elif weights == bf16
fn expert_word(e: u32, row: u32, j: u32) -> u32 {
  return e * params.slot_words + ((row * params.k + j) >> 1u);
}

// Elements 2w, 2w+1 of `low` and 2w+2, 2w+3 of `high` to f32 (bf16 bits are an f32's top half).
fn bf16x4_to_f32(low: u32, high: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(vec4<u32>(low * 0x10000u, low & 0xFFFF0000u, high * 0x10000u, high & 0xFFFF0000u));
}

// `first` holds element row * k + j of the slot, `second` and `third` are the next words. When k
// is odd, odd rows start in the upper half of a word: the quad is shifted down by one half.
fn splice_bf16(first: u32, second: u32, third: u32, row: u32, j: u32) -> vec4<f32> {
  let odd = ((row * params.k + j) & 1u) != 0u;
  let low = select(first, (first >> 16u) | (second * 0x10000u), odd);
  let high = select(second, (second >> 16u) | (third * 0x10000u), odd);
  return mask_past_k(bf16x4_to_f32(low, high), j);
}
#endif
