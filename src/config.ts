// config.json -> one frozen, validated DeepseekV3Config. Nothing else in the engine reads raw JSON.
//
// Keys keep their Hugging Face names. Defaults are those of DeepSeek's own remote-code
// `configuration_deepseek.py` (shipped with the V3 checkpoint), which agrees with transformers'
// `DeepseekV3Config` wherever both have the key; sizes have no default: a config without them is
// not a DeepSeek-V3 config. Derived values (below the HF keys) are computed here once.
// The object is plain data (no functions), so it crosses postMessage to the worker unchanged.
// The file is untrusted: every size and real number is bounded (config_limits.ts says why).

import { MAX_COUNT, MAX_EXPERT_LAYERS, REAL_RANGE, type CountKey, type RealKey } from './config_limits.ts';
import { ConfigError, UnsupportedConfigError } from './errors.ts';

/** YaRN context extension (src/model/MATH.md 4.3). */
export interface YarnRopeScaling {
  readonly type: 'yarn';
  readonly factor: number;
  readonly original_max_position_embeddings: number;
  readonly beta_fast: number;
  readonly beta_slow: number;
  readonly mscale: number;
  /** 0 when absent: then, as in HF, the softmax scale gets no YaRN factor. */
  readonly mscale_all_dim: number;
}

/** Block-scaled FP8 weights (src/model/MATH.md 3). */
export interface Fp8QuantizationConfig {
  readonly quant_method: 'fp8';
  readonly fmt: 'e4m3';
  readonly activation_scheme: 'dynamic';
  readonly weight_block_size: readonly [128, 128];
  /**
   * 'ue8m0' (V3.1): on the W8A8 path act_quant rounds each activation scale up to a power of two
   * (2^ceil(log2(amax / 448)), exactly) for the inputs of the official plain Linear modules
   * (q_a_proj, kv_a_proj_with_mqa, routed experts), as the official code does; the parallel ones keep
   * amax / 448 (src/model/MATH.md 5). Weight-only numerics are unaffected.
   */
  readonly scale_fmt: 'ue8m0' | null;
}

export interface DeepseekV3Config {
  readonly model_type: string;
  readonly architectures: readonly string[];
  readonly vocab_size: number;
  readonly hidden_size: number;
  /** Width of the dense MLP of layers < first_k_dense_replace. */
  readonly intermediate_size: number;
  /** Width of each routed expert; the shared MLP is n_shared_experts times this. */
  readonly moe_intermediate_size: number;
  /** Main decoder layers; the MTP layer (if any) comes after them. */
  readonly num_hidden_layers: number;
  readonly first_k_dense_replace: number;
  readonly moe_layer_freq: number;
  readonly num_attention_heads: number;
  readonly num_key_value_heads: number;
  /** null: no query compression, a plain `q_proj` (a 0 in config.json is read as null). */
  readonly q_lora_rank: number | null;
  readonly kv_lora_rank: number;
  readonly qk_nope_head_dim: number;
  readonly qk_rope_head_dim: number;
  readonly v_head_dim: number;
  readonly n_routed_experts: number;
  readonly n_shared_experts: number;
  readonly num_experts_per_tok: number;
  readonly n_group: number;
  readonly topk_group: number;
  readonly routed_scaling_factor: number;
  /** V3 (noaux_tc): always true. V2: normalise the top-k weights (when top_k > 1) instead of scaling them. */
  readonly norm_topk_prob: boolean;
  /** 'sigmoid' with 'noaux_tc' (DeepSeek-V3); 'softmax' with 'greedy' or 'group_limited_greedy' (DeepSeek-V2). */
  readonly scoring_func: 'sigmoid' | 'softmax';
  readonly topk_method: 'noaux_tc' | 'greedy' | 'group_limited_greedy';
  readonly hidden_act: 'silu';
  readonly rms_norm_eps: number;
  readonly rope_theta: number;
  /** null: plain RoPE, no context extension. */
  readonly rope_scaling: YarnRopeScaling | null;
  readonly max_position_embeddings: number;
  /** 0 or 1 (the released depth). */
  readonly num_nextn_predict_layers: number;
  /**
   * null: the release stores its Linears unquantised (BF16, F16 or F32: Moonlight, fine-tunes, the
   * test repos); the loader quantises them to block-scaled FP8 or keeps them (`weights` option).
   */
  readonly quantization_config: Fp8QuantizationConfig | null;
  readonly tie_word_embeddings: false;
  readonly bos_token_id: number | null;
  readonly eos_token_id: number | readonly number[];

