import { officialFixture } from './testing/fixtures.ts';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isMoeLayer, parseConfig } from './config.ts';
import { MAX_COUNT, MAX_EXPERT_LAYERS, REAL_RANGE } from './config_limits.ts';
import { ConfigError, UnsupportedConfigError } from './errors.ts';
import { DEEPSEEK_V2_LITE, DEEPSEEK_V3_671B, MOONLIGHT_16B_A3B, PRESETS, TINY } from '../tools/checkpoint/presets.ts';

const FIXTURE = officialFixture();
const fixtureText = readFileSync(`${FIXTURE}/config.json`, 'utf8');
const fixtureJson = (): Record<string, unknown> => JSON.parse(fixtureText);


/** The fixture config with some keys changed (undefined deletes a key). */
function variant(changes: Record<string, unknown>, base: Record<string, unknown> = fixtureJson()): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined) delete out[key];
    else out[key] = value;
  }
  return out;
}

function errorOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error');
}

describe('parseConfig', () => {
  it('parses the fixture config and derives its values', () => {
    const reference = JSON.parse(readFileSync(`${FIXTURE}/reference.json`, 'utf8'));
    const c = parseConfig(fixtureText);
    expect(c.hidden_size).toBe(128);
    expect(c.q_lora_rank).toBe(128);
    expect(c.qk_head_dim).toBe(64);
    expect(c.latent_cache_dim).toBe(256 + 32);
    expect(c.experts_per_group).toBe(3);
    expect(c.mtp_layer_index).toBe(4);
    expect(c.eos_token_ids).toEqual([1]);
    expect(c.rope_scaling).toEqual({
      type: 'yarn',
      factor: 8,
      original_max_position_embeddings: 64,
      beta_fast: 32,
      beta_slow: 1,
      mscale: 1,
      mscale_all_dim: 1,
    });
    expect(c.softmax_scale).toBe(reference.derived.softmax_scale);
    expect(c.softmax_scale).toBe(0.18239113494857567);
    expect([0, 1, 2, 3, 4].map((L) => isMoeLayer(c, L))).toEqual([false, false, true, true, true]);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.rope_scaling)).toBe(true);
    expect(Object.isFrozen(c.quantization_config)).toBe(true);
    // Plain data: survives structured cloning (postMessage to the worker).
    expect(structuredClone(c)).toEqual(c);
  });

  it('parses the released 671B config', () => {
    const c = parseConfig(DEEPSEEK_V3_671B);
    expect(c.yarn_mscale).toBeCloseTo(1 + 0.1 * Math.log(40), 15);
    expect(c.softmax_scale).toBeCloseTo(0.135234, 6);
    expect(c.latent_cache_dim).toBe(576);
    expect(c.qk_head_dim).toBe(192);
    expect(c.experts_per_group).toBe(32);
    expect(c.mtp_layer_index).toBe(61);
    expect(isMoeLayer(c, 2)).toBe(false);
    expect(isMoeLayer(c, 3)).toBe(true);
    expect(c.quantization_config?.scale_fmt).toBeNull();
  });

  it('reads a release without quantization_config (BF16 Linears) as unquantised', () => {
    const raw: Record<string, unknown> = { ...fixtureJson() };
    delete raw.quantization_config;
    expect(parseConfig(raw).quantization_config).toBeNull();
    expect(parseConfig({ ...raw, quantization_config: null }).quantization_config).toBeNull();
  });

  it('reads DeepSeek-V2 configs: softmax routing, greedy or group_limited_greedy, its defaults', () => {
    const v2 = { ...fixtureJson(), model_type: 'deepseek_v2', architectures: ['DeepseekV2ForCausalLM'] } as Record<string, unknown>;
    for (const key of ['scoring_func', 'topk_method', 'norm_topk_prob', 'routed_scaling_factor', 'quantization_config']) delete v2[key];
    const c = parseConfig(v2);
    expect([c.scoring_func, c.topk_method, c.norm_topk_prob, c.routed_scaling_factor, c.quantization_config]).toEqual(['softmax', 'greedy', false, 1, null]);
    expect(parseConfig({ ...v2, topk_method: 'gready' }).topk_method).toBe('greedy'); // the original V2 spelling
    expect(parseConfig({ ...v2, topk_method: 'group_limited_greedy', n_group: 4, topk_group: 2 }).topk_method).toBe('group_limited_greedy');
    expect(() => parseConfig({ ...v2, topk_method: 'noaux_tc' })).toThrow(UnsupportedConfigError);
    expect(() => parseConfig({ ...v2, scoring_func: 'sigmoid' })).toThrow(UnsupportedConfigError);
    expect(() => parseConfig({ ...v2, norm_topk_prob: 'yes' })).toThrow(ConfigError);
  });

  it('reads the tiny generator preset as the fixture config', () => {
    expect(parseConfig(TINY)).toEqual(parseConfig(fixtureText));
  });

  it('fills Hugging Face defaults for absent keys', () => {
    const c = parseConfig(
      variant({
        moe_layer_freq: undefined,
        rope_theta: undefined,
        rms_norm_eps: undefined,
        norm_topk_prob: undefined,
        scoring_func: undefined,
        topk_method: undefined,
        hidden_act: undefined,
        tie_word_embeddings: undefined,
        num_key_value_heads: undefined,
        num_nextn_predict_layers: undefined,
        routed_scaling_factor: undefined,
        bos_token_id: undefined,
        eos_token_id: undefined,
      }),
    );
    expect(c.moe_layer_freq).toBe(1);
    expect(c.rope_theta).toBe(10000);
    expect(c.rms_norm_eps).toBe(1e-6);
    expect(c.norm_topk_prob).toBe(true);
    expect(c.scoring_func).toBe('sigmoid');
    expect(c.topk_method).toBe('noaux_tc');
    expect(c.num_key_value_heads).toBe(8);
    expect(c.num_nextn_predict_layers).toBe(0);
    expect(c.mtp_layer_index).toBeNull();
    expect(c.routed_scaling_factor).toBe(2.5);
    expect(c.bos_token_id).toBe(0);
    expect(c.eos_token_id).toBe(1);
  });

  it('reads q_lora_rank 0 or null as a plain q_proj', () => {
    expect(parseConfig(variant({ q_lora_rank: null })).q_lora_rank).toBeNull();
    expect(parseConfig(variant({ q_lora_rank: 0 })).q_lora_rank).toBeNull();
  });

  it('has no YaRN factor without rope_scaling or without mscale_all_dim', () => {
    const plain = parseConfig(variant({ rope_scaling: null }));
    expect(plain.rope_scaling).toBeNull();
    expect(plain.softmax_scale).toBe(0.125);
    const raw = fixtureJson();
    const scaling = { ...(raw.rope_scaling as object), mscale_all_dim: undefined };
    expect(parseConfig(variant({ rope_scaling: JSON.parse(JSON.stringify(scaling)) })).softmax_scale).toBe(0.125);
    // factor <= 1 is no extension (yarn_get_mscale returns 1).
    expect(parseConfig(variant({ rope_scaling: { ...(raw.rope_scaling as object), factor: 1 } })).softmax_scale).toBe(0.125);
  });

  it('reads transformers-5 style rope_parameters', () => {
    const raw = fixtureJson();
    const { type: _type, ...rest } = raw.rope_scaling as Record<string, unknown>;
    const c = parseConfig(variant({ rope_scaling: undefined, rope_theta: undefined, rope_parameters: { ...rest, rope_type: 'yarn', rope_theta: 50000 } }));
    expect(c.rope_theta).toBe(50000);
    expect(c.softmax_scale).toBe(0.18239113494857567);
    expect(parseConfig(variant({ rope_scaling: undefined, rope_parameters: { rope_type: 'default', rope_theta: 10000 } })).rope_scaling).toBeNull();
  });

  it('accepts eos lists and the V3.1 ue8m0 scale format', () => {
    const c = parseConfig(
      variant({
        eos_token_id: [1, 7],
        quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128], scale_fmt: 'ue8m0' },
      }),
    );
    expect(c.eos_token_ids).toEqual([1, 7]);
    expect(c.quantization_config?.scale_fmt).toBe('ue8m0');
  });

  it('rejects text that is not JSON or not an object', () => {
    expect(errorOf(() => parseConfig('{"hidden_size": 12', 'my/config.json'))).toBeInstanceOf(ConfigError);
    expect(String(errorOf(() => parseConfig('{"hidden_size": 12', 'my/config.json')))).toContain('my/config.json');
    expect(errorOf(() => parseConfig('[1, 2]'))).toBeInstanceOf(ConfigError);
    expect(errorOf(() => parseConfig(null))).toBeInstanceOf(ConfigError);
  });

  it.each([
    ['hidden_size', { hidden_size: undefined }],
    ['hidden_size', { hidden_size: '128' }],
    ['quantization_config', { quantization_config: 'fp8' }],
    ['num_hidden_layers', { num_hidden_layers: 0 }],
    ['kv_lora_rank', { kv_lora_rank: 1.5 }],
    ['q_lora_rank', { q_lora_rank: undefined }],
    ['q_lora_rank', { q_lora_rank: -1 }],
    ['vocab_size', { vocab_size: undefined }],
    ['rms_norm_eps', { rms_norm_eps: 0 }],
    ['eos_token_id', { eos_token_id: [] }],
    ['architectures', { architectures: 'DeepseekV3ForCausalLM' }],
    ['first_k_dense_replace', { first_k_dense_replace: 5 }],
    ['rope_scaling', { rope_scaling: 'yarn' }],
    ['rope_scaling.factor', { rope_scaling: { type: 'yarn', original_max_position_embeddings: 64 } }],
    ['rope_scaling.original_max_position_embeddings', { rope_scaling: { type: 'yarn', factor: 8 } }],
    ['quantization_config.weight_block_size', { quantization_config: { quant_method: 'fp8', fmt: 'e4m3' } }],
    ['quantization_config.quant_method', { quantization_config: { weight_block_size: [128, 128] } }],
    ['norm_topk_prob', { norm_topk_prob: 'yes' }],
  ])('names the bad key %s (ConfigError)', (key, changes) => {
    const err = errorOf(() => parseConfig(variant(changes)));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe(key);
    expect((err as Error).message).toContain(key);
    expect((err as Error).message).toContain('config.json');
  });

  it.each([
    ['scoring_func', { scoring_func: 'softmax' }],
    ['topk_method', { topk_method: 'greedy' }],
    ['norm_topk_prob', { norm_topk_prob: false }],
    ['hidden_act', { hidden_act: 'gelu' }],
    ['tie_word_embeddings', { tie_word_embeddings: true }],
    ['num_key_value_heads', { num_key_value_heads: 1 }],
    ['n_group', { n_group: 5 }],
    ['n_group', { n_group: 12, topk_group: 6 }],
    ['topk_group', { topk_group: 5 }],
    ['num_experts_per_tok', { num_experts_per_tok: 10 }],
    ['qk_rope_head_dim', { qk_rope_head_dim: 31 }],
    ['num_nextn_predict_layers', { num_nextn_predict_layers: 2 }],
    ['rope_scaling.type', { rope_scaling: { type: 'linear', factor: 2 } }],
    ['model_type', { model_type: 'llama', architectures: ['LlamaForCausalLM'] }],
    ['quantization_config.quant_method', { quantization_config: { quant_method: 'gptq', weight_block_size: [128, 128] } }],
    ['quantization_config.fmt', { quantization_config: { quant_method: 'fp8', fmt: 'e5m2', weight_block_size: [128, 128] } }],
    ['quantization_config.weight_block_size', { quantization_config: { quant_method: 'fp8', weight_block_size: [64, 64] } }],
    ['quantization_config.activation_scheme', { quantization_config: { quant_method: 'fp8', activation_scheme: 'static', weight_block_size: [128, 128] } }],
    ['quantization_config.scale_fmt', { quantization_config: { quant_method: 'fp8', weight_block_size: [128, 128], scale_fmt: 'e8m0x' } }],
  ])('refuses what the engine cannot run: %s (UnsupportedConfigError)', (key, changes) => {
    const err = errorOf(() => parseConfig(variant(changes)));
    expect(err).toBeInstanceOf(UnsupportedConfigError);
    expect((err as UnsupportedConfigError).key).toBe(key);
    expect((err as Error).message).toContain(key);
  });
});

