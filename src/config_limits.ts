// The largest value parseConfig accepts for each size in config.json, and the range of each real
// number. A config is untrusted input: without these a 1.5 KB file asking for 10^8 layers makes
// the engine build tables for hours, and a rope_theta of 1e-300 gives NaN logits with no error.
//
// Each bound is well above every released member of the family, so no real checkpoint meets one:
// DeepSeek-V3 671B has 61 layers, 256 routed experts, a 129280-token vocabulary, hidden 7168,
// 128 heads, intermediate 18432, kv_lora_rank 512, q_lora_rank 1536, 163840 positions;
// Kimi K2 has 384 experts and 64 heads, a 163840-token vocabulary; DeepSeek-V2 has 160 experts,
// 2 shared, routed_scaling_factor 16.

/** Largest accepted value of each integer key (the smallest is set where the key is read). */
export const MAX_COUNT = {
  num_hidden_layers: 1024,
  first_k_dense_replace: 1024,
  moe_layer_freq: 1024,
  num_nextn_predict_layers: 1024,
  // 2^24 tokens: 64x the largest vocabularies in use (~256k), and every id exact in float32.
  vocab_size: 2 ** 24,
  hidden_size: 65536,
  intermediate_size: 2 ** 18,
  moe_intermediate_size: 2 ** 18,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  q_lora_rank: 65536,
  kv_lora_rank: 65536,
  qk_nope_head_dim: 4096,
  qk_rope_head_dim: 4096,
  v_head_dim: 4096,
  n_routed_experts: 4096,
  n_shared_experts: 256,
  num_experts_per_tok: 4096,
  n_group: 4096,
  topk_group: 4096,
  // 2^24 positions: 100x V3's 163840, and still exact in float32 (RoPE angles are position * freq).
  max_position_embeddings: 2 ** 24,
  original_max_position_embeddings: 2 ** 24,
} as const;

export type CountKey = keyof typeof MAX_COUNT;

/**
 * Routed experts over all layers (num_hidden_layers x n_routed_experts). The engine lists every
 * expert tensor of every layer before it compares them with the checkpoint's headers, so this
 * product, not each factor alone, sets that table's size. V3 has 61 x 256 = 15616, K2 61 x 384 =
 * 23424; 2^17 = 131072 leaves 5x room and keeps that table under a million names (about 2 s).
 */
export const MAX_EXPERT_LAYERS = 2 ** 17;

/**
 * [min, max] of each real-valued key, inclusive. Outside these the float32 kernels overflow or
 * underflow into Inf / NaN (or all-zero) activations, which sample as token 0 with no error.
 */
export const REAL_RANGE = {
  // Real ones span 1e4 (V3) to 1e7; below 1 the frequencies theta^(-2i/d) grow past float32.
  rope_theta: [1, 1e12],
  // Real ones are 1e-6 or 1e-5; at 1e-300 eps is 0 in float32, at 1e300 it is Inf.
  rms_norm_eps: [1e-12, 1],
  // V3 2.5, K2 2.827, V2 16, V2-Lite 1.
  routed_scaling_factor: [1e-3, 1e3],
  // YaRN (rope_scaling): V3 factor 40, betas 32 and 1, mscale 1 (V2: 0.707). A factor below 1
  // would shrink the context; the mscales are factors of the softmax scale.
  factor: [1, 1e4],
  beta_fast: [1e-3, 1e4],
  beta_slow: [1e-3, 1e4],
  mscale: [0, 100],
  mscale_all_dim: [0, 100],
} as const satisfies Record<string, readonly [number, number]>;

export type RealKey = keyof typeof REAL_RANGE;
