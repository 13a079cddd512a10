// The multi-token-prediction module, CPU reference (src/model/MATH.md 7; the convention of the
// dsv3-tiny-official fixture, vLLM deepseek_mtp.py and SGLang deepseek_nextn.py). Row i drafts
// token t_{i+2} from the main model's h_i (after model.norm) and the token t_{i+1}:
//
//   x_i      = eh_proj( concat( enorm(embed_tokens(t_{i+1})), hnorm(h_i) ) )    embedding first
//   logits_i = shared_head.head( shared_head.norm( DecoderLayer_L(x_i) ) )
//
// with L = num_hidden_layers, a full MLA + MoE layer, causal, at position i, with its own cache.
// embed_tokens and shared_head.head are the MTP layer's own tensors (copies of the main ones in
// the release). The embedding at position 0 is not masked.

import type { DeepseekV3Config } from '../../config.ts';
import { ArgumentError, UnsupportedConfigError } from '../../errors.ts';
import type { RouterChoice } from './ffn.ts';
import { decoderLayer, embed, positionsFrom } from './forward.ts';
import { ReferenceLatentCache, type AttentionForm } from './mla.ts';
import { actRounding, argmax, linear, rmsNorm, splitRows } from './ops.ts';
import type { ReferenceWeights } from './tensors.ts';
import type { ModelNumerics } from '../model_kernels.ts';

export interface MtpOptions {
  attention?: AttentionForm;
  /** The MTP layer's cache to continue (rows at positions cache.length ...); a new one when absent. */
  cache?: ReferenceLatentCache;
  /** As ReferenceOptions.numerics: 'w8a8' rounds the decoder layer's FP8 Linear inputs (eh_proj, BF16, is not). */
  numerics?: ModelNumerics;
}

export interface MtpOutput {
  /** Row i [vocab_size]: the draft distribution of t_{i+2}. */
  logits: Float32Array[];
  /** Draft token of each row (lowest index on ties). */
  argmax: number[];
  /** Per row: the MTP layer's routed experts. */
  router: RouterChoice[];
  cache: ReferenceLatentCache;
}

/**
 * MTP rows for `nextTokens[i]` = t_{i+1} and `hidden[i]` = h_i (the main model's hidden state after
 * model.norm, ReferenceOutput.hidden), one row per pair, at positions cache.length + i.
 */
export function referenceMtp(
  weights: ReferenceWeights,
  config: DeepseekV3Config,
  nextTokens: readonly number[],
  hidden: readonly Float32Array[],
  options: MtpOptions = {},
): MtpOutput {
  const L = config.mtp_layer_index;
  if (L === null) throw new UnsupportedConfigError('num_nextn_predict_layers', '0: this checkpoint has no MTP module');
  if (nextTokens.length === 0 || nextTokens.length !== hidden.length) {
    throw new ArgumentError(`referenceMtp needs one hidden state per token, got ${nextTokens.length} tokens and ${hidden.length} hidden states`);
  }
  const T = nextTokens.length;
  const d = config.hidden_size;
  const eps = config.rms_norm_eps;
  const p = `model.layers.${L}.`;
  const cache = options.cache ?? new ReferenceLatentCache();

  const emb = rmsNorm(embed(weights.get(`${p}embed_tokens.weight`), config, nextTokens), T, d, weights.get(`${p}enorm.weight`), eps);
  const h = new Float32Array(T * d);
  hidden.forEach((row, i) => {
    if (row.length !== d) throw new ArgumentError(`hidden state ${i} has ${row.length} values, not hidden_size ${d}`);
    h.set(row, i * d);
  });
  const hNormed = rmsNorm(h, T, d, weights.get(`${p}hnorm.weight`), eps);
  const both = new Float32Array(T * 2 * d); // [T, 2d]: [enorm(emb) ; hnorm(h)]
  for (let i = 0; i < T; i++) {
    both.set(emb.subarray(i * d, (i + 1) * d), i * 2 * d);
    both.set(hNormed.subarray(i * d, (i + 1) * d), i * 2 * d + d);
  }
  const x = linear(both, T, weights.get(`${p}eh_proj.weight`), d, 2 * d); // [T, d]

  const router = decoderLayer(weights, config, L, x, positionsFrom(cache.length, T), cache, options.attention ?? 'absorbed', actRounding(config, options.numerics)) ?? [];
  cache.length += T;

  const normed = rmsNorm(x, T, d, weights.get(`${p}shared_head.norm.weight`), eps);
  const logits = splitRows(linear(normed, T, weights.get(`${p}shared_head.head.weight`), config.vocab_size, d), T, config.vocab_size);
  return { logits, argmax: logits.map((row) => argmax(row)), router, cache };
}
