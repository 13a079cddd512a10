// The DeepSeek-V3 forward pass on the GPU, as a plan for a fixed number of rows T (src/model/MATH.md 4): the
// GPU twin of model/reference/forward.ts. A decode step is the plan of T = 1 (T = 2 for the MTP
// verify step); a prefill chunk the plan of the chunk's size. In the paper's order:
//
//   h = embed_tokens[ids]                     [T, hidden] f32    acts.h
//   x = RMSNorm(h; input_layernorm.0)         [T, hidden]        acts.x
//   for each layer L:
//     attnOut = MLA(x)                         [T, hidden]        writes the layer's latent cache rows
//     h += attnOut;  x = RMSNorm(h; post_attention_layernorm.L)
//     ffnOut = MLP(x) or MoE(x)                [T, hidden]        router, routed + shared experts
//     h += ffnOut;   x = RMSNorm(h; input_layernorm.L+1)      (hidden = RMSNorm(h; model.norm) after the last)
//   logits = lm_head(hidden rows)              [1 or T, vocab]
//   ids = sample(logits)                       [1 or T] u32       the one readback of a step
//   (with an MTP plan: the MTP module drafts the token after each sampled one, src/model/MATH.md 7)
//
// A plan prepares every call once (params, bind groups, activations for T rows); a step writes the
// ids and positions, moves the cache offsets and records the whole forward into one command
// encoder: one submit, and only sampled ids (or, when asked, logits) come back.
// Decode plans (rows <= GEMV_MAX_ROWS, weight_only numerics) run without norm dispatches: each
// RMSNorm is the prologue of the GEMV after it, each residual add the epilogue of the kernel before
// it (layer.ts); `fuseNorms: false` keeps the dispatches (to measure what the fusion gains).

import type { DeepseekV3Config } from '../config.ts';
import { ArgumentError, NonFiniteError } from '../errors.ts';
import { readBuffer } from '../gpu/buffers.ts';
import { writeConsecutivePositions } from '../kernels/rope_yarn.ts';
import { GEMV_MAX_ROWS } from '../kernels/gemv_fp8.ts';
import { NON_FINITE_ID, type SamplingParams } from '../kernels/sample.ts';
import { createActivations, type Activations } from './activations.ts';
import type { ModelWeights } from './gpu_weights.ts';
import { prepareEmbedding } from './embedding.ts';
import { prepareHead, type LogitRows, type RepetitionInput } from './head.ts';
import type { LatentCache } from './kv_cache.ts';
import { encodeLayer, prepareLayer, prepareNorm, type Recording, type StepRecord } from './layer.ts';
import { recordAll, recordThrough } from './offload_step.ts';
import type { ModelKernels } from './model_kernels.ts';
import { createMtpPlan, draftSampling, type DraftMode } from './mtp.ts';
import { prepareSpeculativeVerify } from './speculative_verify.ts';

export type { LogitRows, RepetitionInput } from './head.ts';


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
   * greedily or by sampling (StepInput.drafts). Its row i needs t_{i+1}: 'shifted' takes ids[i + 1] (and for the last row StepInput.nextId,
   * or the id sampled after it: prefill); 'sampled' takes the id the main model sampled after row i
   * (the verify step, where a rejected draft must not be used).
   */
  mtp?: 'shifted' | 'sampled';
  /** The MTP module drafts from ids 0 .. draftVocab - 1 only (mtp.ts); default all. */
  draftVocab?: number;
  /** [2, draft vocab] f32 of the plan set: q of the last sampled drafts (mtp.ts MtpPlanOptions.draftQ); needed for sampled drafts. */
  draftQ?: GPUBuffer;
  /** Decode plans: the norms inside the GEMVs and the residual adds inside the kernels before them (default true). */
  fuseNorms?: boolean;
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
  /** Before sampling: penalise the ids set in `mask`. */
  repetition?: RepetitionInput;
  /** Grammar-constrained sampling: [logit rows, ceil(vocab / 32)] u32, bit set where a token may be sampled. */
  tokenMask?: Uint32Array<ArrayBuffer>;
  /** 'shifted' MTP plans, a prefill chunk before the last: the id after the chunk's last row. */
  nextId?: number;
  /** MTP plans sampling at temperature > 0: draft the MTP module's argmax ('greedy', the default) or a sample of its q ('sampled'). */
  drafts?: DraftMode;
  /**
   * The verify plan with sampled drafts: the draftQ row holding the q that ids[1] was sampled from
   * (1 after a forward, or after a verify whose draft was accepted; 0 after one rejected). Row 0's
   * id is then decided by speculative sampling (speculative_verify.ts); absent: by the sampler.
   */
  draftRow?: number;
}

