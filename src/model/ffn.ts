// One layer's feed-forward block on the GPU (src/model/MATH.md 4.5-4.6), input acts.x, output
// acts.ffnOut:
//   dense layers:  mlp(x) = down(silu(gate(x)) * up(x))                         2 dispatches (decode)
//   MoE layers:    the router gate (a Linear) -> logits; then one experts call
//                  (src/kernels/moe_experts.ts): the routed gate_up and down passes each run the
//                  router's selection (sigmoid, bias, group-limited top-k) for their token, index
//                  the experts by its ids (no readback) and take the shared experts as more rows:
//                  the down sums the routed experts, then adds the shared ones   3 dispatches (decode)
//                  (prefill and split expert stacks: moe_route first; W8A8, adapters binding fewer
//                  than 12 storage buffers or shared experts of another width: the shared experts
//                  as an MLP whose down adds into ffnOut)
//   offloaded experts (src/model/expert_offload.ts): the gate and moe_route here; the experts over
//                  the layer's cache (prepareSlots) run after the step reads the ids back.
// The official MoE.forward returns y + z (routed + shared), added to the residual afterwards.
// With `residual` (decode plans, layer.ts) the input is the residual stream h: the router gate's GEMV
// applies post_attention_layernorm in its prologue and writes the normed x for the experts (a dense
// layer: an RMSNorm dispatch), and the last down pass adds the output into h where it writes the
// whole sum in one store; otherwise the output goes to ffnOut for the layer to add.

import type { DeepseekV3Config } from '../config.ts';
import type { PreparedCall } from '../gpu/kernel.ts';
import type { ExpertRange, MlpWeights } from '../kernels/moe_experts.ts';
import type { Activations } from './activations.ts';
import type { ExpertCache } from './expert_offload.ts';
import type { LayerWeights } from './gpu_weights.ts';
import type { ModelKernels } from './model_kernels.ts';

/** All experts in one set of buffers, or the expert ranges of a stack split over several. */
function expertWeights(ranges: readonly ExpertRange[]): { weights: MlpWeights } | { ranges: readonly ExpertRange[] } {
  return ranges.length === 1 ? { weights: ranges[0].weights } : { ranges };
}

/**
 * An offloaded MoE layer's experts (src/model/expert_offload.ts): after the FFN's calls (router gate
 * and selection) the step reads the ids back, runs `pass` once per set of experts made resident
 * (slot ids in acts.topkSlots), then `finish` (sum, shared experts).
 */
export interface OffloadedExperts {
  cache: ExpertCache;
  /** tokens * num_experts_per_tok: the ids read back. */
  pairs: number;
  /** The shared experts, written into ffnOut first: they need no routing, so they run during the readback. */
  shared?: PreparedCall;
  pass: PreparedCall;
  finish: PreparedCall;
}

export interface PreparedFfn {
  calls: PreparedCall[];
  offloaded?: OffloadedExperts;
  /** The output is in acts.ffnOut, for the layer to add to h (false: added into acts.h already). */
  inFfnOut: boolean;
}

/**
 * The calls of one layer's FFN, in order, for one compute pass; an offloaded layer's experts apart.
 * `residual`: the input is acts.h (see the top of this file).
 */
export function prepareFfn(k: ModelKernels, c: DeepseekV3Config, w: LayerWeights, acts: Activations, label: string, residual = false): PreparedFfn {
  const calls: PreparedCall[] = [];
  try {
    if (residual) return { calls, ...prepareResidualFfn(k, c, w, acts, label, calls) };
    const offloaded = prepareFfnCalls(k, c, w, acts, label, calls);
    return { calls, offloaded, inFfnOut: true };
  } catch (err) {
    for (const call of calls) call.destroy();
    throw err;
  }
}