  // Derived.
  /** qk_nope_head_dim + qk_rope_head_dim: the per-head query/key width `dq`. */
  readonly qk_head_dim: number;
  /** Latent cache values per token per layer: kv_lora_rank + qk_rope_head_dim (576 for V3). */
  readonly latent_cache_dim: number;
  /** n_routed_experts / n_group. */
  readonly experts_per_group: number;
  /** YaRN attention factor m = 0.1 * mscale_all_dim * ln(factor) + 1, or 1 without YaRN. */
  readonly yarn_mscale: number;
  /** dq^-0.5 * m^2 (src/model/MATH.md 4.4). */
  readonly softmax_scale: number;
  /** Index of the MTP decoder layer (= num_hidden_layers), or null without one. */
  readonly mtp_layer_index: number | null;
  /** eos_token_id as a list. */
  readonly eos_token_ids: readonly number[];
}

/**
 * Whether decoder layer `layer` (MTP layer included) has a MoE FFN rather than a dense MLP.
 * DeepSeek's remote code `modeling_deepseek.py` (and vLLM `deepseek_v2.py`):
 * `n_routed_experts is not None and layer_idx >= first_k_dense_replace and layer_idx % moe_layer_freq == 0`.
 * transformers' `DeepseekV3DecoderLayer` and the official model.py drop the `moe_layer_freq` term;
 * all agree for the released moe_layer_freq = 1.
 */
export function isMoeLayer(config: DeepseekV3Config, layer: number): boolean {
  return layer >= config.first_k_dense_replace && layer % config.moe_layer_freq === 0;
}

