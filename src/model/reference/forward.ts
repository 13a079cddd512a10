// The DeepSeek-V3 forward pass on the CPU: slow, plain loops, exact (float64 sums, float32 values
// between operations, as the official code run in float32). The executable spec the WebGPU engine
// is tested against, itself tested against DeepSeek's official outputs (dsv3-tiny-official).
//
//   h = embed_tokens[tokens]
//   for each layer L:  h += MLA(RMSNorm(h; input_layernorm))
//                      h += FFN(RMSNorm(h; post_attention_layernorm))     dense MLP or MoE
//   logits = lm_head(RMSNorm(h; model.norm))
//
// src/model/MATH.md 4.1-4.7. Tokens continue a latent cache (prefill, then one token at a time,
// or any number at once), at absolute positions cache.length ...

import type { DeepseekV3Config } from '../../config.ts';
import { ArgumentError } from '../../errors.ts';
import { ropeInvFreq } from '../../kernels/rope_tables.ts';
import { ffn, type RouterChoice } from './ffn.ts';
import { ReferenceLatentCache, mla, type AttentionForm } from './mla.ts';
import { actRounding, addInto, argmax, linear, rmsNorm, splitRows, type ActRounding } from './ops.ts';
import type { ReferenceWeights } from './tensors.ts';
import type { ModelNumerics } from '../model_kernels.ts';

export interface ReferenceOptions {
  /** 'absorbed' (the official default) or 'naive'; equal up to rounding. */
  attention?: AttentionForm;
  /** The cache to continue and append to; a new one when absent. */
  cache?: ReferenceLatentCache;
  /** Keep the residual stream: `embed`, `after_block.<L>`, `final_norm`. */
  intermediates?: boolean;
  /**
   * 'weight_only' (default) or 'w8a8': every FP8 Linear's input rounded by act_quant first, with
   * the config's scale_fmt where the official code passes it on (ops.ts ActRounding; MATH.md 5).
   */
  numerics?: ModelNumerics;
}

export interface ReferenceOutput {
  /** Per token [vocab_size]: row t predicts the token after tokens[t]. */
  logits: Float32Array[];
  /** Per token [hidden_size], after model.norm (the lm_head input; what the MTP module reads). */
  hidden: Float32Array[];
  /** Per MoE layer, per token: the routed experts. */
  router: Map<number, RouterChoice[]>;
  /** Per name, per token [hidden_size]; empty unless options.intermediates. */
  intermediates: Map<string, Float32Array[]>;
  /** The cache, now holding these tokens too. */
  cache: ReferenceLatentCache;
}

/** One decoder layer over h [T, hidden_size], in place; returns the routing of a MoE layer. rounding: W8A8 (null: weight-only). */
export function decoderLayer(
  weights: ReferenceWeights,
  config: DeepseekV3Config,
  layer: number,
  h: Float32Array,
  positions: Uint32Array,
  cache: ReferenceLatentCache,
  form: AttentionForm,
  rounding: ActRounding | null = null,
): RouterChoice[] | null {
  const T = positions.length;
  const d = config.hidden_size;
  const p = `model.layers.${layer}.`;
  const attnIn = rmsNorm(h, T, d, weights.get(`${p}input_layernorm.weight`), config.rms_norm_eps);
  const invFreq = ropeInvFreq(config);
  addInto(h, mla({ weights, config, layer, x: attnIn, positions, cache: cache.layer(layer), invFreq, form, rounding }));
  const ffnIn = rmsNorm(h, T, d, weights.get(`${p}post_attention_layernorm.weight`), config.rms_norm_eps);
  const { y, routing } = ffn(weights, config, layer, ffnIn, T, rounding);
  addInto(h, y);
  return routing;
}

/** Rows of `table` [vocab_size, d] for `tokens`, as [T, d]; ids are checked. */
export function embed(table: Float32Array, config: DeepseekV3Config, tokens: readonly number[]): Float32Array {
  const d = config.hidden_size;
  const h = new Float32Array(tokens.length * d);
  tokens.forEach((id, t) => {
    if (!Number.isInteger(id) || id < 0 || id >= config.vocab_size) {
      throw new ArgumentError(`token ${t} is ${id}, not an id in [0, ${config.vocab_size})`);
    }
    h.set(table.subarray(id * d, (id + 1) * d), t * d);
  });
  return h;
}

/** Positions start .. start + T - 1. */
export function positionsFrom(start: number, T: number): Uint32Array {
  return Uint32Array.from({ length: T }, (_, t) => start + t);
}

/** Logits of the main model for `tokens`, continuing `options.cache`. */
export function referenceForward(weights: ReferenceWeights, config: DeepseekV3Config, tokens: readonly number[], options: ReferenceOptions = {}): ReferenceOutput {
  if (tokens.length === 0) throw new ArgumentError('referenceForward needs at least one token');
  const form = options.attention ?? 'absorbed';
  const rounding = actRounding(config, options.numerics);
  const cache = options.cache ?? new ReferenceLatentCache();
  const T = tokens.length;
  const d = config.hidden_size;
  const positions = positionsFrom(cache.length, T);
  const intermediates = new Map<string, Float32Array[]>();
  const keep = (name: string, x: Float32Array) => {
    if (options.intermediates) intermediates.set(name, splitRows(x.slice(), T, d));
  };

  const h = embed(weights.get('model.embed_tokens.weight'), config, tokens); // [T, d]
  keep('embed', h);
  const router = new Map<number, RouterChoice[]>();
  for (let L = 0; L < config.num_hidden_layers; L++) {
    const routing = decoderLayer(weights, config, L, h, positions, cache, form, rounding);
    if (routing) router.set(L, routing);
    keep(`after_block.${L}`, h);
  }
  cache.length += T;

  const hidden = rmsNorm(h, T, d, weights.get('model.norm.weight'), config.rms_norm_eps); // [T, d]
  keep('final_norm', hidden);
  const logits = linear(hidden, T, weights.get('lm_head.weight'), config.vocab_size, d); // [T, vocab]
  return { logits: splitRows(logits, T, config.vocab_size), hidden: splitRows(hidden, T, d), router, intermediates, cache };
}

export interface GreedyResult {
  /** The continuation, `steps` tokens (EOS is not special). */
  tokens: number[];
  /** Row j chose tokens[j]; row 0 is the last prefill row. */
  stepLogits: Float32Array[];
  cache: ReferenceLatentCache;
}

/**
 * Greedy decoding as the official generate.py at temperature 0: one prefill of the prompt, then
 * one token per call through the latent cache; argmax takes the lowest index on ties.
 */
export function referenceGreedy(
  weights: ReferenceWeights,
  config: DeepseekV3Config,
  prompt: readonly number[],
  steps: number,
  options: { attention?: AttentionForm; numerics?: ModelNumerics } = {},
): GreedyResult {
  const cache = new ReferenceLatentCache();
  const tokens: number[] = [];
  const stepLogits: Float32Array[] = [];
  let next: readonly number[] = prompt;
  while (tokens.length < steps) {
    const { logits } = referenceForward(weights, config, next, { attention: options.attention, numerics: options.numerics, cache });
    const last = logits[logits.length - 1];
    stepLogits.push(last);
    tokens.push(argmax(last));
    next = [tokens[tokens.length - 1]];
  }
  return { tokens, stepLogits, cache };
}
