// What a model will take on the GPU, from config.json and the safetensors headers alone (nothing
// is downloaded): the weights as the loader lays them out (after quantisation at load, split at the
// binding limit), one session's latent cache at the context asked, and the working buffers of its
// plans. checkMemoryPlan refuses, before the download, a plan that cannot run: a buffer over the
// GPU's limits, or more bytes than the budget given, saying what would fit.

import type { DeepseekV3Config } from '../config.ts';
import { GpuLimitError, GpuOutOfMemoryError } from '../errors.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import { activationBytes } from './activations.ts';
import { moeLayerIndices, placeWeights, tensorsOnGpu, type ExpertStoreKind, type WeightMode } from './load_weights.ts';
import { expertCacheBytes, hostStackBytes, offloadLayout, slotsWithinBinding, splitOffloaded } from './expert_offload.ts';
import { latentCacheBytes } from './kv_cache.ts';
import { placedBytes } from './placement.ts';
import { expectedTensors } from './weights.ts';

export interface MemoryPlanInput {
  config: DeepseekV3Config;
  /** The checkpoint's tensors, from its headers. */
  tensors: readonly TensorInfo[];
  weights: WeightMode;
  /** Positions of one session's latent cache. */
  maxContext: number;
  /** Rows of a prefill chunk (the largest plan). */
  prefillChunk: number;
  /** What all sessions' latent caches may hold together. */
  cacheBudgetBytes: number;
  /** The binding limit the load plans with (plannedBindingLimit). */
  bindingLimit: number;
  maxBufferSize: number;
  /** Skip the MTP layer (it is loaded unless speculative decoding is off). */
  skipMtp?: boolean;
  /** The checkpoint, for error messages. */
  where?: string;
  /** Routed experts offloaded to CPU memory, this many per MoE layer in a GPU cache (src/model/expert_offload.ts). */
  expertSlots?: number;
  /** Where they are kept: 'checkpoint' holds nothing in CPU memory (load_weights.ts). */
  expertStore?: ExpertStoreKind;
}

export interface MemoryPlan {
  weights: WeightMode;
  /** The weight buffers, as the loader lays them out. */
  weightBytes: number;
  /** Buffers that are pieces of a tensor split at the binding limit. */
  weightPieces: number;
  /** With expertSlots: the slots per layer, the GPU caches' bytes (in weightBytes) and the CPU stacks' bytes. */
  offload?: { expertSlots: number; cacheBytes: number; hostBytes: number };
  /** One session's latent cache at maxContext (each layer's rows 256-byte aligned, as kv_cache.ts lays them out). */
  sessionCacheBytes: number;
  /** The layers it caches and the f32 values per position of each. */
  cacheLayers: number;
  cacheValuesPerPosition: number;
  cacheBudgetBytes: number;
  /** One session's plans: a prefill chunk with every row's logits, the 2-row verify step, decode; the MTP module's too. */
  activationBytes: number;
  /** The largest working buffer, by name, with its bytes. */
  largestActivation: { name: string; bytes: number };
  /** Weights, plans and one full session's cache: what one session at maxContext needs. */
  oneSessionBytes: number;
  /** Weights, plans and the whole cache budget in use. */
  fullBudgetBytes: number;
}

/** Lays the weights out as the loader does (a GpuLimitError for a tensor that cannot be split small enough). */
export function planMemory(input: MemoryPlanInput): MemoryPlan {
  const c = input.config;
  const mtpPrefix = c.mtp_layer_index === null ? undefined : `model.layers.${c.mtp_layer_index}.`;
  const hasMtp = mtpPrefix !== undefined && !input.skipMtp;
  const wanted = input.tensors.filter((t) => hasMtp || !(mtpPrefix && t.name.startsWith(mtpPrefix)));
  const { onGpu: all } = tensorsOnGpu(wanted, expectedTensors(c), input.weights);
  const slots = input.expertSlots;
  const { resident: onGpu, offloaded } = slots === undefined ? { resident: all, offloaded: [] } : splitOffloaded(all, moeLayerIndices(c, hasMtp));
  const layout = offloadLayout(offloaded);
  if (slots !== undefined && offloaded.length > 0 && slotsWithinBinding(layout, input.bindingLimit) < slots) {
    throw new GpuLimitError(`${input.where ?? 'the model'}: a cache of ${slots} experts per layer needs buffers over the largest storage binding webmoe plans with (${mib(input.bindingLimit)}); at most ${slotsWithinBinding(layout, input.bindingLimit)} fit`);
  }
  const offload = slots === undefined || offloaded.length === 0 ? undefined : { expertSlots: slots, cacheBytes: expertCacheBytes(layout, slots), hostBytes: input.expertStore === 'checkpoint' ? 0 : hostStackBytes(layout) };
  const placed = placeWeights(onGpu, input.bindingLimit, input.where);
  const weightBytes = placedBytes(placed) + (offload?.cacheBytes ?? 0);
  // The most pieces one expert stack is split into (ModelWeights.expertRanges): it sizes the scratch.
  const rangesOf = new Map<string, number>();
  for (const wb of placed) if (wb.piece && wb.slotBytes) rangesOf.set(wb.piece.of, (rangesOf.get(wb.piece.of) ?? 0) + 1);
  const expertRanges = Math.max(offload ? 2 : 1, ...rangesOf.values()); // offloaded layers keep y per pair

  const cacheLayers = c.num_hidden_layers + (hasMtp ? 1 : 0);
  const sessionCacheBytes = latentCacheBytes(c, cacheLayers, input.maxContext);
  // The plans a session keeps: every row's logits for a prefill chunk (engine.logits), the
  // verify step and decode; the MTP module has plans of its own for the same rows.
  let activations = 0;
  let largestActivation = { name: '', bytes: 0 };
  for (const rows of new Set([input.prefillChunk, 2, 1])) {
    const buffers = { ...activationBytes(c, rows, expertRanges), logits: 4 * rows * c.vocab_size };
    for (const [name, bytes] of Object.entries(buffers)) {
      activations += (hasMtp ? 2 : 1) * bytes;
      if (bytes > largestActivation.bytes) largestActivation = { name: `${name} of a ${rows}-row plan`, bytes };
    }
  }
  return {
    weights: input.weights,
    weightBytes,
    weightPieces: placed.filter((wb) => wb.piece).length,
    offload,
    sessionCacheBytes,
    cacheLayers,
    cacheValuesPerPosition: c.latent_cache_dim,
    cacheBudgetBytes: input.cacheBudgetBytes,
    activationBytes: activations,
    largestActivation,
    oneSessionBytes: weightBytes + activations + sessionCacheBytes,
    fullBudgetBytes: weightBytes + activations + Math.max(sessionCacheBytes, input.cacheBudgetBytes),
  };
}