export interface StepOutput {
  /** Sampled ids, one per logit row; when sampling was asked for. */
  ids?: Uint32Array;
  /** [logit rows, vocab_size]; when asked for. */
  logits?: Float32Array;
  /**
   * With an MTP plan: the draft ids of the MTP's logit rows (the same rows as the main model's);
   * NON_FINITE_ID where the MTP module's logits were NaN or infinite.
   */
  drafts?: Uint32Array;
  /** With an MTP plan, readLogits and sample: [logit rows, draft vocab] of the MTP module. */
  mtpLogits?: Float32Array;
}

export interface ForwardPlan {
  readonly rows: number;
  readonly logitRows: LogitRows;
  readonly acts: Activations;
  /** [logit rows, vocab_size] f32, written by every step that runs the head. */
  readonly logits: GPUBuffer;
  /** With captureRouting: the expert ids each MoE layer chose in the last step, [rows, num_experts_per_tok] per layer. */
  readRouting(): Promise<Map<number, Uint32Array>>;
  /**
   * Writes ids and positions, then records the step into `encoder` (for composing with other work).
   * The params go through queue.writeBuffer: one encode of a plan per submit. Not for a model
   * that offloads its experts (ArgumentError): its step reads back mid-way, so only run() takes it.
   */
  encode(encoder: GPUCommandEncoder, input: StepInput): void;
  /** One step: encode, submit, read back what was asked for. */
  run(input: StepInput): Promise<StepOutput>;
  destroy(): void;
}

