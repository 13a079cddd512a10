// The DeepSeek-V3 forward pass on the GPU as a plan for a fixed number of rows T (DEEPSEEK_V3_MATH.md 4):
//
//   h = embed_tokens[ids];  x = RMSNorm(h; input_layernorm.0)
//   per layer L:  attnOut = MLA(x)                   (writes the layer's latent cache rows)
//                 h += attnOut;  x = RMSNorm(h; post_attention_layernorm.L)
//                 ffnOut = dense MLP(x) or MoE(x)
//                 h += ffnOut;   x = RMSNorm(h; input_layernorm.L+1)   (hidden = RMSNorm(h; model.norm) after the last)
//   logits = lm_head(hidden rows) -> sampled ids
//
// A plan prepares every call once (params, bind groups, activations for T rows); a step writes the
// ids and positions, moves the cache offsets and records the whole forward into one command
// encoder: one submit, and only sampled ids (or, when asked, logits) come back. The decode plan is
// the plan of T = 1 (T = 2 for the MTP verify step); prefill runs the plan of the chunk size.

import type { DeepseekV3Config } from '../config.ts';
import { ArgumentError } from '../errors.ts';
import { readBuffer } from '../gpu/buffers.ts';
import { writeConsecutivePositions } from '../kernels/rope_yarn.ts';
import { maskWords, type PreparedRepetitionPenalty } from '../kernels/repetition_penalty.ts';
import { prepareSample, type PreparedSample, type SamplingParams } from '../kernels/sample.ts';
import { createActivations, type Activations } from './activations.ts';
import { createMtpPlan } from './mtp.ts';
import type { ModelWeights } from './gpu_weights.ts';
import type { LatentCache } from './kv_cache.ts';
import { prepareLayer, prepareNorm, type LayerPlan } from './layer.ts';
import type { ModelKernels } from './model_kernels.ts';

const GREEDY_DRAFT = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/** Which rows of a step get logits: the last one (generation) or every one (scoring, MTP verify). */
export type LogitRows = 'last' | 'all';

export interface ForwardPlanOptions {
  kernels: ModelKernels;
  weights: ModelWeights;
  cache: LatentCache;
  /** [qk_rope_head_dim / 2] f32 YaRN inverse frequencies. */
  invFreq: GPUBuffer;
  rows: number;
  logitRows: LogitRows;
  /** Keep each MoE layer's expert ids of the last step (tests, the demo's expert heatmap). */
  captureRouting?: boolean;
  /**
   * Run the MTP module after the main model in the same submit, one MTP row per main row, drafting
   * greedily. Its row i needs t_{i+1}: 'shifted' takes ids[i + 1] (and for the last row StepInput.nextId,
   * or the id sampled after it: prefill); 'sampled' takes the id the main model sampled after row i
   * (the verify step, where a rejected draft must not be used).
   */
  mtp?: 'shifted' | 'sampled';
}

export interface StepOutput {
  /** Sampled ids, one per logit row; when sampling was asked for. */
  ids?: Uint32Array;
  /** [logit rows, vocab_size]; when asked for. */
  logits?: Float32Array;
  /** With an MTP plan: the draft ids of the MTP's logit rows (the same rows as the main model's). */
  drafts?: Uint32Array;
  /** With an MTP plan, readLogits and sample: [logit rows, vocab_size] of the MTP module. */
  mtpLogits?: Float32Array;
}

export interface StepInput {
  ids: ArrayLike<number>;
  /** Absolute position of ids[0]; the cache must hold rows 0 .. startPos - 1 already. */
  startPos: number;
  /** Sample the logit rows on the GPU and read back only the ids. */
  sample?: SamplingParams;
  /** Read the logit rows back. */
  readLogits?: boolean;
  /** Compute the logits on the GPU without reading them (implied by sample and readLogits). */
  head?: boolean;
  /** Before sampling: penalise the ids set in `mask` (presenceMask of the ids seen so far). */
  repetition?: RepetitionInput;
  /** 'shifted' MTP plans, a prefill chunk before the last: the id after the chunk's last row. */
  nextId?: number;
}

export interface RepetitionInput {
  /** HF convention: positive logits divided by it, negative ones multiplied; 1 is off. */
  penalty: number;
  /** [ceil(vocab / 32)] u32 presence bits. */
  mask: Uint32Array<ArrayBuffer>;
}

