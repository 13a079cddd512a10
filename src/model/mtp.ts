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
import { UnsupportedConfigError } from '../errors.ts';
import type { PreparedCall } from '../gpu/kernel.ts';
import type { SamplingParams } from '../kernels/sample.ts';
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
  /** [logit rows] u32 draft ids (argmax when sampled greedily). */
  readonly sampledIds: GPUBuffer;
  /**
   * Records the module for rows at startPos .. (acts.ids must hold t_{i+1} by then; a generator:
   * layer.ts StepRecord). Without
   * `sampling` only the layer runs (its cache rows are written: a prefill chunk before the last),
   * and the head, which only makes drafts, is skipped.
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
}

export function createMtpPlan({ kernels: k, weights: W, cache, invFreq, rows, logitRows, mainHidden, draftVocab }: MtpPlanOptions): MtpPlan {
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
      keep(prepareNorm(k, c, { x: acts.h, weight: mtp.layer.attention.input_layernorm, y: acts.x, rows, label: 'mtp.input_layernorm' })),
    ];
    const layer = prepareLayer({
      kernels: k, config: c, weights: mtp.layer, acts, cache, cacheLayer: c.mtp_layer_index, invFreq, keep, nextNormWeight: mtp.shared_head_norm, isLast: true,
    });
    const head = keep(prepareHead({ kernels: k, config: c, weight: mtp.shared_head_head, hidden: acts.hidden, rows, logitRows, label: 'mtp.shared_head.head', vocab: draftVocab }));

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
        if (sampling) head.encode(rec.encoder, { sample: sampling });
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
