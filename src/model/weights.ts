// The tensors a DeepSeek-V3 checkpoint holds, by their Hugging Face names (src/model/MATH.md 2.1),
// derived from the config alone; the check of a checkpoint's tensors against them; parameter and
// KV-cache arithmetic for `inspect`.

import { BLOCK } from '../gpu/kernel.ts';
import { isMoeLayer, type DeepseekV3Config } from '../config.ts';
import { CheckpointError } from '../errors.ts';

/**
 * Storage class of a tensor. 'fp8': F8_E4M3 codes with an F32 `<name>_scale_inv` of
 * [ceil(out/128), ceil(in/128)] block scales. 'bf16': a BF16 tensor in the release; F16 and F32
 * are accepted in its place. 'f32': exactly F32 (block scales, the router's correction bias).
 */
export type WeightClass = 'fp8' | 'bf16' | 'f32';

/** What a tensor is, for initialisers, loaders and reports. */
export type TensorKind = 'embedding' | 'norm' | 'linear' | 'scale_inv' | 'router' | 'router_bias' | 'head';

export interface ExpectedTensor {
  readonly shape: readonly number[];
  readonly dtype: WeightClass;
  readonly kind: TensorKind;
  /**
   * A Linear the FP8 release stores as e4m3 with 128x128 block scales (attention projections,
   * dense MLP, shared and routed experts). In a release without quantization_config it is BF16,
   * and the loader quantises it the same way unless asked to keep it (load_weights.ts).
   */
  readonly blockScaled: boolean;
}

/** A tensor as a safetensors header describes it (dtype as written there: "BF16", "F8_E4M3", ...). */
export interface ActualTensor {
  readonly dtype: string;
  readonly shape: readonly number[];
}

/** safetensors dtypes accepted for each class. FP8 weights must come quantised, with their scales. */
export const ACCEPTED_DTYPES: Readonly<Record<WeightClass, readonly string[]>> = {
  fp8: ['F8_E4M3'],
  bf16: ['BF16', 'F16', 'F32'],
  f32: ['F32'],
};

export function scaleInvName(weightName: string): string {
  return `${weightName}_scale_inv`;
}

/** Shape of the block scales of an FP8 weight [out, in]; edge blocks are partial. */
export function scaleInvShape(out: number, inDim: number): [number, number] {
  return [Math.ceil(out / BLOCK), Math.ceil(inDim / BLOCK)];
}

/**
 * Every tensor of the checkpoint, in module order: embedding, layers 0..L-1, final norm, lm_head,
 * then the MTP layer (index num_hidden_layers). Each FP8 weight is followed by its `_scale_inv`;
 * a release without quantization_config has the same names, BF16, and no scales.
 */
export function expectedTensors(config: DeepseekV3Config): ReadonlyMap<string, ExpectedTensor> {
  const t = new TensorTable(config.quantization_config !== null);
  const d = config.hidden_size;
  t.add('model.embed_tokens.weight', [config.vocab_size, d], 'bf16', 'embedding');
  for (let L = 0; L < config.num_hidden_layers; L++) addDecoderLayer(t, config, L);
  t.add('model.norm.weight', [d], 'bf16', 'norm');
  t.add('lm_head.weight', [config.vocab_size, d], 'bf16', 'head');

  if (config.mtp_layer_index !== null) {
    // The MTP module: its own copies of the embedding and head (equal to the main ones in the
    // release), two input norms, the [emb ; h] -> d projection (BF16, not FP8), then a full decoder layer.
    const L = config.mtp_layer_index;
    const p = `model.layers.${L}.`;
    t.add(`${p}embed_tokens.weight`, [config.vocab_size, d], 'bf16', 'embedding');
    t.add(`${p}enorm.weight`, [d], 'bf16', 'norm');
    t.add(`${p}hnorm.weight`, [d], 'bf16', 'norm');
    t.add(`${p}eh_proj.weight`, [d, 2 * d], 'bf16', 'linear');
    addDecoderLayer(t, config, L);
    t.add(`${p}shared_head.norm.weight`, [d], 'bf16', 'norm');
    t.add(`${p}shared_head.head.weight`, [config.vocab_size, d], 'bf16', 'head');
  }
  return t.map;
}

