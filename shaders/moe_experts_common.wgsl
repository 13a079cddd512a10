// Shared by moe_experts_gate_up.wgsl and moe_experts_down.wgsl (prepended after fp8_e4m3.wgsl by
// src/kernels/shader_compose.ts): the params of one expert linear y = x W_e^T and the readers of
// the stacked expert weights (src/model/placement.ts):
//   weight            expert e's W [n, k] e4m3 bytes, row-major, rows not padded, starting at
//                     word e * slot_words (byte e * align4(n * k)); 4 codes per u32
//   weight_scale_inv  expert e's S [ceil(n/128), ceil(k/128)] f32, starting at e * slot_scales
// W[i, j] = e4m3(Q[i, j]) * S[i / 128, j / 128] (src/model/MATH.md 3).

struct ExpertParams {
  tokens: u32,      // T
  topk: u32,        // num_experts_per_tok (1 for a dense MLP or the shared experts)
  experts: u32,     // E, experts in the stacked buffers
  n: u32,           // output width of the linear: moe_inter_dim (gate/up) or hidden_size (down)
  k: u32,           // input width: hidden_size (gate/up) or moe_inter_dim (down)
  k_blocks: u32,    // ceil(k / 128): row stride of weight_scale_inv
  slot_words: u32,  // u32 words from one expert's weight to the next: align4(n * k) / 4
  slot_scales: u32, // f32 from one expert's weight_scale_inv to the next: ceil(n / 128) * k_blocks
}

const BLOCK = 128u; // the 128 x 128 scale blocks of the checkpoint

// k % 4 == 0 (every real checkpoint): each row starts on a word and no quad runs past k, so the
// readers skip the splicing and masking (a pipeline constant: the other path folds away; on CPU
// adapters those selects and the second load cost more than the rest of the read).
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

// The word index of W_e[row, j] and the four codes W_e[row, j .. j+3] spliced from the words
// `first` (holding that byte) and `second` (the next): a row starts inside a word when k % 4 != 0.
// (Shifts and masks, not / and %: SwiftShader divides in every lane, see matmul_operands.wgsl.)
fn expert_word(e: u32, row: u32, j: u32) -> u32 {
  return e * params.slot_words + ((row * params.k + j) >> 2u);
}

fn splice_codes(first: u32, second: u32, row: u32, j: u32) -> vec4<f32> {
  let shift = ((row * params.k + j) & 3u) * 8u;
  let codes = select((first >> shift) | (second << (32u - shift)), first, shift == 0u);
  return mask_past_k(e4m3x4_to_f32(codes), j);
}

// Index of S_e[row / 128, kb] in the stacked weight_scale_inv.
fn expert_scale_index(e: u32, row: u32, kb: u32) -> u32 {
  return e * params.slot_scales + (row >> 7u) * params.k_blocks + kb; // row / BLOCK
}
