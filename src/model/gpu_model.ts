// A loaded model on the GPU: weights as the kernels read them, the kernels, and per latent cache a
// set of plans (a plan's bind groups point into one cache buffer). `forward` runs any number of
// tokens through the plans: prefill in chunks of `prefillChunk` rows (the remainder with a plan of
// its own size), one row per decode step.

import type { DeepseekV3Config } from '../config.ts';
import { ArgumentError, throwIfAborted, UnsupportedConfigError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { uploadBuffer } from '../gpu/buffers.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { NON_FINITE_ID, type SamplingParams } from '../kernels/sample.ts';
import type { RmsNormReduce } from '../kernels/rmsnorm.ts';
import type { MlaDecodeReduce } from '../kernels/mla_decode.ts';
import type { RouteReduce } from '../kernels/moe_route.ts';
import { chooseGemvStrategy, chooseMlaDecodeReduce, chooseRmsNormReduce, chooseRouteReduce, chooseVerifyExperts } from '../kernels/variant_choice.ts';
import type { ExpertReads } from '../kernels/moe_experts.ts';
import type { VariantStore } from '../gpu/variant_store.ts';

export type { SamplingParams } from '../kernels/sample.ts';
import { createForwardPlan, type ForwardPlan, type LogitRows, type RepetitionInput } from './deepseek_v3.ts';
import type { DraftMode } from './mtp.ts';
import { modelWeights, type ModelWeights } from './gpu_weights.ts';
import { createLatentCache, type LatentCache } from './kv_cache.ts';
import type { LinearStrategies } from './linear.ts';
import type { LoadedWeights } from './load_weights.ts';
import type { ExpertOffload } from './expert_offload.ts';
import { createModelKernels, type ModelKernels, type ModelNumerics } from './model_kernels.ts';
import { ropeInvFreq } from '../kernels/rope_tables.ts';

/** Rows per prefill chunk by default: large enough for the tiled GEMM, small enough to interleave sessions. */
export const DEFAULT_PREFILL_CHUNK = 64;

export interface GpuModelOptions {
  pipelineCache?: PipelineCache;
  strategies?: LinearStrategies;
  prefillChunk?: number;
  /** Default weight_only; w8a8 needs every FP8 Linear's input width to be a multiple of 128. */
  numerics?: ModelNumerics;
  /**
   * The MTP module drafts from the logits of ids 0 .. draftVocab - 1 only (its head reads that
   * share of shared_head.head; the main model's output is the same, a draft outside is only
   * never made). Default: the whole vocabulary.
   */
  draftVocab?: number;
  /** How the RMSNorms reduce a row (rmsnorm.ts); default the adapter's (chooseRmsNormReduce measures it). */
  normReduce?: RmsNormReduce;
  /** How decode attention reduces its scores (mla_decode.ts); default the adapter's (chooseMlaDecodeReduce measures it). */
  mlaDecodeReduce?: MlaDecodeReduce;
  /** Who runs the router's selection (moe_route.ts); default `thread` (chooseRouteReduce measures it). */
  routeReduce?: RouteReduce;
  /** How the experts passes of 2+ rows (the MTP verify step) read the experts (moe_experts.ts); default per_pair (chooseVerifyExperts measures it). */
  verifyExperts?: ExpertReads;
  /**
   * Decode plans run their RMSNorms inside the GEMVs and their residual adds inside the kernels
   * before them (deepseek_v3.ts); default true. false keeps the separate dispatches, to measure the gain.
   */
  fuseNorms?: boolean;
}

/** The input widths of the FP8 Linears, which the official act_quant needs in whole 128 groups. */
function checkW8a8(c: DeepseekV3Config): void {
  const widths: Record<string, number> = {
    hidden_size: c.hidden_size,
    'num_attention_heads * v_head_dim': c.num_attention_heads * c.v_head_dim,
    intermediate_size: c.intermediate_size,
    moe_intermediate_size: c.moe_intermediate_size,
    ...(c.q_lora_rank === null ? {} : { q_lora_rank: c.q_lora_rank }),
  };
  for (const [key, width] of Object.entries(widths)) {
    if (width % 128 !== 0) {
      throw new UnsupportedConfigError(key, `the W8A8 path quantises activations in groups of 128 (the official act_quant asserts it); ${key} is ${width}: use weight_only numerics`);
    }
  }
  if (c.quantization_config?.scale_fmt === 'ue8m0' && c.q_lora_rank === null) {
    // x would need two roundings: q_proj (a ColumnParallelLinear officially) takes amax / 448, kv_a_proj_with_mqa ue8m0.
    throw new UnsupportedConfigError('quantization_config.scale_fmt', 'ue8m0 with a plain q_proj (q_lora_rank null) is not supported on the W8A8 path: use weight_only numerics');
  }
}

export interface ForwardOptions {
  /** Sample after the last row (generation). */
  sample?: SamplingParams;
  /** 'last': logits of the last row; 'all': of every row (scoring); default none. */
  logits?: LogitRows;
  signal?: AbortSignal;
  /** Applied before sampling after the last row. */
  repetition?: RepetitionInput;
  /** Grammar-constrained sampling after the last row: [ceil(vocab / 32)] u32 allowed-token bits. */
  tokenMask?: Uint32Array<ArrayBuffer>;
  /** Run the MTP module over the same rows (filling its cache rows) and draft the token after the sampled one. */
  mtp?: boolean;
  /** With mtp and no sampling: the id after the last row (the MTP row of the last position needs it). */
  nextId?: number;
  /** With mtp and sampling at temperature > 0: the MTP module's argmax as the draft (default) or a sample of its q ('sampled': verify it with draftRow 1). */
  drafts?: DraftMode;
  /** Read back the experts each MoE layer chose for the rows of the last chunk. */
  routing?: boolean;
}

export type { DraftMode } from './mtp.ts';

export interface VerifyOptions {
  repetition?: RepetitionInput;
  routing?: boolean;
  tokenMask?: Uint32Array<ArrayBuffer>;
  /** How this step's MTP rows draft (as ForwardOptions.drafts). */
  drafts?: DraftMode;
  /**
   * The draft was sampled ('sampled' drafts at temperature > 0): the row of the set's draft
   * distributions holding its q, 1 for the draft of forward() or drafts[1] of a verify, 0 for
   * drafts[0]. ids[0] is then decided by speculative sampling (accepted iff ids[0] === draft, the
   * output distributed as plain sampling); absent, by the greedy-draft rule (ids[0] a sample of p).
   */
  draftRow?: 0 | 1;
}

/** Per MoE layer, [rows, num_experts_per_tok] expert ids. */
export type Routing = Map<number, Uint32Array>;

export interface VerifyResult {
  /** The main model's ids after the current token (with VerifyOptions.draftRow: decided by speculative sampling) and after the draft. */
  ids: [number, number];
  /** The MTP draft for the token after ids[0] (used when the draft was rejected) and after ids[1] (accepted); undefined where the MTP module's logits were not finite. */
  drafts: [number | undefined, number | undefined];
  /** When asked: the experts of both rows (row 1 counts only when the draft was accepted). */
  routing?: Routing;
}

export interface ForwardResult {
  /** The sampled id after the last row. */
  id?: number;
  /** With mtp: the MTP module's draft of the token after `id` (undefined where its logits were not finite). */
  draft?: number;
  /** With options.routing: the last chunk's experts. */
  routing?: Routing;
  /** One row per position asked for. */
  logits?: Float32Array[];
}

/** The work a request will run, so that its plans are made (and their memory checked) before it starts. */
export interface PlannedWork {
  /** Ids to prefill, run in chunks of prefillChunk rows. */
  prefill: number;
  /** As ForwardOptions.logits / mtp of that prefill. */
  logits?: LogitRows;
  mtp?: boolean;
  /** The decode steps after it: one row each ('plain'), or the 2-row speculative step ('verify'). */
  decode?: 'plain' | 'verify';
}

/** One chunk of a prefill: ids[start .. end - 1]. */
export interface Chunk {
  start: number;
  end: number;
  isLast: boolean;
}

/** The plans of one latent cache, made when first needed. */
export interface PlanSet {
  readonly cache: LatentCache;
  /** The plan for `rows` rows (made on first use; with captureRouting when the set was made so). */
  get(rows: number, logitRows: LogitRows, mtp?: 'shifted' | 'sampled'): ForwardPlan;
  /** Destroy the plans (not the cache). */
  destroy(): void;
}

export interface GpuModel {
  readonly config: DeepseekV3Config;
  readonly gpu: Gpu;
  readonly weights: ModelWeights;
  readonly kernels: ModelKernels;
  readonly prefillChunk: number;
  /** The routed experts' CPU stacks and GPU caches, when they are offloaded (LoadedWeights.offload). */
  readonly offload?: ExpertOffload;
  /** A latent cache for `maxT` positions with a slot per main layer (and one for the MTP layer). */
  createCache(maxT: number): LatentCache;
  /** captureRouting (default true): every plan keeps its last step's expert ids (ForwardPlan.readRouting; a few bytes copied per layer). */
  plans(cache: LatentCache, options?: { captureRouting?: boolean }): PlanSet;
  /** The chunks a prefill of `count` ids runs in: prefillChunk rows each, the remainder last. */
  chunks(count: number): Chunk[];
  /** Makes every plan `work` will use (forward and verify take them from the set). */
  preparePlans(set: PlanSet, work: PlannedWork): void;
  /** Runs `ids` at positions startPos .. through the model, chunked; the cache must hold 0 .. startPos - 1. */
  forward(plans: PlanSet, ids: readonly number[], startPos: number, options?: ForwardOptions): Promise<ForwardResult>;
  /**
   * The speculative step: the main model on [current, draft] at startPos, startPos + 1, sampling
   * after each row, then the MTP module on the sampled ids, all in one submit. The caller accepts
   * the draft when ids[0] === draft (then both ids are output) and rolls the cache back otherwise.
   */
  verify(plans: PlanSet, current: number, draft: number, startPos: number, sampling: SamplingParams, options?: VerifyOptions): Promise<VerifyResult>;
  destroy(): void;
}

export function createGpuModel(gpu: Gpu, loaded: LoadedWeights, options: GpuModelOptions = {}): GpuModel {
  const config = loaded.config;
  const prefillChunk = options.prefillChunk ?? DEFAULT_PREFILL_CHUNK;
  if (!(Number.isInteger(prefillChunk) && prefillChunk >= 1)) throw new ArgumentError(`prefillChunk must be a positive integer, got ${prefillChunk}`);
  const pipelineCache = options.pipelineCache ?? new PipelineCache(gpu.device);
  const numerics = options.numerics ?? 'weight_only';
  const draftVocab = options.draftVocab;
  if (draftVocab !== undefined && !(Number.isInteger(draftVocab) && draftVocab >= 1 && draftVocab <= config.vocab_size)) {
    throw new ArgumentError(`draftVocab must be an integer in [1, ${config.vocab_size}] (vocab_size), got ${draftVocab}`);
  }
  if (numerics === 'w8a8') checkW8a8(config);
  const weights = modelWeights(gpu, pipelineCache, loaded);
  let kernels: ModelKernels;
  try {
    kernels = createModelKernels(gpu, pipelineCache, config, options.strategies, numerics, weights.expertWeights, options.normReduce, { mlaDecode: options.mlaDecodeReduce, route: options.routeReduce, verifyExperts: options.verifyExperts });
  } catch (err) {
    weights.destroy();
    throw err;
  }
  const invFreq = uploadBuffer(gpu.device, ropeInvFreq(config), 'rope.inv_freq');
  const cacheLayers = config.num_hidden_layers + (weights.mtp ? 1 : 0);

  const plans = (cache: LatentCache, planOptions: { captureRouting?: boolean } = {}): PlanSet => {
    const made = new Map<string, ForwardPlan>();
    // [2, draft vocab] f32: q of the last sampled drafts, shared by the set's MTP plans (mtp.ts).
    let draftQ: GPUBuffer | undefined;
    return {
      cache,
      get(rows, logitRows, mtp) {
        const key = `${rows}/${logitRows}/${mtp ?? ''}`;
        let plan = made.get(key);
        if (!plan) {
          // Remainder chunks come in every size: keep only a few plans of odd sizes.
          if (made.size >= 6) {
            for (const [k, p] of made) {
              if (p.rows !== 1 && p.rows !== prefillChunk) {
                p.destroy();
                made.delete(k);
                break;
              }
            }
          }
          if (mtp) draftQ ??= gpu.device.createBuffer({ label: 'draft_q', size: 8 * (draftVocab ?? config.vocab_size), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
          made.set(key, (plan = createForwardPlan({ kernels, weights, cache, invFreq, rows, logitRows, captureRouting: planOptions.captureRouting ?? true, mtp, draftVocab, draftQ: mtp ? draftQ : undefined, fuseNorms: options.fuseNorms })));
        }
        return plan;
      },
      destroy() {
        for (const p of made.values()) p.destroy();
        draftQ?.destroy();
        draftQ = undefined;
        made.clear();
      },
    };
  };

  const chunks = (count: number): Chunk[] => {
    const out: Chunk[] = [];
    for (let start = 0; start < count; start += prefillChunk) {
      const end = Math.min(count, start + prefillChunk);
      out.push({ start, end, isLast: end === count });
    }
    return out;
  };
  // Every chunk of a prefill takes the plan of its size: logits of every row when asked for all,
  // else of the last; with MTP, drafting from the next input id.
  const chunkPlan = (set: PlanSet, rows: number, opts: { logits?: LogitRows; mtp?: boolean }) => set.get(rows, opts.logits === 'all' ? 'all' : 'last', opts.mtp ? 'shifted' : undefined);
  const verifyPlan = (set: PlanSet) => set.get(2, 'all', 'sampled');

  return {
    config,
    gpu,
    weights,
    kernels,
    prefillChunk,
    offload: loaded.offload,
    createCache: (maxT) => createLatentCache(gpu.device, config, cacheLayers, maxT),
    plans,
    chunks,
    preparePlans(set, work) {
      for (const rows of new Set(chunks(work.prefill).map((c) => c.end - c.start))) chunkPlan(set, rows, work);
      if (work.decode === 'plain') chunkPlan(set, 1, {});
      if (work.decode === 'verify') verifyPlan(set);
    },
    async forward(set, ids, startPos, opts = {}) {
      if (ids.length === 0) throw new ArgumentError('forward needs at least one token');
      const logits: Float32Array[] = [];
      let id: number | undefined;
      let draft: number | undefined;
      let routing: Routing | undefined;
      for (const { start, end, isLast } of chunks(ids.length)) {
        throwIfAborted(opts.signal);
        const chunk = ids.slice(start, end);
        if (opts.mtp && isLast && !opts.sample && opts.nextId === undefined) throw new ArgumentError('forward with mtp needs the id after the last row: options.sample or options.nextId');
        const plan = chunkPlan(set, chunk.length, opts);
        const wantLogits = opts.logits === 'all' || (isLast && opts.logits === 'last');
        const out = await plan.run({
          ids: chunk,
          startPos: startPos + start,
          sample: isLast ? opts.sample : undefined,
          repetition: opts.repetition,
          tokenMask: isLast ? opts.tokenMask : undefined,
          readLogits: wantLogits,
          nextId: !opts.mtp ? undefined : isLast ? (opts.sample ? undefined : opts.nextId) : ids[end],
          drafts: opts.drafts,
        });
        if (out.drafts && isLast) draft = usableDraft(out.drafts[out.drafts.length - 1]);
        if (opts.routing && isLast) routing = await plan.readRouting();
        if (out.logits) {
          const rows = out.logits.length / config.vocab_size;
          for (let r = 0; r < rows; r++) logits.push(out.logits.subarray(r * config.vocab_size, (r + 1) * config.vocab_size));
        }
        if (out.ids) id = out.ids[out.ids.length - 1];
      }
      return { id, draft, routing, logits: opts.logits ? logits : undefined };
    },
    async verify(set, current, draft, startPos, sampling, verifyOptions = {}) {
      const plan = verifyPlan(set);
      const { repetition, tokenMask, drafts, draftRow } = verifyOptions;
      const out = await plan.run({ ids: [current, draft], startPos, sample: sampling, repetition, tokenMask, drafts, draftRow });
      const routing = verifyOptions.routing ? await plan.readRouting() : undefined;
      return { ids: [out.ids![0], out.ids![1]], drafts: [usableDraft(out.drafts![0]), usableDraft(out.drafts![1])], routing };
    },
    destroy() {
      weights.destroy();
      invFreq.destroy();
    },
  };
}

/**
 * A draft of the MTP module, or undefined where its logits were not finite (a broken MTP layer
 * in a checkpoint whose main model is sound): the request then decodes without speculation, with
 * the same output, instead of failing.
 */
function usableDraft(id: number): number | undefined {
  return id === NON_FINITE_ID ? undefined : id;
}

/**
 * The variants the engine measures on this adapter, once per adapter and remembered in `store`
 * (variant_choice.ts): the norms' reduction at the model's width (subgroups where the device has
 * them and they win), the GEMV strategy of a decode step (FP8, the format most of its bytes
 * are in), decode attention's reduction at the model's head widths and the router's selection
 * with its keys (both subgroups where the device has them and they win), and, with an MTP
 * module, how the verify step's 2-row experts passes read the experts (each one once where that wins).
 */
export async function measuredVariants(gpu: Gpu, pipelines: PipelineCache, config: DeepseekV3Config, store: VariantStore): Promise<Pick<GpuModelOptions, 'normReduce' | 'strategies' | 'mlaDecodeReduce' | 'routeReduce' | 'verifyExperts'>> {
  const ctx = { gpu, pipelines };
  const normReduce = await chooseRmsNormReduce(ctx, store, { width: config.hidden_size });
  const gemv = await chooseGemvStrategy(ctx, store, { weights: 'fp8' });
  const mlaDecodeReduce = await chooseMlaDecodeReduce(ctx, store, {
    heads: config.num_attention_heads, kvLoraRank: config.kv_lora_rank, ropeDim: config.qk_rope_head_dim, qkNopeHeadDim: config.qk_nope_head_dim, vHeadDim: config.v_head_dim,
  });
  const routeReduce = await chooseRouteReduce(ctx, store, config);
  const verifyExperts = config.num_nextn_predict_layers > 0
    ? await chooseVerifyExperts(ctx, store, { hidden_size: config.hidden_size, moe_intermediate_size: config.moe_intermediate_size, shared_intermediate_size: config.n_shared_experts * config.moe_intermediate_size, router: config }, { routeReduce })
    : undefined;
  return { normReduce, strategies: { gemv }, mlaDecodeReduce, routeReduce, verifyExperts };
}
