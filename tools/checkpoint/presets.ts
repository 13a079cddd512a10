// config.json contents (Hugging Face keys) for generated test checkpoints, and the released
// 671B and Moonlight configs for arithmetic checks (never generated whole: 685B and 16B parameters).
// TINY and ODD fit in memory (generateCheckpoint); `moonlight` and `v3-dims` have the real
// models' dimensions with fewer layers and are written tensor by tensor (stream.ts).

type RawConfig = Record<string, unknown>;

/** Keys every DeepSeek-V3 config.json carries with the released values, whatever the sizes. */
const RELEASED_CONVENTIONS: RawConfig = {
  architectures: ['DeepseekV3ForCausalLM'],
  model_type: 'deepseek_v3',
  attention_bias: false,
  attention_dropout: 0.0,
  aux_loss_alpha: 0.001,
  bos_token_id: 0,
  eos_token_id: 1,
  ep_size: 1,
  hidden_act: 'silu',
  initializer_range: 0.02,
  moe_layer_freq: 1,
  norm_topk_prob: true,
  pretraining_tp: 1,
  quantization_config: { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] },
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  routed_scaling_factor: 2.5,
  scoring_func: 'sigmoid',
  seq_aux: true,
  tie_word_embeddings: false,
  topk_method: 'noaux_tc',
  torch_dtype: 'bfloat16',
  transformers_version: '4.33.1',
  use_cache: true,
};

/** The shape of fixtures/dsv3-tiny-official: 4 layers (2 dense), 12 experts top-6 in 4 groups top-3, MTP. */
export const TINY: RawConfig = {
  ...RELEASED_CONVENTIONS,
  vocab_size: 320,
  hidden_size: 128,
  intermediate_size: 384,
  moe_intermediate_size: 128,
  num_hidden_layers: 4,
  first_k_dense_replace: 2,
  num_attention_heads: 8,
  num_key_value_heads: 8,
  q_lora_rank: 128,
  kv_lora_rank: 256,
  qk_nope_head_dim: 32,
  qk_rope_head_dim: 32,
  v_head_dim: 48,
  n_routed_experts: 12,
  n_shared_experts: 2,
  num_experts_per_tok: 6,
  n_group: 4,
  topk_group: 3,
  num_nextn_predict_layers: 1,
  max_position_embeddings: 512,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 8, mscale: 1.0, mscale_all_dim: 1.0, original_max_position_embeddings: 64, type: 'yarn' },
};

/**
 * Sizes that are not multiples of 128 anywhere, so every FP8 weight has partial edge blocks, and
 * no query compression (a plain q_proj). 3 layers (1 dense), 6 experts top-3 in 3 groups top-2.
 */
export const ODD: RawConfig = {
  ...RELEASED_CONVENTIONS,
  vocab_size: 301,
  hidden_size: 200,
  intermediate_size: 300,
  moe_intermediate_size: 136,
  num_hidden_layers: 3,
  first_k_dense_replace: 1,
  num_attention_heads: 3,
  num_key_value_heads: 3,
  q_lora_rank: null,
  kv_lora_rank: 72,
  qk_nope_head_dim: 24,
  qk_rope_head_dim: 16,
  v_head_dim: 40,
  n_routed_experts: 6,
  n_shared_experts: 1,
  num_experts_per_tok: 3,
  n_group: 3,
  topk_group: 2,
  num_nextn_predict_layers: 1,
  max_position_embeddings: 256,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 4, mscale: 1.0, mscale_all_dim: 1.0, original_max_position_embeddings: 32, type: 'yarn' },
};


/** The released DeepSeek-V3 (671B) config.json (src/model/MATH.md section 1; auto_map left out). */
export const DEEPSEEK_V3_671B: RawConfig = {
  ...RELEASED_CONVENTIONS,
  vocab_size: 129280,
  hidden_size: 7168,
  intermediate_size: 18432,
  moe_intermediate_size: 2048,
  num_hidden_layers: 61,
  first_k_dense_replace: 3,
  num_attention_heads: 128,
  num_key_value_heads: 128,
  q_lora_rank: 1536,
  kv_lora_rank: 512,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  n_routed_experts: 256,
  n_shared_experts: 1,
  num_experts_per_tok: 8,
  n_group: 8,
  topk_group: 4,
  num_nextn_predict_layers: 1,
  max_position_embeddings: 163840,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 1.0, mscale_all_dim: 1.0, original_max_position_embeddings: 4096, type: 'yarn' },
};

/**
 * Moonshot's Moonlight-16B-A3B (DeepseekV3ForCausalLM, BF16, no quantization_config), as its
 * config.json has it (auto_map left out): 27 layers (1 dense), 64 experts top-6 in one group,
 * 2 shared, no query compression, no rope_scaling, no MTP. Values from the -Instruct release's
 * config.json (revision 4e735b07a89f73647dfab71ab91b840f362ede5b, as quoted by a public parser
 * test), matching Megatron's and miles' Moonlight configs (11264, 1408, 2.446, 1e-5, 50000, 8192).
 */