/**
 * The most routed experts per MoE layer a GPU cache may hold with the plan within `budgetBytes`
 * (weights, plans and one session's cache), the rest in CPU memory; undefined when not even one
 * per layer fits, or the model has no MoE layer.
 */
export function expertSlotsFor(input: Omit<MemoryPlanInput, 'expertSlots'>, budgetBytes: number): number | undefined {
  const fits = (expertSlots: number) => {
    try {
      const plan = planMemory({ ...input, expertSlots });
      return plan.offload !== undefined && plan.oneSessionBytes <= budgetBytes;
    } catch (err) {
      if (err instanceof GpuLimitError) return false; // a cache buffer over the binding limit
      throw err;
    }
  };
  if (!fits(1)) return undefined;
  let lo = 1; // fits
  let hi = input.config.n_routed_experts + 1; // does not fit (or past the experts)
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

export interface MemoryLimits {
  /** The GPU's largest storage binding, which every working buffer must fit. */
  bindingLimit: number;
  maxBufferSize: number;
  /** Bytes the model may take on the GPU in all (weights, one session's cache, plans); none by default. */
  budgetBytes?: number;
}

/**
 * Throws, before anything is downloaded: GpuLimitError for a latent cache or working buffer over
 * the GPU's limits, GpuOutOfMemoryError for a plan over the budget. Each says what would fit.
 * `alternative`: the plan with fp8 weights, when the release is BF16 and bf16 was asked.
 */
export function checkMemoryPlan(plan: MemoryPlan, limits: MemoryLimits, where: string, alternative?: MemoryPlan, oneSlot?: MemoryPlan): void {
  // The most positions whose cache fits in `bytes`: layers * alignUp(4 * T * width, 256) <= bytes.
  const positionsIn = (bytes: number) => Math.max(0, Math.floor((Math.floor(bytes / plan.cacheLayers / 256) * 256) / (4 * plan.cacheValuesPerPosition)));
  if (plan.sessionCacheBytes > limits.maxBufferSize) {
    throw new GpuLimitError(
      `${where}: a session's latent cache of ${mib(plan.sessionCacheBytes)} is over this GPU's largest buffer (${mib(limits.maxBufferSize)} maxBufferSize); a context of at most ${positionsIn(limits.maxBufferSize)} positions fits (maxContext / --max-context)`,
    );
  }
  if (plan.largestActivation.bytes > limits.bindingLimit) {
    throw new GpuLimitError(
      `${where}: the ${plan.largestActivation.name} needs ${mib(plan.largestActivation.bytes)}, over the largest storage binding (${mib(limits.bindingLimit)}); use a smaller prefillChunk`,
    );
  }
  const budget = limits.budgetBytes;
  if (budget === undefined || plan.oneSessionBytes <= budget) return;
  const experts = plan.offload ? ` with ${plan.offload.expertSlots} routed experts per layer on the GPU (${mib(plan.offload.cacheBytes)}), the rest in CPU memory` : '';
  const parts = `weights ${mib(plan.weightBytes)} (${plan.weights})${experts}, a session's latent cache ${mib(plan.sessionCacheBytes)}, plans ${mib(plan.activationBytes)}`;
  const fits: string[] = [];
  const room = budget - plan.weightBytes - plan.activationBytes;
  if (positionsIn(room) >= 2) fits.push(`a context of ${positionsIn(room)} positions (maxContext / --max-context)`);
  if (alternative && alternative.oneSessionBytes <= budget) fits.push(`weights 'fp8' (--weights fp8: ${mib(alternative.oneSessionBytes)} in all)`);
  // (when one expert per layer fits, the engine offloads instead of refusing: oneSlot is then over the budget too)
  const offloaded = oneSlot ? `; even with the routed experts in CPU memory and one per layer on the GPU it needs ${mib(oneSlot.oneSessionBytes)}` : '';
  throw new GpuOutOfMemoryError(
    `${where}: the model needs ${mib(plan.oneSessionBytes)} on the GPU (${parts}), over the budget of ${mib(budget)}${offloaded}; ${fits.length ? `what would fit: ${fits.join(', or ')}` : 'no context fits: the weights and plans alone are over it'}`,
  );
}

function mib(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}