function addDecoderLayer(t: TensorTable, c: DeepseekV3Config, L: number): void {
  const p = `model.layers.${L}.`;
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  t.add(`${p}input_layernorm.weight`, [d], 'bf16', 'norm');
  if (c.q_lora_rank === null) {
    t.fp8(`${p}self_attn.q_proj.weight`, H * c.qk_head_dim, d);
  } else {
    t.fp8(`${p}self_attn.q_a_proj.weight`, c.q_lora_rank, d);
    t.add(`${p}self_attn.q_a_layernorm.weight`, [c.q_lora_rank], 'bf16', 'norm');
    t.fp8(`${p}self_attn.q_b_proj.weight`, H * c.qk_head_dim, c.q_lora_rank);
  }
  t.fp8(`${p}self_attn.kv_a_proj_with_mqa.weight`, c.kv_lora_rank + c.qk_rope_head_dim, d);
  t.add(`${p}self_attn.kv_a_layernorm.weight`, [c.kv_lora_rank], 'bf16', 'norm');
  t.fp8(`${p}self_attn.kv_b_proj.weight`, H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
  t.fp8(`${p}self_attn.o_proj.weight`, d, H * c.v_head_dim);
  t.add(`${p}post_attention_layernorm.weight`, [d], 'bf16', 'norm');

  if (!isMoeLayer(c, L)) {
    addMlp(t, `${p}mlp.`, d, c.intermediate_size);
    return;
  }
  t.add(`${p}mlp.gate.weight`, [c.n_routed_experts, d], 'bf16', 'router');
  // DeepSeek-V3's bias-corrected routing (noaux_tc) only; DeepSeek-V2's router has no bias.
  if (c.topk_method === 'noaux_tc') t.add(`${p}mlp.gate.e_score_correction_bias`, [c.n_routed_experts], 'f32', 'router_bias');
  for (let e = 0; e < c.n_routed_experts; e++) addMlp(t, `${p}mlp.experts.${e}.`, d, c.moe_intermediate_size);
  if (c.n_shared_experts > 0) addMlp(t, `${p}mlp.shared_experts.`, d, c.n_shared_experts * c.moe_intermediate_size);
}

function addMlp(t: TensorTable, p: string, d: number, inter: number): void {
  t.fp8(`${p}gate_proj.weight`, inter, d);
  t.fp8(`${p}up_proj.weight`, inter, d);
  t.fp8(`${p}down_proj.weight`, d, inter);
}

class TensorTable {
  readonly map = new Map<string, ExpectedTensor>();

  constructor(private readonly quantised: boolean) {}

  add(name: string, shape: number[], dtype: WeightClass, kind: TensorKind, blockScaled = false): void {
    this.map.set(name, Object.freeze({ shape: Object.freeze(shape), dtype, kind, blockScaled }));
  }

  /** A block-scaled Linear [out, in]: FP8 with its scales in a quantised release, else BF16 alone. */
  fp8(name: string, out: number, inDim: number): void {
    if (!this.quantised) return this.add(name, [out, inDim], 'bf16', 'linear', true);
    this.add(name, [out, inDim], 'fp8', 'linear', true);
    this.add(scaleInvName(name), scaleInvShape(out, inDim), 'f32', 'scale_inv');
  }
}

export interface TensorMismatch {
  readonly name: string;
  readonly expected: { readonly dtype: WeightClass; readonly shape: readonly number[] };
  readonly actual: ActualTensor;
}

export interface TensorCheck {
  /** Expected tensors the checkpoint lacks, in module order. */
  readonly missing: string[];
  /** Checkpoint tensors the config does not explain, sorted. */
  readonly unexpected: string[];
  /** Tensors present under the right name with a wrong shape or a dtype not accepted for their class. */
  readonly mismatched: TensorMismatch[];
}

/** Compare a checkpoint's tensors (from the safetensors headers) with the expected table. */
export function checkTensors(
  expected: ReadonlyMap<string, ExpectedTensor>,
  actual: ReadonlyMap<string, ActualTensor>,
): TensorCheck {
  const missing: string[] = [];
  const mismatched: TensorMismatch[] = [];
  for (const [name, want] of expected) {
    const got = actual.get(name);
    if (!got) {
      missing.push(name);
      continue;
    }
    const shapeOk = got.shape.length === want.shape.length && got.shape.every((n, i) => n === want.shape[i]);
    if (!shapeOk || !ACCEPTED_DTYPES[want.dtype].includes(got.dtype)) {
      mismatched.push({ name, expected: { dtype: want.dtype, shape: want.shape }, actual: { dtype: got.dtype, shape: got.shape } });
    }
  }
  const unexpected = [...actual.keys()].filter((name) => !expected.has(name)).sort();
  return { missing, unexpected, mismatched };
}

/** checkTensors, throwing one CheckpointError that lists the first problems of each sort. */
export function assertTensors(
  expected: ReadonlyMap<string, ExpectedTensor>,
  actual: ReadonlyMap<string, ActualTensor>,
  where: string,
): void {
  const { missing, unexpected, mismatched } = checkTensors(expected, actual);
  if (missing.length + unexpected.length + mismatched.length === 0) return;
  const show = (names: string[]) => names.slice(0, 5).join(', ') + (names.length > 5 ? `, ... (${names.length} in all)` : '');
  const lines: string[] = [];
  if (missing.length) lines.push(`missing ${missing.length} tensor(s): ${show(missing)}`);
  if (unexpected.length) lines.push(`${unexpected.length} tensor(s) the config does not explain: ${show(unexpected)}`);
  for (const m of mismatched.slice(0, 5)) {
    const accepted = ACCEPTED_DTYPES[m.expected.dtype].join('|');
    lines.push(`${m.name}: expected ${accepted} [${m.expected.shape.join(', ')}], found ${m.actual.dtype} [${m.actual.shape.join(', ')}]`);
  }
  if (mismatched.length > 5) lines.push(`... ${mismatched.length} mismatched tensors in all`);
  throw new CheckpointError(`the tensors do not match config.json:\n  ${lines.join('\n  ')}`, where);
}

export interface ParameterCount {
  /** Main model weights (embedding, layers, norm, lm_head), without the MTP module: the paper's 671B. */
  readonly total: number;
  /**
   * Weights used for one token by the main model: everything but the routed experts not chosen
   * and the embedding table (a token reads one row of it); lm_head counts. 37B in the paper.
   */
  readonly activePerToken: number;
  /** The MTP module, its embedding and head copies included (671B + 14B = HF's 685B). */
  readonly mtp: number;
}

/** Parameter counts in weight elements; block scales are not parameters. */
export function countParameters(config: DeepseekV3Config): ParameterCount {
  const mtpPrefix = config.mtp_layer_index === null ? null : `model.layers.${config.mtp_layer_index}.`;
  const expertWeights = 3 * config.hidden_size * config.moe_intermediate_size;
  let total = 0;
  let mtp = 0;
  let moeLayers = 0;
  for (const [name, t] of expectedTensors(config)) {
    if (t.kind === 'scale_inv') continue;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (mtpPrefix !== null && name.startsWith(mtpPrefix)) mtp += n;
    else total += n;
  }
  for (let L = 0; L < config.num_hidden_layers; L++) if (isMoeLayer(config, L)) moeLayers++;
  const unchosen = moeLayers * (config.n_routed_experts - config.num_experts_per_tok) * expertWeights;
  const embedding = config.vocab_size * config.hidden_size;
  return { total, activePerToken: total - unchosen - embedding, mtp };
}

/** MLA latent cache per token, all main layers: (kv_lora_rank + qk_rope_head_dim) values per layer. */
export function latentCacheBytesPerToken(config: DeepseekV3Config, bytesPerValue: number): number {
  return config.num_hidden_layers * config.latent_cache_dim * bytesPerValue;
}

/** What per-head caching would take, all main layers: keys H*(dn+dr) plus values H*dv per layer. */
export function mhaCacheBytesPerToken(config: DeepseekV3Config, bytesPerValue: number): number {
  const perLayer = config.num_attention_heads * (config.qk_head_dim + config.v_head_dim);
  return config.num_hidden_layers * perLayer * bytesPerValue;
}