/** Parse and validate config.json (text or parsed JSON). */
export function parseConfig(json: unknown, source = 'config.json'): DeepseekV3Config {
  let raw = json;
  if (typeof raw === 'string') {
    try {
      raw = JSON.parse(raw);
    } catch (cause) {
      throw new ConfigError(`${source} is not valid JSON: ${(cause as Error).message}`);
    }
  }
  if (!isObject(raw)) throw new ConfigError(`${source} must hold a JSON object, found ${describe(raw)}`);
  const r = new Reader(raw, source);

  const model_type = r.optionalString('model_type', 'deepseek_v3');
  const architectures = r.stringList('architectures', []);
  const v2 = model_type === 'deepseek_v2' || architectures.includes('DeepseekV2ForCausalLM');
  if (!v2 && model_type !== 'deepseek_v3' && !architectures.includes('DeepseekV3ForCausalLM')) {
    throw new UnsupportedConfigError(
      'model_type',
      `"${model_type}" is not a DeepSeek-V2/V3 architecture (expected model_type "deepseek_v3" or "deepseek_v2", or architectures ["DeepseekV3ForCausalLM"] / ["DeepseekV2ForCausalLM"])`,
    );
  }
  const routing = parseRouting(r, v2);

  const vocab_size = r.int('vocab_size', 1);
  const hidden_size = r.int('hidden_size', 1);
  const num_hidden_layers = r.int('num_hidden_layers', 1);
  const num_attention_heads = r.int('num_attention_heads', 1);
  const qk_nope_head_dim = r.int('qk_nope_head_dim', 1);
  const qk_rope_head_dim = r.int('qk_rope_head_dim', 1);
  const v_head_dim = r.int('v_head_dim', 1);
  const kv_lora_rank = r.int('kv_lora_rank', 1);
  const q_lora_rank = r.nullableInt('q_lora_rank', MAX_COUNT.q_lora_rank);
  const n_routed_experts = r.int('n_routed_experts', 1);
  const n_group = r.int('n_group', 1);
  const topk_group = r.int('topk_group', 1);
  const num_experts_per_tok = r.int('num_experts_per_tok', 1);
  const first_k_dense_replace = r.int('first_k_dense_replace', 0);
  const num_key_value_heads = r.int('num_key_value_heads', 1, num_attention_heads);
  const num_nextn_predict_layers = r.int('num_nextn_predict_layers', 0, 0);
  // transformers >= 5 saves rope_theta inside rope_parameters.
  const ropeParameters = isObject(raw.rope_parameters) ? raw.rope_parameters : {};
  const rope_theta = 'rope_theta' in raw || !('rope_theta' in ropeParameters)
    ? r.real('rope_theta', 10000)
    : r.child(ropeParameters, 'rope_parameters').real('rope_theta');
  const max_position_embeddings = r.int('max_position_embeddings', 1, 4096);

  const config = {
    model_type,
    architectures: Object.freeze(architectures),
    vocab_size,
    hidden_size,
    intermediate_size: r.int('intermediate_size', 1),
    moe_intermediate_size: r.int('moe_intermediate_size', 1),
    num_hidden_layers,
    first_k_dense_replace,
    moe_layer_freq: r.int('moe_layer_freq', 1, 1),
    num_attention_heads,
    num_key_value_heads,
    q_lora_rank: q_lora_rank === 0 ? null : q_lora_rank,
    kv_lora_rank,
    qk_nope_head_dim,
    qk_rope_head_dim,
    v_head_dim,
    n_routed_experts,
    n_shared_experts: r.int('n_shared_experts', 0, 1),
    num_experts_per_tok,
    n_group,
    topk_group,
    ...routing,
    hidden_act: r.only('hidden_act', 'string', 'silu', 'silu', 'the engine implements SiLU-gated MLPs only'),
    rms_norm_eps: r.real('rms_norm_eps', 1e-6),
    rope_theta,
    rope_scaling: parseRopeScaling(r),
    max_position_embeddings,
    num_nextn_predict_layers,
    quantization_config: parseQuantization(r),
    tie_word_embeddings: r.only('tie_word_embeddings', 'boolean', false, false, 'DeepSeek-V3 checkpoints have a separate lm_head.weight; tied embeddings are not supported'),
    bos_token_id: r.tokenId('bos_token_id', vocab_size, 0),
    eos_token_id: r.tokenIds('eos_token_id', vocab_size, 1),
  };

  // Values the engine cannot run, each named by its key.
  if (num_key_value_heads !== num_attention_heads) {
    throw new UnsupportedConfigError('num_key_value_heads', `${num_key_value_heads} differs from num_attention_heads ${num_attention_heads}; MLA has one latent shared by all heads`);
  }
  if (qk_rope_head_dim % 2 !== 0) {
    throw new UnsupportedConfigError('qk_rope_head_dim', `${qk_rope_head_dim} is odd; RoPE rotates pairs of dimensions`);
  }
  if (n_routed_experts % n_group !== 0) {
    throw new UnsupportedConfigError('n_group', `n_routed_experts ${n_routed_experts} is not divisible by n_group ${n_group}`);
  }
  const experts_per_group = n_routed_experts / n_group;
  if (routing.topk_method === 'noaux_tc' && experts_per_group < 2) {
    throw new UnsupportedConfigError('n_group', `${n_group} groups of ${experts_per_group} expert; a group's score is the sum of its 2 best experts, so groups need at least 2`);
  }
  if (topk_group > n_group) {
    throw new UnsupportedConfigError('topk_group', `${topk_group} is more than n_group ${n_group}`);
  }
  if (num_experts_per_tok > topk_group * experts_per_group) {
    throw new UnsupportedConfigError('num_experts_per_tok', `${num_experts_per_tok} is more than the ${topk_group * experts_per_group} experts in the topk_group ${topk_group} kept groups of ${experts_per_group}`);
  }
  if (first_k_dense_replace > num_hidden_layers) {
    throw new ConfigError(`${source}: first_k_dense_replace ${first_k_dense_replace} is more than num_hidden_layers ${num_hidden_layers}`, 'first_k_dense_replace');
  }
  if (num_hidden_layers * n_routed_experts > MAX_EXPERT_LAYERS) {
    throw new ConfigError(
      `${source}: num_hidden_layers ${num_hidden_layers} x n_routed_experts ${n_routed_experts} is over the limit of ${MAX_EXPERT_LAYERS} routed experts in all (DeepSeek-V3 has 61 x 256): the config is corrupt`,
      'n_routed_experts',
    );
  }
  if (num_nextn_predict_layers > 1) {
    throw new UnsupportedConfigError('num_nextn_predict_layers', `${num_nextn_predict_layers} MTP modules; only depth 1 (the released one) is built`);
  }

  const qk_head_dim = qk_nope_head_dim + qk_rope_head_dim;
  const yarn_mscale = yarnMscale(config.rope_scaling);
  const eos = config.eos_token_id;
  return Object.freeze({
    ...config,
    qk_head_dim,
    latent_cache_dim: kv_lora_rank + qk_rope_head_dim,
    experts_per_group,
    yarn_mscale,
    // Same operation order as model.py: (dq^-0.5 * m) * m.
    softmax_scale: qk_head_dim ** -0.5 * yarn_mscale * yarn_mscale,
    mtp_layer_index: num_nextn_predict_layers > 0 ? num_hidden_layers : null,
    eos_token_ids: Object.freeze(typeof eos === 'number' ? [eos] : [...eos]),
  });
}