export interface ForwardPlan {
  readonly rows: number;
  readonly logitRows: LogitRows;
  readonly acts: Activations;
  /** [logit rows, vocab_size] f32, written by every step. */
  readonly logits: GPUBuffer;
  /** With captureRouting: the expert ids each MoE layer chose in the last step, [rows, num_experts_per_tok] per layer. */
  readRouting(): Promise<Map<number, Uint32Array>>;
  /**
   * Writes ids and positions, then records the step into `encoder` (for composing with other work).
   * The params go through queue.writeBuffer: one encode of a plan per submit.
   */
  encode(encoder: GPUCommandEncoder, input: StepInput): void;
  /** One step: encode, submit, read back what was asked for. */
  run(input: StepInput): Promise<StepOutput>;
  destroy(): void;
}


export function createForwardPlan({ kernels: k, weights: W, cache, invFreq, rows, logitRows, captureRouting, mtp: mtpMode }: ForwardPlanOptions): ForwardPlan {
  const c: DeepseekV3Config = W.config;
  const { device } = k.gpu;
  if (!(Number.isInteger(rows) && rows >= 1)) throw new ArgumentError(`forward plan: rows must be a positive integer, got ${rows}`);
  const d = c.hidden_size;
  const V = c.vocab_size;
  const outRows = logitRows === 'all' ? rows : 1;
  const owned: { destroy(): void }[] = [];
  const keep = <P extends { destroy(): void }>(p: P): P => (owned.push(p), p);
  const buffer = (label: string, size: number, usage: number) => keep(device.createBuffer({ label, size: Math.max(16, size), usage }));

  try {
    const acts = keep(createActivations(device, c, rows, `plan${rows}`));
    const embed = keep(k.embed(W.embedDtype).prepare({ T: rows, vocab: V, d, ids: acts.ids, table: W.embed_tokens, h: acts.h, label: 'embed_tokens' }));
    const firstNorm = keep(prepareNorm(k, c, acts.h, W.layers[0].attention.input_layernorm, acts.x, rows, 'input_layernorm.0'));
    const layers: LayerPlan[] = W.layers.map((w, L) => prepareLayer(k, c, w, W.layers[L + 1]?.attention.input_layernorm ?? W.norm, acts, cache, L, invFreq, keep, L === W.layers.length - 1));

    // The head: the last row alone (copied out, so the GEMV binds it at offset 0) or every row.
    const lastHidden = logitRows === 'last' && rows > 1 ? buffer('hidden.last', 4 * d, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST) : undefined;
    const logits = buffer('logits', 4 * outRows * V, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
    const head = keep(k.linear.prepare(W.lm_head, { M: outRows, x: lastHidden ?? acts.hidden, y: logits, label: 'lm_head' }));
    const sampledIds = buffer('sampled_ids', 4 * outRows, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
    // The one readback of a step: the sampled ids, then the MTP drafts, copied by the step's own
    // encoder into a buffer the plan keeps (no allocation and no extra submit per step).
    const readback = buffer('readback.ids', 8 * outRows, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    let sample: PreparedSample | undefined;
    // Expert ids per MoE layer, copied out after each layer (the layers share acts.topkIds).
    const moeLayers = W.layers.filter((w) => w.moe).map((w) => w.index);
    const routeBytes = 4 * rows * c.num_experts_per_tok;
    const routing = captureRouting && moeLayers.length > 0 ? buffer('routing', routeBytes * moeLayers.length, GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC) : undefined;
    let penalty: PreparedRepetitionPenalty | undefined;
    let penaltyMask: GPUBuffer | undefined;
    if (mtpMode === 'sampled' && outRows !== rows) throw new ArgumentError("an MTP plan drafting from sampled ids needs logitRows 'all'");
    const mtp = mtpMode
      ? keep(createMtpPlan({ kernels: k, weights: W, cache, invFreq, rows, logitRows, mainHidden: acts.hidden }))
      : undefined;

    const encode = (encoder: GPUCommandEncoder, input: StepInput) => {
      checkInput(input, rows, cache.maxT, V);
      device.queue.writeBuffer(acts.ids, 0, Uint32Array.from(input.ids));
      writeConsecutivePositions(device, acts.positions, input.startPos, rows);
      for (const layer of layers) layer.mla.setStartPos(input.startPos);

      const first = encoder.beginComputePass({ label: 'embed' });
      embed.encode(first);
      firstNorm.encode(first);
      first.end();
      layers.forEach((layer, L) => {
        layer.mla.encode(encoder);
        const pass = encoder.beginComputePass({ label: `layer${L}.ffn` });
        for (const call of layer.tail) call.encode(pass);
        pass.end();
        const slot = moeLayers.indexOf(W.layers[L].index);
        if (routing && slot >= 0) encoder.copyBufferToBuffer(acts.topkIds, 0, routing, slot * routeBytes, routeBytes);
      });
      // A prefill chunk before the last one needs no head.
      if (input.sample || input.readLogits || input.head) encodeHead(encoder, input);
      if (input.sample) encoder.copyBufferToBuffer(sampledIds, 0, readback, 0, 4 * outRows);
      if (mtp) encodeMtp(encoder, input);
      if (mtp && input.sample) encoder.copyBufferToBuffer(mtp.sampledIds, 0, readback, 4 * outRows, 4 * outRows);
    };

    const encodeMtp = (encoder: GPUCommandEncoder, input: StepInput) => {
      if (mtpMode === 'sampled') {
        if (!input.sample) throw new ArgumentError('an MTP verify plan drafts from the sampled ids: give StepInput.sample');
        encoder.copyBufferToBuffer(sampledIds, 0, mtp!.acts.ids, 0, 4 * rows);
      } else {
        if (rows > 1) device.queue.writeBuffer(mtp!.acts.ids, 0, Uint32Array.from(input.ids).subarray(1));
        if (input.nextId !== undefined) device.queue.writeBuffer(mtp!.acts.ids, 4 * (rows - 1), new Uint32Array([input.nextId]));
        else if (input.sample) encoder.copyBufferToBuffer(sampledIds, 0, mtp!.acts.ids, 4 * (rows - 1), 4);
        else throw new ArgumentError('an MTP prefill chunk needs the id after its last row: StepInput.nextId, or sampling');
      }
      // Drafts are only wanted after a sampled row; otherwise the layer fills its cache rows alone.
      mtp!.encode(encoder, input.startPos, input.sample ? { ...GREEDY_DRAFT, step: input.sample.step } : undefined);
    };

    const encodeHead = (encoder: GPUCommandEncoder, input: StepInput) => {
      if (lastHidden) encoder.copyBufferToBuffer(acts.hidden, 4 * (rows - 1) * d, lastHidden, 0, 4 * d);
      const last = encoder.beginComputePass({ label: 'head' });
      head.encode(last);
      const repetition = input.sample && input.repetition && input.repetition.penalty !== 1 ? input.repetition : undefined;
      if (repetition) {
        penaltyMask ??= buffer('repetition_mask', 4 * maskWords(V), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
        penalty ??= keep(k.repetitionPenalty.prepare({ rows: outRows, vocab: V, logits, mask: penaltyMask, penalty: repetition.penalty, label: 'repetition_penalty' }));
        penalty.setPenalty(repetition.penalty);
        device.queue.writeBuffer(penaltyMask, 0, repetition.mask);
        penalty.encode(last);
      }
      if (input.sample) {
        sample ??= keep(prepareSample(device, k.sample, { rows: outRows, vocab: V, logits, ids: sampledIds, sampling: input.sample, label: 'sample' }));
        sample.setSampling(input.sample);
        sample.encode(last);
      }
      last.end();
    };

    return {
      rows,
      logitRows,
      acts,
      logits,
      encode,
      async run(input) {
        const encoder = device.createCommandEncoder({ label: `forward T=${rows}` });
        encode(encoder, input);
        device.queue.submit([encoder.finish()]);
        const out: StepOutput = {};
        if (input.sample) {
          await readback.mapAsync(GPUMapMode.READ);
          const words = new Uint32Array(readback.getMappedRange().slice(0));
          readback.unmap();
          out.ids = words.slice(0, outRows);
          if (mtp) out.drafts = words.slice(outRows, 2 * outRows);
        }
        // Logits are for scoring and tests, not the decode loop: read with their own copies.
        if (input.readLogits) out.logits = new Float32Array(await readBuffer(device, logits, 4 * outRows * V));
        if (mtp && input.readLogits && input.sample) out.mtpLogits = new Float32Array(await readBuffer(device, mtp.logits, 4 * outRows * V));
        if (!input.sample && !input.readLogits) await device.queue.onSubmittedWorkDone();
        return out;
      },
      async readRouting() {
        if (!routing) throw new ArgumentError('this plan was made without captureRouting');
        const all = new Uint32Array(await readBuffer(device, routing));
        return new Map(moeLayers.map((layer, i) => [layer, all.slice((i * routeBytes) / 4, ((i + 1) * routeBytes) / 4)]));
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

function checkInput(input: StepInput, rows: number, maxT: number, vocab: number): void {
  if (input.ids.length !== rows) throw new ArgumentError(`forward plan of ${rows} rows got ${input.ids.length} ids`);
  for (let i = 0; i < input.ids.length; i++) {
    const id = input.ids[i];
    if (!(Number.isInteger(id) && id >= 0 && id < vocab)) throw new ArgumentError(`token ${i} is ${id}, not an id in [0, ${vocab})`);
  }
  if (!(Number.isInteger(input.startPos) && input.startPos >= 0 && input.startPos + rows <= maxT)) {
    throw new ArgumentError(`positions ${input.startPos}..${input.startPos + rows - 1} do not fit the cache of ${maxT} positions`);
  }
}