describe('parseConfig bounds (a config is untrusted input)', () => {
  /** Where each bounded key lives: top level, or inside rope_scaling. */
  const YARN_KEYS = new Set(['factor', 'beta_fast', 'beta_slow', 'mscale', 'mscale_all_dim', 'original_max_position_embeddings']);
  const withValue = (key: string, value: unknown) => {
    const raw = fixtureJson();
    return YARN_KEYS.has(key) ? variant({ rope_scaling: { ...(raw.rope_scaling as object), [key]: value } }, raw) : variant({ [key]: value }, raw);
  };
  const keyPath = (key: string) => (YARN_KEYS.has(key) ? `rope_scaling.${key}` : key);

  it('accepts every released config and every generator preset', () => {
    for (const preset of Object.values(PRESETS)) expect(() => parseConfig(preset)).not.toThrow();
    for (const released of [DEEPSEEK_V3_671B, MOONLIGHT_16B_A3B, DEEPSEEK_V2_LITE]) expect(() => parseConfig(released)).not.toThrow();
    // Kimi K2: V3's architecture with 384 experts in one group, 64 heads, a 163840-token vocabulary.
    const k2 = parseConfig({ ...DEEPSEEK_V3_671B, n_routed_experts: 384, n_group: 1, topk_group: 1, num_attention_heads: 64, num_key_value_heads: 64, vocab_size: 163840, bos_token_id: 163584, eos_token_id: 163585, rope_theta: 50000, routed_scaling_factor: 2.827, rope_scaling: { ...(DEEPSEEK_V3_671B.rope_scaling as object), factor: 32 } });
    expect(k2.n_routed_experts).toBe(384);
  });

  it.each(Object.entries(MAX_COUNT))('refuses %s over its limit %d, naming the key and the bound', (key, max) => {
    const err = errorOf(() => parseConfig(withValue(key, max + 1)));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe(keyPath(key));
    expect((err as Error).message).toContain(`${keyPath(key)} is ${max + 1}, over the limit of ${max}`);
  });

  it('refuses the review\'s 1.5 KB configs asking for 1e8 layers or 4e8 experts at once', () => {
    for (const [key, value] of [['num_hidden_layers', 1e8], ['n_routed_experts', 4e8], ['vocab_size', 2 ** 40]] as const) {
      const start = performance.now();
      const err = errorOf(() => parseConfig(variant({ [key]: value })));
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe(key);
      expect(performance.now() - start).toBeLessThan(1000); // the bug was a 45 s hang
    }
  });

  it('bounds the routed experts of all layers together', () => {
    // Each factor is within its own limit; the product is not.
    const err = errorOf(() => parseConfig(variant({ num_hidden_layers: 1024, n_routed_experts: 4092, n_group: 4, topk_group: 3, first_k_dense_replace: 1 })));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('n_routed_experts');
    expect((err as Error).message).toContain(`over the limit of ${MAX_EXPERT_LAYERS}`);
    expect(() => parseConfig(variant({ num_hidden_layers: 32, n_routed_experts: 4095, n_group: 5, topk_group: 3 }))).not.toThrow();
  });

  const absurd = [Number.NaN, Infinity, -Infinity, -1, 0, 1e-300, 1e300];
  it.each(Object.entries(REAL_RANGE))('refuses %s outside [%s] and non-finite', (key, [min, max]) => {
    expect(() => parseConfig(withValue(key, min))).not.toThrow();
    expect(() => parseConfig(withValue(key, max))).not.toThrow();
    for (const value of absurd.filter((v) => !(v >= min && v <= max))) {
      const err = errorOf(() => parseConfig(withValue(key, value)));
      expect(err, `${key} = ${value}`).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe(keyPath(key));
      if (Number.isFinite(value)) expect((err as Error).message).toContain(`a number from ${min} to ${max}`);
    }
  });

  it('refuses the review\'s silent-wrong-output floats', () => {
    for (const changes of [{ rope_theta: 1e-300 }, { rms_norm_eps: 1e300 }, { rms_norm_eps: Number.NaN }, { routed_scaling_factor: 1e300 }]) {
      expect(() => parseConfig(variant(changes))).toThrow(ConfigError);
    }
    const yarn = fixtureJson().rope_scaling as object;
    expect(() => parseConfig(variant({ rope_scaling: { ...yarn, factor: 1e-300 } }))).toThrow(ConfigError);
    expect(() => parseConfig(variant({ rope_scaling: { ...yarn, mscale_all_dim: -1e300 } }))).toThrow(ConfigError);
    expect(() => parseConfig(variant({ rope_scaling: undefined, rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 1e-300 } }))).toThrow(/rope_parameters\.rope_theta/);
  });

  it('refuses token ids that are not in the vocabulary', () => {
    for (const [key, value] of [['bos_token_id', 320], ['eos_token_id', 320], ['eos_token_id', [1, 2 ** 40]]] as const) {
      const err = errorOf(() => parseConfig(variant({ [key]: value })));
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe(key);
      expect((err as Error).message).toContain('below vocab_size 320');
    }
    expect(parseConfig(variant({ bos_token_id: null })).bos_token_id).toBeNull();
    expect(parseConfig(variant({ eos_token_id: 319 })).eos_token_ids).toEqual([319]);
  });
});