/**
 * The router's keys. DeepSeek-V3: sigmoid scores, bias-corrected group-limited top-k (noaux_tc),
 * weights always renormalised, then scaled. DeepSeek-V2 (HF modeling_deepseek.py of V2): softmax
 * scores, top-k over all experts (greedy) or within the best groups by their best expert
 * (group_limited_greedy), no bias; weights renormalised when norm_topk_prob (and top_k > 1), else
 * scaled. Defaults as each architecture's transformers config has them.
 */
function parseRouting(r: Reader, v2: boolean): Pick<DeepseekV3Config, 'routed_scaling_factor' | 'norm_topk_prob' | 'scoring_func' | 'topk_method'> {
  if (!v2) {
    return {
      routed_scaling_factor: r.real('routed_scaling_factor', 2.5),
      norm_topk_prob: r.only('norm_topk_prob', 'boolean', true, true, 'the official code always renormalises sigmoid routing weights'),
      scoring_func: r.only('scoring_func', 'string', 'sigmoid', 'sigmoid', 'DeepSeek-V3 routes with sigmoid scores (softmax is DeepSeek-V2\'s, model_type "deepseek_v2")'),
      topk_method: r.only('topk_method', 'string', 'noaux_tc', 'noaux_tc', 'DeepSeek-V3 routes with bias-corrected group-limited top-k (noaux_tc)'),
    };
  }
  const scoring_func = r.only('scoring_func', 'string', 'softmax', 'softmax', 'DeepSeek-V2 routes with softmax scores');
  // The original V2 code and config spell greedy "gready".
  let method = r.optionalString('topk_method', 'greedy');
  if (method === 'gready') method = 'greedy';
  if (method !== 'greedy' && method !== 'group_limited_greedy') {
    throw new UnsupportedConfigError('topk_method', `${JSON.stringify(method)}: DeepSeek-V2 routes with "greedy" or "group_limited_greedy"`);
  }
  const norm = r.raw.norm_topk_prob ?? false;
  if (typeof norm !== 'boolean') throw r.typeError('norm_topk_prob', 'a boolean', norm);
  return { routed_scaling_factor: r.real('routed_scaling_factor', 1), norm_topk_prob: norm, scoring_func, topk_method: method };
}

