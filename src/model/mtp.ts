// The MTP module on the GPU (DEEPSEEK_V3_MATH.md 7; vLLM deepseek_mtp.py, SGLang deepseek_nextn.py,
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
import type { PreparedCall } from '../kernels/matmul_operands.ts';
import { prepareRmsNorm } from '../kernels/rmsnorm.ts';
import { prepareSample, type PreparedSample, type SamplingParams } from '../kernels/sample.ts';
import { createActivations, type Activations } from './activations.ts';
import type { LogitRows } from './deepseek_v3.ts';
import { prepareLayer, type LayerPlan } from './layer.ts';
import type { ModelWeights } from './gpu_weights.ts';
import type { LatentCache } from './kv_cache.ts';
import type { ModelKernels } from './model_kernels.ts';

export interface MtpPlan {
  readonly rows: number;
  readonly acts: Activations;
  /** [logit rows, vocab] */
  readonly logits: GPUBuffer;
  /** [logit rows] u32 draft ids (argmax when sampled greedily). */
  readonly sampledIds: GPUBuffer;
  /**
   * Records the module for rows at startPos .. (acts.ids must hold t_{i+1} by then). Without
   * `sampling` only the layer runs (its cache rows are written: a prefill chunk before the last),
   * and the head, which only makes drafts, is skipped.
   */
  encode(encoder: GPUCommandEncoder, startPos: number, sampling?: SamplingParams): void;
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
}

export function createMtpPlan({ kernels: k, weights: W, cache, invFreq, rows, logitRows, mainHidden }: MtpPlanOptions): MtpPlan {
  const mtp = W.mtp;
  const c: DeepseekV3Config = W.config;
  if (!mtp || c.mtp_layer_index === null) throw new UnsupportedConfigError('num_nextn_predict_layers', 'this checkpoint has no MTP module (or it was not loaded)');
  const { device } = k.gpu;
  const d = c.hidden_size;
  const V = c.vocab_size;
  const outRows = logitRows === 'all' ? rows : 1;
  const owned: { destroy(): void }[] = [];
  const keep = <P extends { destroy(): void }>(p: P): P => (owned.push(p), p);
  const buffer = (label: string, size: number, usage: number) => keep(device.createBuffer({ label, size: Math.max(16, size), usage }));
  const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  try {
    const acts = keep(createActivations(device, c, rows, `mtp${rows}`));
    const emb = buffer('mtp.emb', 4 * rows * d, storage);
    const cat = buffer('mtp.concat', 8 * rows * d, storage); // [rows, 2d]: enorm(emb) | hnorm(h)
    const norm = (x: GPUBuffer, weight: GPUBuffer, y: GPUBuffer, offset: number, label: string) =>
      keep(prepareRmsNorm(device, k.rmsnorm, { rows, width: d, eps: c.rms_norm_eps, x, weight, y, yLayout: { stride: 2 * d, offset }, label }));
    const front: PreparedCall[] = [
      keep(k.embed(mtp.embedDtype).prepare({ T: rows, vocab: V, d, ids: acts.ids, table: mtp.embed_tokens, h: emb, label: 'mtp.embed_tokens' })),
      norm(emb, mtp.enorm, cat, 0, 'mtp.enorm'),
      norm(mainHidden, mtp.hnorm, cat, d, 'mtp.hnorm'),
      keep(k.linear.prepare(mtp.eh_proj, { M: rows, x: cat, y: acts.h, label: 'mtp.eh_proj' })),
      keep(prepareRmsNorm(device, k.rmsnorm, { rows, width: d, eps: c.rms_norm_eps, x: acts.h, weight: mtp.layer.attention.input_layernorm, y: acts.x, label: 'mtp.input_layernorm' })),
    ];
    const layer: LayerPlan = prepareLayer(k, c, mtp.layer, mtp.shared_head_norm, acts, cache, c.mtp_layer_index, invFreq, keep, true);
    const lastHidden = outRows < rows ? buffer('mtp.hidden.last', 4 * d, storage) : undefined;
    const logits = buffer('mtp.logits', 4 * outRows * V, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
    const head = keep(k.linear.prepare(mtp.shared_head_head, { M: outRows, x: lastHidden ?? acts.hidden, y: logits, label: 'mtp.shared_head.head' }));
    const sampledIds = buffer('mtp.sampled_ids', 4 * outRows, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
    let sample: PreparedSample | undefined;

    return {
      rows,
      acts,
      logits,
      sampledIds,
      encode(encoder, startPos, sampling) {
        device.queue.writeBuffer(acts.positions, 0, Uint32Array.from({ length: rows }, (_, t) => startPos + t));
        layer.mla.setStartPos(startPos);
        const first = encoder.beginComputePass({ label: 'mtp.front' });
        for (const call of front) call.encode(first);
        first.end();
        layer.mla.encode(encoder);
        const ffn = encoder.beginComputePass({ label: 'mtp.ffn' });
        for (const call of layer.tail) call.encode(ffn);
        ffn.end();
        if (!sampling) return;
        if (lastHidden) encoder.copyBufferToBuffer(acts.hidden, 4 * (rows - 1) * d, lastHidden, 0, 4 * d);
        const last = encoder.beginComputePass({ label: 'mtp.head' });
        head.encode(last);
        sample ??= keep(prepareSample(device, k.sample, { rows: outRows, vocab: V, logits, ids: sampledIds, sampling, label: 'mtp.sample' }));
        sample.setSampling(sampling);
        sample.encode(last);
        last.end();
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