export const MOONLIGHT_16B_A3B: RawConfig = {
  architectures: ['DeepseekV3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  aux_loss_alpha: 0.001,
  bos_token_id: 163584,
  eos_token_id: 163586,
  ep_size: 1,
  first_k_dense_replace: 1,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 11264,
  kv_lora_rank: 512,
  max_position_embeddings: 8192,
  model_type: 'deepseek_v3',
  moe_intermediate_size: 1408,
  moe_layer_freq: 1,
  n_group: 1,
  n_routed_experts: 64,
  n_shared_experts: 2,
  norm_topk_prob: true,
  num_attention_heads: 16,
  num_experts_per_tok: 6,
  num_hidden_layers: 27,
  num_key_value_heads: 16,
  num_nextn_predict_layers: 0,
  pretraining_tp: 1,
  q_lora_rank: null,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  rms_norm_eps: 1e-5,
  rope_theta: 50000.0,
  routed_scaling_factor: 2.446,
  scoring_func: 'sigmoid',
  seq_aux: true,
  tie_word_embeddings: false,
  topk_group: 1,
  topk_method: 'noaux_tc',
  torch_dtype: 'bfloat16',
  transformers_version: '4.46.3',
  use_cache: true,
  v_head_dim: 128,
  vocab_size: 163840,
};

/** Moonlight's dimensions with 3 layers (1 dense + 2 MoE): about 1.9B parameters, 3.6 GiB of BF16. */
export const MOONLIGHT: RawConfig = { ...MOONLIGHT_16B_A3B, num_hidden_layers: 3 };

/**
 * DeepSeek-V3's dimensions, FP8 as released, with 2 layers (1 dense + 1 MoE) and the MTP layer:
 * 16 routed experts in V3's 8 groups of which 4 are kept, top-8 as in V3, so a token's routed
 * and shared work per MoE layer is V3's. 3.4B parameters plus 2.9B in the MTP layer, 9.4 GiB:
 * the embedding, the head and their MTP copies are 1.7 GiB each (BF16 [129280, 7168]), over a
 * 1 GiB storage binding (SwiftShader's): the loader splits them by vocabulary rows.
 */
export const V3_DIMS: RawConfig = { ...DEEPSEEK_V3_671B, num_hidden_layers: 2, first_k_dense_replace: 1, n_routed_experts: 16 };

/**
 * DeepSeek-V2-Lite(-Chat)'s config.json (DeepseekV2ForCausalLM): 15.7B parameters, 2.4B active;
 * MLA with q_proj (no q_lora) and kv_lora 512, 64 routed experts top-6 by a softmax router
 * (topk_method greedy, no bias, weights not renormalised), 2 shared, YaRN factor 40 with mscale
 * 0.707, a 102400-token vocabulary, BF16.
 */
export const DEEPSEEK_V2_LITE: RawConfig = {
  architectures: ['DeepseekV2ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  aux_loss_alpha: 0.001,
  bos_token_id: 100000,
  eos_token_id: 100001,
  first_k_dense_replace: 1,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 10944,
  kv_lora_rank: 512,
  max_position_embeddings: 163840,
  model_type: 'deepseek_v2',
  moe_intermediate_size: 1408,
  moe_layer_freq: 1,
  n_group: 1,
  n_routed_experts: 64,
  n_shared_experts: 2,
  norm_topk_prob: false,
  num_attention_heads: 16,
  num_experts_per_tok: 6,
  num_hidden_layers: 27,
  num_key_value_heads: 16,
  pretraining_tp: 1,
  q_lora_rank: null,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  rms_norm_eps: 1e-6,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 0.707, mscale_all_dim: 0.707, original_max_position_embeddings: 4096, type: 'yarn' },
  rope_theta: 10000,
  routed_scaling_factor: 1.0,
  scoring_func: 'softmax',
  seq_aux: true,
  tie_word_embeddings: false,
  topk_group: 1,
  topk_method: 'greedy',
  torch_dtype: 'bfloat16',
  transformers_version: '4.39.3',
  use_cache: true,
  v_head_dim: 128,
  vocab_size: 102400,
};

/** DeepSeek-V2-Lite's dimensions with 3 layers (1 dense + 2 MoE): about 1.6B parameters, 3.1 GiB of BF16. */
export const V2_LITE: RawConfig = { ...DEEPSEEK_V2_LITE, num_hidden_layers: 3 };

export const PRESETS: Readonly<Record<string, RawConfig>> = { tiny: TINY, odd: ODD, moonlight: MOONLIGHT, 'v3-dims': V3_DIMS, 'v2-lite': V2_LITE };

/** Presets too large for generateCheckpoint's in-memory limit: written by stream.ts only. */
export const REAL_SIZE_PRESETS: readonly string[] = ['moonlight', 'v3-dims', 'v2-lite'];