export function createForwardPlan({ kernels: k, weights: W, cache, invFreq, rows, logitRows, captureRouting, mtp: mtpMode, draftVocab, draftQ, fuseNorms = true }: ForwardPlanOptions): ForwardPlan {
  const c: DeepseekV3Config = W.config;
  const { device } = k.gpu;
  if (!(Number.isInteger(rows) && rows >= 1)) throw new ArgumentError(`forward plan: rows must be a positive integer, got ${rows}`);
  if (mtpMode === 'sampled' && logitRows !== 'all') throw new ArgumentError("an MTP plan drafting from sampled ids needs logitRows 'all'");
  const V = c.vocab_size;
  const owned: { destroy(): void }[] = [];
  const keep = <P extends { destroy(): void }>(p: P): P => (owned.push(p), p);
  const buffer = (label: string, size: number, usage: number) => keep(device.createBuffer({ label, size: Math.max(16, size), usage }));

  try {
    const acts = keep(createActivations(device, c, rows, `plan${rows}`, W.expertRanges));
    const embed = keep(prepareEmbedding(k, W.embed_tokens, { T: rows, ids: acts.ids, h: acts.h, label: 'embed_tokens' }));
    const residual = fuseNorms && rows <= GEMV_MAX_ROWS && k.numerics === 'weight_only';
    const inputNorm = residual ? undefined : keep(prepareNorm(k, c, { x: acts.h, weight: W.layers[0].attention.input_layernorm, y: acts.x, rows, label: 'input_layernorm.0' }));
    const layers = W.layers.map((weights, L) =>
      prepareLayer({
        kernels: k, config: c, weights, acts, cache, cacheLayer: L, invFreq, keep, residual,
        nextNormWeight: W.layers[L + 1]?.attention.input_layernorm ?? W.norm,
        isLast: L === W.layers.length - 1,
      }),
    );
    // residual: model.norm in lm_head's GEMV, which leaves the normed rows in acts.hidden for the MTP module
    const finalNorm = { weight: W.norm, eps: c.rms_norm_eps, xNormed: mtpMode ? acts.hidden : undefined };
    const head = keep(prepareHead({ kernels: k, config: c, weight: W.lm_head, rows, logitRows, label: 'lm_head', ...(residual ? { hidden: acts.h, norm: finalNorm } : { hidden: acts.hidden }) }));
    // ... and where the head does not run (a prefill chunk before the last), a dispatch of its own
    const hiddenForMtp = residual && mtpMode ? keep(prepareNorm(k, c, { x: acts.h, weight: W.norm, y: acts.hidden, rows, label: 'norm' })) : undefined;
    const outRows = head.outRows;
    const mtp = mtpMode ? keep(createMtpPlan({ kernels: k, weights: W, cache, invFreq, rows, logitRows, mainHidden: acts.hidden, draftVocab, draftQ, residual })) : undefined;
    const sampledVerify = mtp && mtpMode === 'sampled' && draftQ ? keep(prepareSpeculativeVerify({ kernels: k, logits: head.logits, ids: head.sampledIds, vocab: V, draftQ, draftVocab: mtp.vocab })) : undefined;

    // The one readback of a step: the sampled ids, then the MTP drafts, copied by the step's own
    // encoder into a buffer the plan keeps (no allocation and no extra submit per step).
    const readback = buffer('readback.ids', 8 * outRows, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    // Expert ids per MoE layer, copied out after each layer (the layers share acts.topkIds).
    const moeLayers = W.layers.filter((w) => w.moe).map((w) => w.index);
    const routeBytes = 4 * rows * c.num_experts_per_tok;
    const routing = captureRouting && moeLayers.length > 0 ? buffer('routing', routeBytes * moeLayers.length, GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC) : undefined;

    // Offloaded experts: the router's ids of a layer are read back through here (offload_step.ts).
    const offloaded = layers.some((l) => l.offloaded) || (mtp?.offloaded ?? false);
    const staging = offloaded ? buffer('readback.topk_ids', 4 * rows * c.num_experts_per_tok, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST) : undefined;

    /** The step, recorded into rec.encoder; a generator that stops at each offloaded layer (layer.ts StepRecord). */
    function* steps(rec: Recording, input: StepInput): StepRecord {
      checkInput(input, rows, cache.maxT, V);
      device.queue.writeBuffer(acts.ids, 0, Uint32Array.from(input.ids));
      writeConsecutivePositions(device, acts.positions, input.startPos, rows);
      for (const layer of layers) layer.attention.setStartPos(input.startPos);

      const first = rec.encoder.beginComputePass({ label: 'embed' });
      embed.encode(first);
      inputNorm?.encode(first);
      first.end();
      for (const [L, layer] of layers.entries()) {
        yield* encodeLayer(rec, layer, `layer${L}`);
        const slot = moeLayers.indexOf(W.layers[L].index);
        if (routing && slot >= 0) rec.encoder.copyBufferToBuffer(acts.topkIds, 0, routing, slot * routeBytes, routeBytes);
      }
      // A prefill chunk before the last one needs no head.
      const runsHead = input.sample || input.readLogits || input.head;
      // Sampled drafts: the verify rows are sampled with p written, and row 0 accepted or resampled.
      const bySampledRule = input.draftRow !== undefined && input.sample !== undefined && input.sample.temperature > 0;
      if (bySampledRule) {
        if (!sampledVerify) throw new ArgumentError('draftRow is for the MTP verify plan of a set with draft distributions');
        if (input.repetition) throw new ArgumentError('sampled drafts are not verified with a repetition penalty');
        head.encode(rec.encoder, {});
        sampledVerify.encode(rec.encoder, { sampling: input.sample!, tokenMask: input.tokenMask, draft: input.ids[1], qRow: input.draftRow! });
      } else if (runsHead) head.encode(rec.encoder, { sample: input.sample, repetition: input.repetition, tokenMask: input.tokenMask });
      else if (hiddenForMtp) {
        const pass = rec.encoder.beginComputePass({ label: 'norm' });
        hiddenForMtp.encode(pass);
        pass.end();
      }
      if (input.sample) rec.encoder.copyBufferToBuffer(head.sampledIds, 0, readback, 0, 4 * outRows);
      if (mtp) {
        encodeMtpIds(rec.encoder, input);
        // Drafts are only wanted after a sampled row; otherwise the layer fills its cache rows alone.
        yield* mtp.encode(rec, input.startPos, input.sample ? draftSampling(input.sample, input.drafts ?? 'greedy') : undefined);
        if (input.sample) rec.encoder.copyBufferToBuffer(mtp.sampledIds, 0, readback, 4 * outRows, 4 * outRows);
      }
    }
    const encode = (encoder: GPUCommandEncoder, input: StepInput) => recordAll(steps({ encoder }, input));

    /** The MTP module's row i reads t_{i+1}: the next input id, or the id sampled after row i. */
    const encodeMtpIds = (encoder: GPUCommandEncoder, input: StepInput) => {
      const ids = mtp!.acts.ids;
      if (mtpMode === 'sampled') {
        if (!input.sample) throw new ArgumentError('an MTP verify plan drafts from the sampled ids: give StepInput.sample');
        encoder.copyBufferToBuffer(head.sampledIds, 0, ids, 0, 4 * rows);
        return;
      }
      if (rows > 1) device.queue.writeBuffer(ids, 0, Uint32Array.from(input.ids).subarray(1));
      if (input.nextId !== undefined) device.queue.writeBuffer(ids, 4 * (rows - 1), new Uint32Array([input.nextId]));
      else if (input.sample) encoder.copyBufferToBuffer(head.sampledIds, 0, ids, 4 * (rows - 1), 4);
      else throw new ArgumentError('an MTP prefill chunk needs the id after its last row: StepInput.nextId, or sampling');
    };

    return {
      rows,
      logitRows,
      acts,
      logits: head.logits,
      encode,
      async run(input) {
        const rec: Recording = { encoder: device.createCommandEncoder({ label: `forward T=${rows}` }) };
        if (staging) await recordThrough(device, rec, steps(rec, input), staging);
        else recordAll(steps(rec, input));
        device.queue.submit([rec.encoder.finish()]);
        const out: StepOutput = {};
        if (input.sample) {
          await readback.mapAsync(GPUMapMode.READ);
          const words = new Uint32Array(readback.getMappedRange().slice(0));
          readback.unmap();
          out.ids = words.slice(0, outRows);
          if (mtp) out.drafts = words.slice(outRows, 2 * outRows);
          // The main model's ids must be finite; a draft that is not (NON_FINITE_ID) is only a
          // draft: the caller decodes without it (gpu_model.ts), the output stays exact.
          checkFinite(out.ids, 'lm_head');
        }
        // Logits are for scoring and tests, not the decode loop: read with their own copies.
        if (input.readLogits) out.logits = new Float32Array(await readBuffer(device, head.logits, 4 * outRows * V));
        if (mtp && input.readLogits && input.sample) out.mtpLogits = new Float32Array(await readBuffer(device, mtp.logits, 4 * outRows * mtp.vocab));
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

/** The sampler marks a row without finite logits (shaders/sample.wgsl): stop rather than emit a wrong token. */
function checkFinite(ids: Uint32Array, head: string): void {
  const row = ids.indexOf(NON_FINITE_ID);
  if (row >= 0) {
    throw new NonFiniteError(
      `the logits of ${head} are NaN or infinite (row ${row} of the step): a weight or block scale of the checkpoint is not finite, a config value is extreme, or the GPU failed; no token can be sampled`,
    );
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
