// The MTP module on the GPU (src/model/MATH.md 7; vLLM deepseek_mtp.py, SGLang deepseek_nextn.py,
// the checkpoint's trainer): row i drafts token t_{i+2} from the main model's h_i (after model.norm)
// and the token t_{i+1}:
//
//   x_i      = eh_proj( concat( enorm(embed_tokens(t_{i+1})), hnorm(h_i) ) )     embedding first
//   logits_i = shared_head.head( shared_head.norm( DecoderLayer(x_i) ) )         at position i
//
// The decoder layer is a full MLA + MoE layer with its own slot in the session's latent cache.
// Prepared for the rows of one main plan, reading that plan's hidden rows in place; the caller
// fills `acts.ids` (with a copy or a write) before encoding.

import type { DeepseekV3Config } from '../config.ts';
import { ArgumentError, UnsupportedConfigError } from '../errors.ts';
import type { PreparedCall } from '../gpu/kernel.ts';
import type { PreparedSample, SamplingParams } from '../kernels/sample.ts';
import { draftSeed } from '../kernels/speculative_accept.ts';
import { createActivations, type Activations } from './activations.ts';
import type { ModelWeights } from './gpu_weights.ts';
import { prepareEmbedding } from './embedding.ts';
import { prepareHead, type LogitRows } from './head.ts';
import type { LatentCache } from './kv_cache.ts';
import { encodeLayer, prepareLayer, prepareNorm, type Recording, type StepRecord } from './layer.ts';
import type { ModelKernels } from './model_kernels.ts';

export interface MtpPlan {
  readonly rows: number;
  /** Its layer's experts are offloaded (the step stops at it). */
  readonly offloaded: boolean;
  readonly acts: Activations;
  /** [logit rows, vocab] */
  readonly logits: GPUBuffer;
  /** The draft head's vocab: the logits' width. */
  readonly vocab: number;
  /** [logit rows] u32 draft ids (the argmax, or samples of q: encode's sampling). */
  readonly sampledIds: GPUBuffer;
  /**
   * Records the module for rows at startPos .. (acts.ids must hold t_{i+1} by then; a generator:
   * layer.ts StepRecord). Without
   * `sampling` only the layer runs (its cache rows are written: a prefill chunk before the last),
   * and the head, which only makes drafts, is skipped. With `sampling` at temperature > 0
   * (draftSampling 'sampled') the drafts are samples of q and q of the last two logit rows goes
   * to MtpPlanOptions.draftQ.
   */
  encode(rec: Recording, startPos: number, sampling?: SamplingParams): StepRecord;
  destroy(): void;
}

export interface MtpPlanOptions {
  kernels: ModelKernels;
  weights: ModelWeights;
  cache: LatentCache;
  invFreq: GPUBuffer;
  rows: number;
  logitRows: LogitRows;
  /** The main plan's hidden rows [rows, hidden_size] (after model.norm). */
  mainHidden: GPUBuffer;
  /** Draft from the logits of ids 0 .. draftVocab - 1 only (head.ts HeadOptions.vocab); default all. */
  draftVocab?: number;
  /**
   * [2, draft vocab] f32 of the plan set: where drafting at temperature > 0 leaves q (the kept
   * distribution each draft was sampled from) of its last two logit rows, the last in row 1 (a
   * verify plan's rows 0 and 1; a prefill's last row in row 1), for the verify step after it to
   * accept by (speculative_verify.ts). The verify step reads it before its own MTP run rewrites it.
   */
  draftQ?: GPUBuffer;
  /** A decode plan without norm dispatches (layer.ts): the layer's and the head's norms in their GEMVs. */
  residual?: boolean;
}