function prepareFfnCalls(k: ModelKernels, c: DeepseekV3Config, w: LayerWeights, acts: Activations, label: string, calls: PreparedCall[]): OffloadedExperts | undefined {
  const T = acts.rows;
  const d = c.hidden_size;
  // w8a8: the experts' input rounded in place, after the router (a bf16 Linear) has read it
  // (FP8 experts only: BF16 weights take their input as it is).
  const roundX = () => {
    if (k.actRound && k.expertWeights === 'fp8') calls.push(k.actRound.prepare({ M: T, K: d, x: acts.x, label: `${label}.x.act_quant` }));
  };
  if (w.mlp) {
    roundX();
    calls.push(k.mlp.prepare({ tokens: T, hidden_size: d, intermediate_size: c.intermediate_size, x: acts.x, weights: w.mlp, h: acts.mlpH, out: acts.ffnOut, label: `${label}.mlp` }));
    return undefined;
  }
  const moe = w.moe!;
  calls.push(k.linear.prepare(moe.gate, { M: T, x: acts.x, y: acts.routerLogits, label: `${label}.gate` }));
  // Routed experts are plain Linears officially (the config's scale_fmt), shared experts parallel
  // ones (amax / 448): with ue8m0 the routed experts get their own rounded copy of x.
  const xRouted = k.actRound && k.expertWeights === 'fp8' && acts.xRouted && k.actRoundScaleFmt !== k.actRound ? acts.xRouted : undefined;
  if (xRouted) calls.push(k.actRoundScaleFmt!.prepare({ M: T, K: d, x: acts.x, rounded: xRouted, label: `${label}.x_routed.act_quant` }));
  roundX();
  const shared = moe.shared_experts && { x: acts.x, intermediate_size: c.n_shared_experts * c.moe_intermediate_size, weights: moe.shared_experts, h: acts.mlpH };
  const router = { config: c, logits: acts.routerLogits, bias: moe.e_score_correction_bias };
  if (moe.cache) {
    calls.push(k.route.prepare({ tokens: T, ...router, topkIds: acts.topkIds, topkWeights: acts.topkWeights, label: `${label}.route` }));
    const { shared: sharedCall, pass, finish } = k.experts.prepareSlots({
      tokens: T, hidden_size: d, moe_intermediate_size: c.moe_intermediate_size, slots: moe.cache.slots, num_experts_per_tok: c.num_experts_per_tok,
      x: xRouted ?? acts.x, slotIds: acts.topkSlots, topkWeights: acts.topkWeights, weights: moe.cache.weights, shared, scratch: acts.moeScratch, out: acts.ffnOut, label: `${label}.experts`,
    });
    return { cache: moe.cache, pairs: T * c.num_experts_per_tok, shared: sharedCall, pass, finish };
  }
  calls.push(
    k.experts.prepare({
      tokens: T, hidden_size: d, moe_intermediate_size: c.moe_intermediate_size, n_routed_experts: c.n_routed_experts, num_experts_per_tok: c.num_experts_per_tok,
      router,
      x: xRouted ?? acts.x, topkIds: acts.topkIds, topkWeights: acts.topkWeights, ...expertWeights(moe.experts), shared, scratch: acts.moeScratch, out: acts.ffnOut, label: `${label}.experts`,
    }),
  );
  return undefined;
}

/** The FFN of a decode plan reading the residual stream (weight_only numerics: nothing is rounded). */
function prepareResidualFfn(k: ModelKernels, c: DeepseekV3Config, w: LayerWeights, acts: Activations, label: string, calls: PreparedCall[]): Omit<PreparedFfn, 'calls'> {
  const T = acts.rows;
  const d = c.hidden_size;
  const postNorm = w.attention.post_attention_layernorm;
  if (w.mlp) {
    calls.push(k.rmsnorm.prepare({ rows: T, width: d, eps: c.rms_norm_eps, x: acts.h, weight: postNorm, y: acts.x, label: `${label}.post_attention_layernorm` }));
    calls.push(k.mlp.prepare({ tokens: T, hidden_size: d, intermediate_size: c.intermediate_size, x: acts.x, weights: w.mlp, h: acts.mlpH, out: acts.h, accumulate: true, label: `${label}.mlp` }));
    return { inFfnOut: false };
  }
  const moe = w.moe!;
  // the gate reads RMSNorm(h) in its GEMV and leaves it in acts.x for the experts
  calls.push(k.linear.prepare(moe.gate, { M: T, x: acts.h, norm: { weight: postNorm, eps: c.rms_norm_eps, xNormed: acts.x }, y: acts.routerLogits, label: `${label}.gate` }));
  const shared = moe.shared_experts && { x: acts.x, intermediate_size: c.n_shared_experts * c.moe_intermediate_size, weights: moe.shared_experts, h: acts.mlpH };
  const router = { config: c, logits: acts.routerLogits, bias: moe.e_score_correction_bias };
  if (moe.cache) {
    calls.push(k.route.prepare({ tokens: T, ...router, topkIds: acts.topkIds, topkWeights: acts.topkWeights, label: `${label}.route` }));
    const { shared: sharedCall, pass, finish } = k.experts.prepareSlots({
      tokens: T, hidden_size: d, moe_intermediate_size: c.moe_intermediate_size, slots: moe.cache.slots, num_experts_per_tok: c.num_experts_per_tok,
      x: acts.x, slotIds: acts.topkSlots, topkWeights: acts.topkWeights, weights: moe.cache.weights, shared, scratch: acts.moeScratch, out: acts.ffnOut, label: `${label}.experts`,
    });
    return { offloaded: { cache: moe.cache, pairs: T * c.num_experts_per_tok, shared: sharedCall, pass, finish }, inFfnOut: true };
  }
  const args = {
    tokens: T, hidden_size: d, moe_intermediate_size: c.moe_intermediate_size, n_routed_experts: c.n_routed_experts, num_experts_per_tok: c.num_experts_per_tok,
    router, x: acts.x, topkIds: acts.topkIds, topkWeights: acts.topkWeights, ...expertWeights(moe.experts), shared, scratch: acts.moeScratch, out: acts.ffnOut, label: `${label}.experts`,
  };
  // h += routed + shared in the down pass's one store where it writes the whole sum
  const intoH = k.experts.sumsInOnePass(args);
  calls.push(k.experts.prepare(intoH ? { ...args, out: acts.h, accumulate: true } : args));
  return { inFfnOut: !intoH };
}