/**
 * HF `yarn_get_mscale(factor, mscale_all_dim)`, applied by `DeepseekV3Attention` only when
 * mscale_all_dim is set and non-zero; 1 for factor <= 1.
 */
function yarnMscale(scaling: YarnRopeScaling | null): number {
  if (!scaling || !scaling.mscale_all_dim || scaling.factor <= 1) return 1;
  return 0.1 * scaling.mscale_all_dim * Math.log(scaling.factor) + 1;
}

// rope_scaling (V3's config.json) or rope_parameters (configs saved by transformers >= 5, which
// also move rope_theta inside). HF switches YaRN on whenever the type is "yarn".
function parseRopeScaling(r: Reader): YarnRopeScaling | null {
  let key = 'rope_scaling';
  let value = r.raw.rope_scaling;
  if (value == null && isObject(r.raw.rope_parameters)) {
    key = 'rope_parameters';
    value = r.raw.rope_parameters;
  }
  if (value == null) return null;
  if (!isObject(value)) throw r.typeError(key, 'an object or null', value);
  const s = r.child(value, key);
  const type = s.raw.type ?? s.raw.rope_type;
  if (key === 'rope_parameters' && (type === 'default' || type == null)) return null;
  if (type !== 'yarn') {
    throw new UnsupportedConfigError(`${key}.type`, `${JSON.stringify(type ?? null)}: only "yarn" scaling (or none) is supported`);
  }
  return Object.freeze({
    type: 'yarn' as const,
    factor: s.real('factor'),
    original_max_position_embeddings: s.int('original_max_position_embeddings', 1),
    beta_fast: s.real('beta_fast', 32),
    beta_slow: s.real('beta_slow', 1),
    mscale: s.real('mscale', 1),
    mscale_all_dim: s.real('mscale_all_dim', 0),
  });
}

function parseQuantization(r: Reader): Fp8QuantizationConfig | null {
  const value = r.raw.quantization_config;
  if (value == null) return null;
  if (!isObject(value)) throw r.typeError('quantization_config', 'an object', value);
  const q = r.child(value, 'quantization_config');
  const quant_method = q.only('quant_method', 'string', undefined, 'fp8', 'the engine runs block-scaled FP8 weights only');
  const fmt = q.only('fmt', 'string', 'e4m3', 'e4m3', 'FP8 weights must be e4m3 (float8_e4m3fn)');
  const activation_scheme = q.only('activation_scheme', 'string', 'dynamic', 'dynamic', 'activation scales are computed per token (dynamic)');
  const block = q.raw.weight_block_size;
  if (block === undefined) throw q.missing('weight_block_size');
  if (!Array.isArray(block) || block.length !== 2 || !block.every((b) => Number.isInteger(b))) {
    throw q.typeError('weight_block_size', 'a list of two integers', block);
  }
  if (block[0] !== 128 || block[1] !== 128) {
    throw new UnsupportedConfigError('quantization_config.weight_block_size', `[${block.join(', ')}]: only [128, 128] blocks are supported`);
  }
  const scaleFmt = q.raw.scale_fmt ?? null;
  if (scaleFmt !== null && scaleFmt !== 'ue8m0') {
    throw new UnsupportedConfigError('quantization_config.scale_fmt', `${JSON.stringify(scaleFmt)}: only absent/null or "ue8m0" is supported`);
  }
  return Object.freeze({ quant_method, fmt, activation_scheme, weight_block_size: Object.freeze([128, 128] as const), scale_fmt: scaleFmt });
}

/** Typed reads of one JSON object; every error names the full dotted key. */
class Reader {
  constructor(
    readonly raw: Record<string, unknown>,
    readonly source: string,
    readonly prefix = '',
  ) {}

  child(raw: Record<string, unknown>, key: string): Reader {
    return new Reader(raw, this.source, this.path(key) + '.');
  }