export function createMtpPlan({ kernels: k, weights: W, cache, invFreq, rows, logitRows, mainHidden, draftVocab, draftQ, residual = false }: MtpPlanOptions): MtpPlan {
  const mtp = W.mtp;
  const c: DeepseekV3Config = W.config;
  if (!mtp || c.mtp_layer_index === null) throw new UnsupportedConfigError('num_nextn_predict_layers', 'this checkpoint has no MTP module (or it was not loaded)');
  const { device } = k.gpu;
  const d = c.hidden_size;
  const owned: { destroy(): void }[] = [];
  const keep = <P extends { destroy(): void }>(p: P): P => (owned.push(p), p);
  const buffer = (label: string, size: number) => keep(device.createBuffer({ label, size: Math.max(16, size), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }));
  try {
    const acts = keep(createActivations(device, c, rows, `mtp${rows}`, W.expertRanges));
    const emb = buffer('mtp.emb', 4 * rows * d); // [rows, hidden] embed_tokens(t_{i+1})
    const cat = buffer('mtp.concat', 8 * rows * d); // [rows, 2 hidden]: enorm(emb) | hnorm(h)
    const front: PreparedCall[] = [
      keep(prepareEmbedding(k, mtp.embed_tokens, { T: rows, ids: acts.ids, h: emb, label: 'mtp.embed_tokens' })),
      keep(prepareNorm(k, c, { x: emb, weight: mtp.enorm, y: cat, rows, yLayout: { stride: 2 * d, offset: 0 }, label: 'mtp.enorm' })),
      keep(prepareNorm(k, c, { x: mainHidden, weight: mtp.hnorm, y: cat, rows, yLayout: { stride: 2 * d, offset: d }, label: 'mtp.hnorm' })),
      keep(k.linear.prepare(mtp.eh_proj, { M: rows, x: cat, y: acts.h, label: 'mtp.eh_proj' })),
    ];
    if (!residual) front.push(keep(prepareNorm(k, c, { x: acts.h, weight: mtp.layer.attention.input_layernorm, y: acts.x, rows, label: 'mtp.input_layernorm' })));
    const layer = prepareLayer({
      kernels: k, config: c, weights: mtp.layer, acts, cache, cacheLayer: c.mtp_layer_index, invFreq, keep, nextNormWeight: mtp.shared_head_norm, isLast: true, residual,
    });
    const headInput = residual ? { hidden: acts.h, norm: { weight: mtp.shared_head_norm, eps: c.rms_norm_eps } } : { hidden: acts.hidden };
    const head = keep(prepareHead({ kernels: k, config: c, weight: mtp.shared_head_head, ...headInput, rows, logitRows, label: 'mtp.shared_head.head', vocab: draftVocab }));

    // Sampled drafts: the sampler's probs variant writes q beside the ids (made on the first such step).
    let drafter: PreparedSample | undefined;
    let draftProbs: GPUBuffer | undefined;
    const encodeSampledDrafts = (encoder: GPUCommandEncoder, sampling: SamplingParams) => {
      if (!draftQ) throw new ArgumentError('sampled MTP drafts need the plan set\'s draftQ buffer');
      const out = head.outRows;
      const V = head.vocab;
      draftProbs ??= buffer('mtp.draft_probs', 4 * out * V);
      drafter ??= keep(k.sample.prepare({ rows: out, vocab: V, logits: head.logits, ids: head.sampledIds, probs: draftProbs, sampling, label: 'mtp.draft_sample' }));
      drafter.setSampling(sampling);
      head.encode(encoder, {});
      const pass = encoder.beginComputePass({ label: 'mtp.draft_sample' });
      drafter.encode(pass);
      pass.end();
      // The last two rows' q, right-aligned (the last in row 1).
      const n = Math.min(out, 2);
      encoder.copyBufferToBuffer(draftProbs, 4 * (out - n) * V, draftQ, 4 * (2 - n) * V, 4 * n * V);
    };

    return {
      rows,
      offloaded: layer.offloaded !== undefined,
      acts,
      logits: head.logits,
      vocab: head.vocab,
      sampledIds: head.sampledIds,
      *encode(rec, startPos, sampling) {
        device.queue.writeBuffer(acts.positions, 0, Uint32Array.from({ length: rows }, (_, t) => startPos + t));
        layer.attention.setStartPos(startPos);
        const first = rec.encoder.beginComputePass({ label: 'mtp.front' });
        for (const call of front) call.encode(first);
        first.end();
        yield* encodeLayer(rec, layer, 'mtp');
        if (sampling && sampling.temperature > 0) encodeSampledDrafts(rec.encoder, sampling);
        else if (sampling) head.encode(rec.encoder, { sample: sampling });
      },
      destroy() {
        for (const p of owned.splice(0)) p.destroy();
      },
    };
  } catch (err) {
    for (const p of owned.splice(0)) p.destroy();
    throw err;
  }
}

/** How the MTP module drafts: its argmax (exact, weak away from temperature 0), or a sample of its own distribution q. */
export type DraftMode = 'greedy' | 'sampled';

/**
 * The MTP head's sampling for a step that samples the main model with `sample`: greedy (the
 * argmax, at the step's counter), or at temperature > 0 and 'sampled' the main model's
 * temperature, top-k and top-p on its own uniform stream (draftSeed), independent of the main
 * model's rows and of the acceptance (speculative_accept.ref.ts).
 */
export function draftSampling(sample: SamplingParams, mode: DraftMode): SamplingParams {
  if (mode === 'sampled' && sample.temperature > 0) return { ...sample, seed: draftSeed(sample.seed) };
  return { temperature: 0, topK: 0, topP: 1, seed: 0, step: sample.step };
}