  path(key: string): string {
    return this.prefix + key;
  }

  missing(key: string): ConfigError {
    return new ConfigError(`${this.source}: required key ${this.path(key)} is missing`, this.path(key));
  }

  typeError(key: string, expected: string, value: unknown): ConfigError {
    return new ConfigError(`${this.source}: ${this.path(key)} must be ${expected}, found ${describe(value)}`, this.path(key));
  }

  private get(key: string, fallback: unknown): unknown {
    const value = this.raw[key];
    if (value !== undefined) return value;
    if (fallback === undefined) throw this.missing(key);
    return fallback;
  }

  /** An integer from `min` to MAX_COUNT[key]; `fallback` when absent (required if no fallback). */
  int(key: CountKey, min: number, fallback?: number): number {
    const value = this.get(key, fallback);
    if (typeof value !== 'number' || !Number.isInteger(value)) throw this.typeError(key, 'an integer', value);
    if (value < min) throw this.typeError(key, `an integer >= ${min}`, value);
    if (value > MAX_COUNT[key]) throw this.overLimit(key, value, MAX_COUNT[key]);
    return value;
  }

  /** An integer from 0 to `max`, or null; required unless a fallback is given. */
  nullableInt(key: string, max: number, fallback?: number | null): number | null {
    if (!(key in this.raw) && fallback !== undefined) return fallback;
    const value = this.raw[key];
    if (value === null) return null;
    if (value === undefined) throw this.missing(key);
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw this.typeError(key, 'a non-negative integer or null', value);
    if (value > max) throw this.overLimit(key, value, max);
    return value;
  }

  /** A finite number within REAL_RANGE[key]. */
  real(key: RealKey, fallback?: number): number {
    const value = this.get(key, fallback);
    const [min, max] = REAL_RANGE[key];
    if (typeof value !== 'number' || !Number.isFinite(value)) throw this.typeError(key, 'a number', value);
    if (value < min || value > max) throw this.typeError(key, `a number from ${min} to ${max}`, value);
    return value;
  }

  overLimit(key: string, value: number, max: number): ConfigError {
    return new ConfigError(
      `${this.source}: ${this.path(key)} is ${value}, over the limit of ${max} (far above any released DeepSeek-V2/V3-family model): the config is corrupt`,
      this.path(key),
    );
  }

  optionalString(key: string, fallback: string): string {
    const value = this.get(key, fallback);
    if (typeof value !== 'string') throw this.typeError(key, 'a string', value);
    return value;
  }

  stringList(key: string, fallback: string[]): string[] {
    const value = this.get(key, fallback);
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw this.typeError(key, 'a list of strings', value);
    return [...value];
  }

  /** A token id below `vocabSize`, or null. */
  tokenId(key: string, vocabSize: number, fallback: number): number | null {
    const value = this.get(key, fallback);
    if (value === null) return null;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= vocabSize) {
      throw this.typeError(key, `a token id below vocab_size ${vocabSize}, or null`, value);
    }
    return value;
  }

  /** A token id below `vocabSize`, or a non-empty list of them. */
  tokenIds(key: string, vocabSize: number, fallback: number): number | readonly number[] {
    const value = this.get(key, fallback);
    const isId = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < vocabSize;
    if (isId(value)) return value as number;
    if (Array.isArray(value) && value.length > 0 && value.every(isId)) return Object.freeze([...(value as number[])]);
    throw this.typeError(key, `a token id or a list of token ids below vocab_size ${vocabSize}`, value);
  }

  /** A key of the given JSON type whose only runnable value is `supported`. */
  only<T extends string | boolean>(key: string, type: 'string' | 'boolean', fallback: T | undefined, supported: T, why: string): T {
    const value = this.get(key, fallback);
    if (typeof value !== type) throw this.typeError(key, `a ${type}`, value);
    if (value !== supported) throw new UnsupportedConfigError(this.path(key), `${JSON.stringify(value)}: ${why}`);
    return value as T;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
