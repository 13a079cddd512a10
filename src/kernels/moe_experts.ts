// The routed experts of a MoE layer, and the plain SwiGLU MLP (dense layers, shared experts), on
// block-scaled FP8 or bf16 weights: pipelines, params, bind groups, dispatches, bytes/FLOPs.
// Shaders: moe_experts_gate_up.wgsl, moe_experts_down.wgsl, moe_combine.wgsl (+ moe_group.wgsl via
// moe_group.ts, moe_route via moe_route.ts); reference: moe_experts.ref.ts. Expert ids and weights
// stay in GPU buffers: nothing is read back.
//
//   decode  (T <= 4)  gate_up over the T * topk (token, expert) pairs -> h; down sums the pairs of
//                     each token, weighted, into out. Two dispatches.
//   + router          (args.router) decode over one set of buffers: both passes run the router's
//                     selection for their token (decode_route; moe_route_common.wgsl, moe_route's
//                     code), and the down writes topk_ids / topk_weights: no moe_route dispatch.
//                     Grouped (moe_group needs the ids first) and expert ranges: moe_route first.
//   + shared experts  (args.shared) with the router in the passes, the shared experts' inter width
//                     the routed ones', whole weights, no W8A8 rounding of h, and an adapter that
//                     binds the gate_up's 12 storage buffers (fp8 with a bias; 8 for bf16): T more
//                     rows of the gate_up (h rows T * topk + t), whose down the down pass adds
//                     after the routed sum (the official y + z). A whole MoE layer after the
//                     router gate is then 2 dispatches. Otherwise they run as the MLP below with
//                     its down adding into out (ACCUMULATE), after the routed passes.
//   + reads per_expert (options.expertReads, T >= 2: the MTP verify step) the same two passes,
//                     each invocation also selecting for the other tokens, so that each expert
//                     the tokens chose is read once per column tile, not once per pair: an expert
//                     both rows of a verify step chose, and the shared experts, are read once
//                     (moe_experts_union.wgsl). The same ids, weights and out, bit for bit; which
//                     is faster is measured at load (variant_choice.ts chooseVerifyExperts).
//   grouped (prefill) moe_group sorts the pairs by expert; gate_up and down run over each expert's
//                     rows so its weights are read once per 4 rows -> y per pair; moe_combine
//                     weighs and adds each token's pairs. Four dispatches.
//   expert ranges     a stack split over several buffers (ExpertRange: a browser's binding limit):
//                     gate_up and down run once per range over the pairs of its experts, binding
//                     its buffers; decode's down then writes y per pair (decode_pairs) and
//                     moe_combine sums it in the same order, so the out equals the unsplit one bit
//                     for bit. Decode: 2 * ranges + 1 dispatches; grouped: 2 * ranges + 2. One
//                     range is the unsplit call.
//   expert slots      (prepareSlots) the experts of a GPU expert cache (src/model/expert_offload.ts),
//                     ids in slot space: `pass` is the decode (gate_up, decode_pairs) or grouped
//                     passes over one range of S slots, skipping pairs whose slot id is >= S, run
//                     once per set of resident experts; `finish` is moe_combine and the shared
//                     experts as an MLP: the split ranges' arithmetic, so the same out bit for bit.
//   MLP               a dense MLP or the merged shared experts, as a one-expert stack: for T <= 4
//                     the decode kernels with every token choosing expert 0 at weight 1; for more,
//                     the grouped kernels with every token its row (no combine).
// One strategy for now: one invocation per 4 output columns, no barrier (chosen for CPU adapters;
// a tiled GPU variant is future work).

import commonSource from '../../shaders/moe_experts_common.wgsl?raw';
import combineSource from '../../shaders/moe_combine.wgsl?raw';
import downSource from '../../shaders/moe_experts_down.wgsl?raw';
import gateUpSource from '../../shaders/moe_experts_gate_up.wgsl?raw';
import unionSource from '../../shaders/moe_experts_union.wgsl?raw';
import fp8Source from '../../shaders/fp8_e4m3.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { align4 } from '../gpu/buffers.ts';
import { BLOCK, checkBindings, checkCounts, createBindGroup, dispatch, kernelPipeline, preparedCall, Uniforms, type BindingNeeds, type Cost, type Encodable, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import type { CachedPipeline } from '../gpu/pipeline_cache.ts';
import type { WgslSource } from '../gpu/shader_compose.ts';
import { createActRound, type ActScaleFormat } from './act_quant.ts';
import type { WeightFormat } from './matmul_operands.ts';
import { createMoeGroup } from './moe_group.ts';
import { createMoeRoute, moeRouteCost, prepareRouteParams, resolveRouteReduce, ROUTE_REDUCES, ROUTE_SNIPPET, ROUTINGS, type RouteReduce, type RouterInputs, type Routing } from './moe_route.ts';

export const MOE_PATHS = ['decode', 'grouped'] as const;
export type MoePath = (typeof MOE_PATHS)[number];

/**
 * How the expert weights are stored: block-scaled e4m3 with weight_scale_inv (the FP8 release),
 * or bf16 without scales (a bf16 checkpoint's experts, kept bf16 on the GPU).
 */
export const EXPERT_WEIGHT_FORMATS = ['fp8', 'bf16'] as const satisfies readonly WeightFormat[];
export type ExpertWeightFormat = (typeof EXPERT_WEIGHT_FORMATS)[number];

/** Bytes of one stored weight element. */
const WEIGHT_BYTES: Record<ExpertWeightFormat, number> = { fp8: 1, bf16: 2 };

/** The most tokens the decode path takes by default (the current token plus MTP drafts). */
export const MOE_DECODE_MAX_TOKENS = 4;

/**
 * How the decode passes that route read the experts of T >= 2 tokens (moe_experts_gate_up.wgsl's
 * axis `reads`): once per (token, expert) pair, or once per distinct expert (and the shared
 * experts once), each invocation then selecting for all T tokens. The same bits either way;
 * chooseVerifyExperts (variant_choice.ts) measures which is faster on an adapter.
 */
export const EXPERT_READS = ['per_pair', 'per_expert'] as const;
export type ExpertReads = (typeof EXPERT_READS)[number];

/** per_expert keeps T * topk picks per invocation (MAX_PAIRS of moe_experts_union.wgsl); more run per_pair. */
export const MAX_UNION_PAIRS = 32;

const ROWS_PER_TILE = 4; // rows of one expert per invocation in the grouped kernels (a vec4)
const COLUMNS_PER_INVOCATION = 4; // output columns per invocation, both paths (a vec4)
const SNIPPETS: readonly WgslSource[] = [
  { name: 'fp8_e4m3.wgsl', code: fp8Source },
  { name: 'moe_experts_common.wgsl', code: commonSource },
];

/** One projection: for routed experts the stacked buffers of src/model/placement.ts. */
export interface ExpertProjection {
  /**
   * fp8: e4m3 bytes, expert e's [rows, cols] at byte e * align4(rows * cols).
   * bf16: bf16, 2 per u32 (low half the even element), expert e's [rows, cols] at byte e * align4(2 * rows * cols).
   */
  weight: GPUBuffer;
  /** fp8 only: f32, expert e's [ceil(rows/128), ceil(cols/128)] at element e * ceil(rows/128) * ceil(cols/128). */
  weight_scale_inv?: GPUBuffer;
}

/** An fp8 projection: its block scales are required. */
export type FP8Projection = ExpertProjection & { weight_scale_inv: GPUBuffer };

/** The format of every projection is the kernel's (MoeExpertsOptions.weights). */
export interface MlpWeights {
  /** [moe_intermediate_size, hidden_size] per expert. */
  gate_proj: ExpertProjection;
  /** [moe_intermediate_size, hidden_size] per expert. */
  up_proj: ExpertProjection;
  /** [hidden_size, moe_intermediate_size] per expert. */
  down_proj: ExpertProjection;
}

/** A row band of an MLP projection: rows first .. first + rows - 1 of the [n, k] matrix. */
export interface ProjectionBand extends ExpertProjection {
  first: number;
  rows: number;
}

/**
 * An MLP whose projections are split by rows over several buffers (src/model/placement.ts, a
 * browser's binding limit): each projection's bands in order, contiguous, covering its rows; fp8
 * bands start on a 128-row scale block. gate_proj and up_proj have the same bands (one gate_up
 * dispatch per band writes those columns of h); down_proj's bands write columns of out.
 */
export interface MlpBands {
  gate_proj: readonly ProjectionBand[];
  up_proj: readonly ProjectionBand[];
  down_proj: readonly ProjectionBand[];
}

export interface MoeExpertsShape {
  tokens: number;
  hidden_size: number;
  moe_intermediate_size: number;
  n_routed_experts: number;
  num_experts_per_tok: number;
}

/**
 * The routed experts first .. first + count - 1 of a stack split over several buffers: each
 * projection holds `count` slots laid out as a whole stack's (slot e - first at byte
 * (e - first) * align4(bytes of one expert); fp8 scales of slot e - first at element
 * (e - first) * ceil(rows/128) * ceil(cols/128)).
 */
export interface ExpertRange {
  first: number;
  count: number;
  weights: MlpWeights;
}

/**
 * The expert weights of a call, exactly one of: `weights`, every expert in one set of buffers; or
 * `ranges`, in order, contiguous, covering 0 .. n_routed_experts - 1 (one range is `weights`).
 */
export type MoeExpertsWeights = { weights: MlpWeights; ranges?: undefined } | { ranges: readonly ExpertRange[]; weights?: undefined };

export type MoeExpertsArgs = MoeExpertsCallArgs & MoeExpertsWeights;

/** The shared experts of a MoE layer, added after the routed sum (out = routed + shared: the official y + z). */
export interface SharedExperts {
  /** Their input; default the call's x (W8A8 rounds the routed and the shared input apart: src/model/ffn.ts). */
  x?: GPUBuffer;
  /** n_shared_experts * moe_intermediate_size. */
  intermediate_size: number;
  /** Each projection in one buffer, or split in row bands. */
  weights: MlpWeights | MlpBands;
  /** [tokens, intermediate_size] f32 work buffer, for when they run as an MLP that adds into out. */
  h: GPUBuffer;
}

/** A router selection that runs inside the decode passes: its variant, its RouteParams uniform, its inputs. */
interface PreparedRoute {
  routing: Routing;
  uniforms: Uniforms;
  logits: GPUBuffer;
  bias?: GPUBuffer;
}

/** The arguments of a call but its weights. */
export interface MoeExpertsCallArgs extends MoeExpertsShape {
  /** Default: decode for tokens <= MOE_DECODE_MAX_TOKENS, else grouped. */
  path?: MoePath;
  /** [tokens, hidden_size] f32 (after post_attention_layernorm). */
  x: GPUBuffer;
  /** [tokens, num_experts_per_tok] u32 from moe_route, or written by the call when it has `router`. */
  topkIds: GPUBuffer;
  /** [tokens, num_experts_per_tok] f32 from moe_route, or written by the call when it has `router`. */
  topkWeights: GPUBuffer;
  /**
   * The router's selection (sigmoid + bias, group limit, top-k) from the gate's logits, run by the
   * call: inside the decode passes over one set of buffers (no moe_route dispatch), else as
   * moe_route before the experts. Its config's n_routed_experts and num_experts_per_tok are the call's.
   */
  router?: RouterInputs;
  /**
   * The shared experts, added after the routed sum: as more rows of the decode passes that route
   * (see the file's comment for when), else as an MLP whose down adds into out.
   */
  shared?: SharedExperts;
  /** Work buffers, sized by moeExpertsScratchBytes (shared by the layers of a plan). */
  scratch: MoeExpertsScratch;
  /** [tokens, hidden_size] f32, written: sum over k of topk_weights * Expert(x). */
  out: GPUBuffer;
  /**
   * out += the sum (routed + shared) in one addition, instead of storing it: the residual stream
   * as out (decode plans). Only where the down pass writes the whole sum (MoeExperts.sumsInOnePass);
   * elsewhere an ArgumentError.
   */
  accumulate?: boolean;
  label?: string;
}

export interface MoeExpertsScratch {
  /** [tokens * topk, moe_intermediate_size] f32; decode: [tokens * (topk + 1), ...], the shared experts' rows after the pairs'. */
  h: GPUBuffer;
  /** grouped, decode over several expert ranges and prepareSlots: [tokens * topk, hidden_size] f32, each pair's expert output. */
  y?: GPUBuffer;
  /** grouped: [n_routed_experts + 1] u32. */
  expertOffsets?: GPUBuffer;
  /** grouped: [tokens * topk] u32. */
  sortedPairs?: GPUBuffer;
}

export interface MlpArgs {
  tokens: number;
  hidden_size: number;
  /** intermediate_size (dense), or n_shared_experts * moe_intermediate_size (shared experts). */
  intermediate_size: number;
  x: GPUBuffer;
  /** Each projection in one buffer, or split in row bands. */
  weights: MlpWeights | MlpBands;
  /** [tokens, intermediate_size] f32 work buffer. */
  h: GPUBuffer;
  /** [tokens, hidden_size] f32, written. */
  out: GPUBuffer;
  /** out += mlp(x) instead (the residual stream as out); default false. */
  accumulate?: boolean;
  label?: string;
}

/**
 * Byte sizes of the scratch buffers of a path (0: not used), for calls over at most `ranges`
 * expert ranges (default 1: unsplit; decode over more needs y).
 */
export function moeExpertsScratchBytes(shape: MoeExpertsShape, path: MoePath, ranges = 1): Required<Record<keyof MoeExpertsScratch, number>> {
  const pairs = shape.tokens * shape.num_experts_per_tok;
  const grouped = path === 'grouped';
  return {
    h: 4 * (grouped ? pairs : pairs + shape.tokens) * shape.moe_intermediate_size,
    y: grouped || ranges > 1 ? 4 * pairs * shape.hidden_size : 0,
    expertOffsets: grouped ? 4 * (shape.n_routed_experts + 1) : 0,
    sortedPairs: grouped ? 4 * pairs : 0,
  };
}

export interface MoeExpertsCostOptions {
  /** decode: how the experts are read (ExpertReads); default per_pair. */
  reads?: ExpertReads;
  /**
   * decode per_expert: the share of each later token's experts that an earlier token also chose
   * (0: disjoint, the upper bound; 1: all the same experts). Default 0.
   */
  overlap?: number;
}

/**
 * Bytes and FLOPs for the benchmark. Weights: each pair reads its expert's (decode per_pair: exact
 * when a token's experts are distinct and T = 1), each distinct expert once (decode per_expert:
 * K (1 + (T - 1)(1 - overlap)) of them, at most E), or each of min(E, pairs) experts once
 * (grouped, an upper bound); plus x, routing, h (and y) written and read, out written.
 */
export function moeExpertsCost(shape: MoeExpertsShape, path: MoePath, weights: ExpertWeightFormat = 'fp8', options: MoeExpertsCostOptions = {}): Cost {
  const { tokens: T, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K } = shape;
  const pairs = T * K;
  const scaleBytes = weights === 'fp8' ? 4 * 3 * Math.ceil(I / BLOCK) * Math.ceil(d / BLOCK) : 0;
  const expertBytes = WEIGHT_BYTES[weights] * 3 * I * d + scaleBytes;
  const distinct = Math.min(E, K * (1 + (T - 1) * (1 - (options.overlap ?? 0))));
  const reads = path !== 'decode' ? Math.min(E, pairs) : options.reads === 'per_expert' ? distinct : pairs;
  const activations = 4 * (2 * T * d + 2 * pairs + 2 * pairs * I) + (path === 'grouped' ? 4 * (2 * pairs * d + E + 1 + 2 * pairs) : 0);
  return { bytes: reads * expertBytes + activations, flops: 2 * 3 * pairs * I * d + 2 * pairs * d };
}

export interface MoeExpertsOptions {
  /** The format of every projection's weights; default 'fp8'. */
  weights?: ExpertWeightFormat;
  /**
   * The W8A8 path: round the SwiGLU hidden h in place to what act_quant makes of it before the down
   * projection (the official Expert's w2 quantises its input); the caller rounds x itself. FP8
   * weights only: the official linear() quantises activations only for an FP8 weight (a bf16
   * one runs F.linear), so with bf16 weights this is an ArgumentError.
   */
  roundHidden?: boolean;
  /**
   * With roundHidden: how act_quant stores its scales ('ue8m0' for a scale_fmt "ue8m0" checkpoint).
   * Default 'f32'. The routed experts' only: a call's shared experts always take 'f32' (amax / 448).
   */
  actScaleFormat?: ActScaleFormat;
  /** Invocations per workgroup (each 4 output columns); default 64. */
  workgroupSize?: number;
  /** Who runs the router's selection, here and in moe_route (moe_route.ts RouteReduce); default `thread`. */
  routeReduce?: RouteReduce;
  /**
   * How the decode passes that route read the experts of 2 or more tokens (ExpertReads; T * topk
   * <= MAX_UNION_PAIRS, else per_pair); default per_pair. One token always reads per pair.
   */
  expertReads?: ExpertReads;
}

export interface MoeExperts extends Kernel<MoeExpertsArgs> {
  readonly weights: ExpertWeightFormat;
  readonly workgroupSize: number;
  /** How a call's decode passes that route read the experts (per_expert only for 2+ tokens). */
  reads(args: MoeExpertsShape): ExpertReads;
  /**
   * The routed experts over a GPU expert cache (src/model/expert_offload.ts): `shared` (with
   * shared experts) writes their output into out first, needing no routing, so it can run while
   * the router's ids are read back; `pass` runs the pairs whose slot id is below the cache's slots
   * (others are skipped) and writes each one's y; the caller runs it once per set of resident
   * experts, then `finish` adds every pair's y in k order (moe_combine, one addition into out:
   * shared + routed has the bits of routed + shared): the split stacks' out, bit for bit.
   */
  prepareSlots(args: MoeSlotsArgs): { shared?: PreparedCall; pass: PreparedCall; finish: PreparedCall };
  /**
   * Whether the call's decode down pass writes the whole sum, routed + shared, in one store (the
   * router in the passes over one set of buffers; the shared experts among their rows, or none):
   * then `accumulate` adds it to out in one addition, the official h + (y + z).
   */
  sumsInOnePass(args: MoeExpertsArgs): boolean;
}

/** A MoE layer's experts over `slots` cache slots: ids in `slotIds` (slot ids, `slots` or more for a pair not in this pass). */
export interface MoeSlotsArgs extends Omit<MoeExpertsCallArgs, 'n_routed_experts' | 'topkIds' | 'router'> {
  /** Experts the cache holds, in slots 0 .. slots - 1 of `weights`. */
  slots: number;
  /** The cache's buffers, laid out as a stack of `slots` experts. */
  weights: MlpWeights;
  /** [tokens, num_experts_per_tok] u32: each pair's slot in this pass, or >= slots when its expert is not resident in it. */
  slotIds: GPUBuffer;
}

/** The experts a dispatch's buffers hold: first .. first + count - 1 (an ExpertRange, or one expert). */
interface Slots {
  first: number;
  count: number;
}

/** Where a dispatch writes its n output columns: from column `col` of rows `stride` wide. */
interface OutColumns {
  col: number;
  stride: number;
}

/** The shape of one pass of the expert kernels: T tokens, K pairs per token, E experts of d -> I -> d. */
interface PassShape {
  T: number;
  K: number;
  E: number;
  d: number;
  I: number;
}

/** The gate_up kernel's paths: MoePath's, and decode_route, decode that runs the router's selection first. */
const GATE_UP_PATHS = ['decode', 'decode_route', 'grouped'] as const;
type GateUpPath = (typeof GATE_UP_PATHS)[number];

/**
 * The down kernel's paths: MoePath's, decode_route (decode that runs the router's selection and
 * writes its ids and weights), and decode_pairs, decode over several expert ranges (y per pair,
 * summed by moe_combine).
 */
const DOWN_PATHS = ['decode', 'decode_route', 'decode_pairs', 'grouped'] as const;
type DownPath = (typeof DOWN_PATHS)[number];

/** decode_route's axis `shared`: the shared experts as T more rows of gate_up, added by the down (fused), or not there (none). */
const SHARED = ['none', 'fused'] as const;

/** What a decode_route pass binds beyond the plain decode one. */
interface RouteBindings {
  route: PreparedRoute;
  /** The shared experts' weights, fused into the pass. */
  shared?: MlpWeights;
  /** Per pair, or each distinct expert once (ExpertReads). */
  reads: ExpertReads;
  /** T: per_expert's pipelines are specialised to it (TOKENS of moe_experts_union.wgsl). */
  tokens: number;
}

/** The pipelines and the dispatch builders the routed experts and the MLP share. */
function expertPasses(ctx: KernelContext, { weights = 'fp8', workgroupSize = 64, roundHidden = false, actScaleFormat = 'f32', routeReduce: routeOption, expertReads = 'per_pair' }: MoeExpertsOptions) {
  const { device } = ctx.gpu;
  const routeReduce = resolveRouteReduce(ctx, 'moe_experts', { reduce: routeOption }).reduce;
  checkCounts('moe_experts', { workgroupSize });
  if (!EXPERT_READS.includes(expertReads)) {
    throw new ArgumentError(`moe_experts: "${String(expertReads)}" is not a way to read the experts; use one of ${EXPERT_READS.join(', ')}`);
  }
  /** The reads of a call's decode_route passes: per_expert for 2+ tokens of at most MAX_UNION_PAIRS pairs. */
  const reads = (T: number, K: number): ExpertReads => (expertReads === 'per_expert' && T >= 2 && T * K <= MAX_UNION_PAIRS ? 'per_expert' : 'per_pair');
  if (!EXPERT_WEIGHT_FORMATS.includes(weights)) {
    throw new ArgumentError(`moe_experts: "${weights}" is not an expert weight format; use one of ${EXPERT_WEIGHT_FORMATS.join(', ')}`);
  }
  if (roundHidden && weights !== 'fp8') {
    throw new ArgumentError(`moe_experts: roundHidden (w8a8) quantises activations for FP8 weights only; ${weights} weights run weight_only`);
  }
  const ro = 'read-only-storage' as const;
  const scale = weights === 'fp8' ? ro : undefined; // the weight_scale_inv bindings: fp8 only
  // k % 4 == 0 (k: the input width of the linear) takes the readers without splicing and
  // masking (K_ALIGNED of moe_experts_common.wgsl): one pipeline per alignment.
  // decode_route runs moe_route_common.wgsl (its `routing` and `route_reduce` axes; `shared` its
  // shared-experts axis, `reads` its expert reads), as the first snippet (the subgroup variant's
  // `enable` leads the module), and per_expert moe_experts_union.wgsl after the others; the other
  // paths leave them out.
  const routeAxes = { routing: ROUTINGS, route_reduce: ROUTE_REDUCES, shared: SHARED, reads: EXPERT_READS };
  const routeVariant = (r?: RouteBindings) => ({ routing: r?.route.routing ?? 'noaux_tc', route_reduce: r ? routeReduce : 'thread', shared: r?.shared ? 'fused' : 'none', reads: r?.reads ?? 'per_pair' });
  const unionConstants = (r?: RouteBindings): Record<string, number> => (r?.reads === 'per_expert' ? { TOKENS: r.tokens } : {});
  const routeSnippets = (r?: RouteBindings): readonly WgslSource[] =>
    r ? [ROUTE_SNIPPET, ...SNIPPETS, ...(r.reads === 'per_expert' ? [{ name: 'moe_experts_union.wgsl', code: unionSource }] : [])] : SNIPPETS;
  const gateUpPipeline = (path: GateUpPath, k: number, r?: RouteBindings): CachedPipeline =>
    kernelPipeline(ctx.pipelines, {
      kernel: 'moe_experts_gate_up',
      source: gateUpSource,
      snippets: routeSnippets(path === 'decode_route' ? r : undefined),
      axes: { weights: EXPERT_WEIGHT_FORMATS, path: GATE_UP_PATHS, ...routeAxes },
      variant: { weights, path, ...routeVariant(r) },
      constants: { WORKGROUP_SIZE: workgroupSize, K_ALIGNED: k % 4 === 0 ? 1 : 0, ...unionConstants(path === 'decode_route' ? r : undefined) },
      // params, x, gate w/[s], up w/[s], h, then: ids (decode); offsets, sorted (grouped);
      // logits, [bias], route params, [shared gate w/[s], shared up w/[s]] (decode_route)
      bindings: path === 'decode_route'
        ? ['uniform', ro, ro, scale, ro, scale, 'storage', ro, r!.route.bias ? ro : undefined, 'uniform', ...(r!.shared ? [ro, scale, ro, scale] : [])]
        : ['uniform', ro, ro, scale, ro, scale, 'storage', ro, path === 'grouped' ? ro : undefined],
    });
  // accumulate: out = out + v (ACCUMULATE of moe_experts_down.wgsl), for the shared experts after the routed sum.
  const downPipeline = (path: DownPath, k: number, accumulate = false, r?: RouteBindings, size = workgroupSize): CachedPipeline =>
    kernelPipeline(ctx.pipelines, {
      kernel: 'moe_experts_down',
      source: downSource,
      snippets: routeSnippets(path === 'decode_route' ? r : undefined),
      axes: { weights: EXPERT_WEIGHT_FORMATS, path: DOWN_PATHS, ...routeAxes },
      variant: { weights, path, ...routeVariant(r) },
      constants: { WORKGROUP_SIZE: size, K_ALIGNED: k % 4 === 0 ? 1 : 0, ACCUMULATE: accumulate ? 1 : 0, ...unionConstants(path === 'decode_route' ? r : undefined) },
      // params, h, w, [s], out or y, then: ids or offsets, [weights or sorted];
      // ids, weights (written), [shared w/[s]], logits, [bias], route params (decode_route)
      bindings: path === 'decode_route'
        ? ['uniform', ro, ro, scale, 'storage', 'storage', 'storage', r!.shared ? ro : undefined, r!.shared ? scale : undefined, ro, r!.route.bias ? ro : undefined, 'uniform']
        : ['uniform', ro, ro, scale, 'storage', ro, path === 'decode_pairs' ? undefined : ro],
    });
  /**
   * Whether the decode_route passes with the shared experts fused fit the adapter: the gate_up
   * binds x, the routed and the shared gate and up weights [and scales], h, logits [, bias]: 12
   * storage buffers with fp8 weights and a bias, more than the 8 WebGPU guarantees (the down binds
   * fewer). Without the shared experts both passes bind at most 8.
   */
  const sharedFits = (withBias: boolean) => 5 + (weights === 'fp8' ? 2 : 0) + (withBias ? 1 : 0) + (weights === 'fp8' ? 4 : 2) <= device.limits.maxStorageBuffersPerShaderStage;
  const combinePipeline = (accumulate: boolean) =>
    kernelPipeline(ctx.pipelines, { kernel: 'moe_combine', source: combineSource, constants: { WORKGROUP_SIZE: workgroupSize, ACCUMULATE: accumulate ? 1 : 0 }, bindings: ['uniform', ro, ro, 'storage'] });
  const maxDim = device.limits.maxComputeWorkgroupsPerDimension;
  function checkGrid(label: string, counts: Record<string, number>): void {
    for (const [name, count] of Object.entries(counts)) {
      if (count > maxDim) throw new GpuLimitError(`${label}: ${name} = ${count} workgroups exceed this GPU's maxComputeWorkgroupsPerDimension (${maxDim})`);
    }
  }
  // Workgroups along the output columns: each invocation takes 4 of them.
  const tiles = (columns: number, size = workgroupSize) => Math.ceil(columns / (COLUMNS_PER_INVOCATION * size));
  // grouped: slices of an expert's row tiles run in parallel, enough for an average expert's rows.
  const slices = (s: PassShape) => Math.min(maxDim, Math.max(1, Math.ceil((s.T * s.K) / (s.E * ROWS_PER_TILE))));

  /**
   * The ExpertParams uniform of moe_experts_common.wgsl for a linear [n, k] over the experts of
   * range r, writing rows `stride` wide from column `col` (a row band of n rows; default the whole n).
   */
  function expertParams(label: string, s: PassShape & { n: number; k: number }, r: Slots, owned: { destroy(): void }[], out: OutColumns = { col: 0, stride: s.n }): Uniforms {
    const kBlocks = Math.ceil(s.k / BLOCK);
    const slotScales = weights === 'fp8' ? Math.ceil(s.n / BLOCK) * kBlocks : 0;
    const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'u32']);
    uniforms.write([s.T, s.K, r.count, s.n, s.k, kBlocks, align4(WEIGHT_BYTES[weights] * s.n * s.k) / 4, slotScales, r.first, out.stride, out.col]);
    owned.push(uniforms);
    return uniforms;
  }

  /**
   * One gate_up dispatch: h for the pairs whose expert is in `r`, output columns n (a band's rows
   * at `out`, or all of I). `routing`: topk_ids (decode), or expert_offsets, sorted_pairs (grouped).
   */
  function gateUp(name: string, path: MoePath, s: PassShape, r: Slots, w: { gate: ExpertProjection; up: ExpertProjection }, b: { x: GPUBuffer; h: GPUBuffer; routing: GPUBuffer[] }, owned: { destroy(): void }[], band?: { rows: number; col: number }): Encodable {
    const n = band?.rows ?? s.I;
    const params = expertParams(name, { ...s, n, k: s.d }, r, owned, { col: band?.col ?? 0, stride: s.I });
    const grid: [number, number, number] = path === 'decode' ? [tiles(n), s.T * s.K, 1] : [tiles(n), r.count, slices(s)];
    return bound(name, gateUpPipeline(path, s.d), [params, b.x, w.gate.weight, w.gate.weight_scale_inv, w.up.weight, w.up.weight_scale_inv, b.h, ...b.routing], grid);
  }

  /**
   * The decode_route pair over all experts in one set of buffers: gate_up for the T * K pairs (and
   * the T shared rows; per_expert: one row per leading pair, one shared row for all tokens), then
   * down with the weighted sum (and the shared experts' down; per_expert: one invocation per
   * column tile for all tokens), each running the router's selection; the down writes topk_ids
   * and topk_weights.
   */
  function routedDecode(label: string, s: PassShape, w: MlpWeights, b: { x: GPUBuffer; h: GPUBuffer; out: GPUBuffer; topkIds: GPUBuffer; topkWeights: GPUBuffer }, rb: RouteBindings, owned: { destroy(): void }[], accumulate = false): Encodable[] {
    const all = { first: 0, count: s.E };
    const { route, shared } = rb;
    const routeInputs = [route.logits, route.bias, route.uniforms];
    const gateUpParams = expertParams(`${label}.gate_up`, { ...s, n: s.I, k: s.d }, all, owned);
    const sharedGateUp = shared ? [shared.gate_proj.weight, shared.gate_proj.weight_scale_inv, shared.up_proj.weight, shared.up_proj.weight_scale_inv] : [];
    const perExpert = rb.reads === 'per_expert';
    const rows = s.T * s.K + (shared ? (perExpert ? 1 : s.T) : 0);
    const gateUpCall = bound(`${label}.gate_up`, gateUpPipeline('decode_route', s.d, rb), [gateUpParams, b.x, w.gate_proj.weight, w.gate_proj.weight_scale_inv, w.up_proj.weight, w.up_proj.weight_scale_inv, b.h, ...routeInputs, ...sharedGateUp], [tiles(s.I), rows, 1]);
    const downParams = expertParams(`${label}.down`, { ...s, n: s.d, k: s.I }, all, owned);
    const sharedDown = shared ? [shared.down_proj.weight, shared.down_proj.weight_scale_inv] : [undefined, undefined];
    // per_expert: one invocation per 4 columns serves all T tokens; workgroups T times smaller keep
    // per_pair's count of them (a CPU adapter runs a workgroup per core: one of 2 cores idled at d = 256)
    const downSize = perExpert ? Math.max(1, Math.floor(workgroupSize / s.T)) : workgroupSize;
    checkGrid(label, { 'hidden_size tiles': tiles(s.d, downSize) });
    const downCall = bound(`${label}.down`, downPipeline('decode_route', s.I, accumulate, rb, downSize), [downParams, b.h, w.down_proj.weight, w.down_proj.weight_scale_inv, b.out, b.topkIds, b.topkWeights, ...sharedDown, ...routeInputs], [tiles(s.d, downSize), perExpert ? 1 : s.T, 1]);
    return [gateUpCall, ...hiddenRound(label, s.T * s.K, s.I, b.h, owned), downCall];
  }

  /**
   * One down dispatch over the pairs whose expert is in `r`, output columns n (a band's rows at
   * `band.col`, or all of d) of `out`. `routing`: topk_ids, topk_weights (decode), topk_ids
   * (decode_pairs), or expert_offsets, sorted_pairs (grouped). `accumulate`: out = out + the result.
   */
  function down(name: string, path: Exclude<DownPath, 'decode_route'>, s: PassShape, r: Slots, w: ExpertProjection, b: { h: GPUBuffer; out: GPUBuffer; routing: GPUBuffer[] }, owned: { destroy(): void }[], band?: { rows: number; col: number }, accumulate = false): Encodable {
    const n = band?.rows ?? s.d;
    const params = expertParams(name, { ...s, n, k: s.I }, r, owned, { col: band?.col ?? 0, stride: s.d });
    const grid: [number, number, number] = path === 'decode_pairs' ? [tiles(n), s.T * s.K, 1] : path === 'grouped' ? [tiles(n), r.count, slices(s)] : [tiles(n), s.T, 1];
    return bound(name, downPipeline(path, s.I, accumulate), [params, b.h, w.weight, w.weight_scale_inv, b.out, ...b.routing], grid);
  }

  /** A dispatch of `pipeline` with `resources` bound to bindings 0, 1, ... in order; undefined ones (bf16 scales) left out. */
  const bound = (label: string, pipeline: CachedPipeline, resources: readonly (GPUBuffer | Uniforms | undefined)[], grid: number | [number, number, number]): Encodable =>
    dispatch(device, pipeline, createBindGroup(device, label, pipeline, resources.map((r) => (r instanceof Uniforms ? r.buffer : r))), grid);

  /** moe_combine: out[t] = sum over k in order of topk_weights[t, k] * y[t * topk + k] (accumulate: out[t] += it). */
  function combine(label: string, s: PassShape, b: { y: GPUBuffer; topkWeights: GPUBuffer; out: GPUBuffer }, owned: { destroy(): void }[], accumulate = false): Encodable {
    const params = new Uniforms(device, `${label}.combine`, ['u32', 'u32', 'u32']);
    params.write([s.T, s.K, s.d]);
    owned.push(params);
    return bound(`${label}.combine`, combinePipeline(accumulate), [params, b.y, b.topkWeights, b.out], Math.ceil((s.T * s.d) / workgroupSize));
  }

  const actRound = roundHidden ? createActRound(ctx, { scaleFormat: actScaleFormat }) : undefined;
  /** w8a8: the rounding of h [rows, I] between gate_up and down (none for weight_only); once, after every range's gate_up. */
  function hiddenRound(label: string, rows: number, I: number, h: GPUBuffer, owned: { destroy(): void }[]): Encodable[] {
    if (!actRound) return [];
    const call = actRound.prepare({ M: rows, K: I, x: h, label: `${label}.h.act_quant` });
    owned.push(call);
    return [call];
  }

  /** A dispatch's label: the range's experts when there are several. */
  const rangeLabel = (label: string, ranges: readonly ExpertRange[], r: ExpertRange) => (ranges.length === 1 ? label : `${label}[${r.first}:${r.first + r.count}]`);

  return {
    weights,
    tiles,
    maxDim,
    combine,
    gateUp,
    down,
    hiddenRound,
    roundsHidden: actRound !== undefined,
    sharedFits,
    reads,
    routedDecode,
    /**
     * gate_up over the T * topk pairs, then down with the weighted sum: the decode path. Several
     * ranges: each pass over its pairs, y per pair, then moe_combine.
     */
    decode(label: string, s: PassShape, b: { x: GPUBuffer; ranges: readonly ExpertRange[]; h: GPUBuffer; out: GPUBuffer; topkIds: GPUBuffer; topkWeights: GPUBuffer; y?: GPUBuffer }, owned: { destroy(): void }[]): Encodable[] {
      const gateUps = b.ranges.map((r) =>
        gateUp(rangeLabel(`${label}.gate_up`, b.ranges, r), 'decode', s, r, { gate: r.weights.gate_proj, up: r.weights.up_proj }, { x: b.x, h: b.h, routing: [b.topkIds] }, owned));
      const round = hiddenRound(label, s.T * s.K, s.I, b.h, owned);
      if (b.ranges.length === 1) {
        const [r] = b.ranges;
        return [...gateUps, ...round, down(`${label}.down`, 'decode', s, r, r.weights.down_proj, { h: b.h, out: b.out, routing: [b.topkIds, b.topkWeights] }, owned)];
      }
      // No pass sees all of a token's pairs: each writes its pairs' y, combine sums them in k order.
      const y = b.y!;
      const downs = b.ranges.map((r) => down(rangeLabel(`${label}.down`, b.ranges, r), 'decode_pairs', s, r, r.weights.down_proj, { h: b.h, out: y, routing: [b.topkIds] }, owned));
      return [...gateUps, ...round, ...downs, combine(label, s, { y, topkWeights: b.topkWeights, out: b.out }, owned)];
    },
    /** gate_up and down over sorted rows, one dispatch each per range: the grouped path's middle. */
    grouped(label: string, s: PassShape, b: { x: GPUBuffer; ranges: readonly ExpertRange[]; h: GPUBuffer; y: GPUBuffer; offsets: GPUBuffer; sorted: GPUBuffer }, owned: { destroy(): void }[]): Encodable[] {
      const routing = [b.offsets, b.sorted];
      const gateUps = b.ranges.map((r) =>
        gateUp(rangeLabel(`${label}.gate_up`, b.ranges, r), 'grouped', s, r, { gate: r.weights.gate_proj, up: r.weights.up_proj }, { x: b.x, h: b.h, routing }, owned));
      const downs = b.ranges.map((r) => down(rangeLabel(`${label}.down`, b.ranges, r), 'grouped', s, r, r.weights.down_proj, { h: b.h, out: b.y, routing }, owned));
      return [...gateUps, ...hiddenRound(label, s.T * s.K, s.I, b.h, owned), ...downs];
    },
    checkGrid,
  };
}

/**
 * The bytes of each projection's stacked weight (and, for fp8, scales), for E experts (`prefix`
 * names a range's). Throws an ArgumentError when an fp8 projection lacks its scales or a bf16 one has some.
 */
function weightNeeds(label: string, format: ExpertWeightFormat, weights: MlpWeights, E: number, d: number, I: number, prefix = ''): BindingNeeds {
  const need: Record<string, readonly [GPUBuffer | undefined, number]> = {};
  for (const [name, rows, cols] of [['gate_proj', I, d], ['up_proj', I, d], ['down_proj', d, I]] as const) {
    const { weight, weight_scale_inv: scale } = weights[name];
    need[`${prefix}${name}.weight`] = [weight, E * align4(WEIGHT_BYTES[format] * rows * cols)];
    if (format === 'fp8') {
      if (!scale) throw new ArgumentError(`${label}: ${prefix}${name}.weight_scale_inv is required for fp8 weights`);
      need[`${prefix}${name}.weight_scale_inv`] = [scale, 4 * E * Math.ceil(rows / BLOCK) * Math.ceil(cols / BLOCK)];
    } else if (scale) {
      throw new ArgumentError(`${label}: ${prefix}${name}.weight_scale_inv is not used by ${format} weights (a kernel created with weights: '${format}')`);
    }
  }
  return need;
}

/**
 * The expert ranges of a call: `weights` as the one range 0 .. E - 1, or `ranges` checked to be in
 * order, contiguous and covering 0 .. E - 1 (ArgumentError otherwise).
 */
function expertRanges(label: string, args: MoeExpertsWeights, E: number): readonly ExpertRange[] {
  const { weights, ranges } = args as { weights?: MlpWeights; ranges?: readonly ExpertRange[] };
  if (weights && ranges) throw new ArgumentError(`${label}: pass weights (every expert in one set of buffers) or ranges (a stack split by expert), not both`);
  if (weights) return [{ first: 0, count: E, weights }];
  if (!ranges) throw new ArgumentError(`${label}: weights or ranges is required`);
  if (ranges.length === 0) throw new ArgumentError(`${label}: ranges is empty; it must cover experts 0 .. ${E - 1}`);
  const cover = `the ranges must be in order and contiguous, covering experts 0 .. ${E - 1}`;
  let next = 0; // the first expert no range so far holds
  ranges.forEach((r, i) => {
    checkCounts(label, { [`ranges[${i}].first`]: r.first }, 0);
    checkCounts(label, { [`ranges[${i}].count`]: r.count });
    if (r.first > next) throw new ArgumentError(`${label}: ranges[${i}] starts at expert ${r.first}, leaving experts ${next} .. ${r.first - 1} in no range; ${cover}`);
    if (r.first < next) throw new ArgumentError(`${label}: ranges[${i}] starts at expert ${r.first}, overlapping ranges[${i - 1}] (which ends at expert ${next - 1}); ${cover}`);
    if (!r.weights) throw new ArgumentError(`${label}: ranges[${i}].weights is required`);
    next = r.first + r.count;
  });
  if (next < E) throw new ArgumentError(`${label}: the ranges end at expert ${next - 1}, leaving experts ${next} .. ${E - 1} in no range; ${cover}`);
  if (next > E) throw new ArgumentError(`${label}: ranges[${ranges.length - 1}] ends at expert ${next - 1}, past n_routed_experts = ${E}; ${cover}`);
  return ranges;
}

/** The routed experts of one MoE layer, indexed by the router's ids on the GPU. */
export function createMoeExperts(ctx: KernelContext, options: MoeExpertsOptions = {}): MoeExperts {
  const { device } = ctx.gpu;
  const passes = expertPasses(ctx, options);
  const group = createMoeGroup(ctx);
  const router = createMoeRoute(ctx, { reduce: options.routeReduce });
  // the shared experts are the official parallel modules: W8A8 rounds their h with amax / 448 scales, never scale_fmt's
  const sharedPasses = options.actScaleFormat && options.actScaleFormat !== 'f32' ? expertPasses(ctx, { ...options, actScaleFormat: 'f32' }) : passes;
  /** The shared experts join the routed decode passes as more rows (see the file's comment for when). */
  const sharedJoins = (args: MoeExpertsArgs): boolean => {
    const { shared } = args;
    if (!shared || Array.isArray(shared.weights.gate_proj)) return false;
    return shared.intermediate_size === args.moe_intermediate_size && (shared.x ?? args.x) === args.x && !passes.roundsHidden && passes.sharedFits(args.router?.bias !== undefined);
  };
  /** The router runs inside the decode passes: decode rows, one set of buffers. */
  const routesInPasses = (args: MoeExpertsArgs): boolean =>
    args.router !== undefined && (args.path ?? (args.tokens <= MOE_DECODE_MAX_TOKENS ? 'decode' : 'grouped')) === 'decode' && 'weights' in args && args.weights !== undefined;
  return {
    name: 'moe_experts',
    weights: passes.weights,
    workgroupSize: options.workgroupSize ?? 64,
    sumsInOnePass: (args) => routesInPasses(args) && (args.shared === undefined || sharedJoins(args)),
    reads: (args) => passes.reads(args.tokens, args.num_experts_per_tok),
    prepareSlots(args) {
      const label = args.label ?? 'moe_experts';
      const { tokens: T, hidden_size: d, moe_intermediate_size: I, slots: S, num_experts_per_tok: K, scratch, shared } = args;
      checkCounts(label, { tokens: T, hidden_size: d, moe_intermediate_size: I, slots: S, num_experts_per_tok: K });
      const path = args.path ?? (T <= MOE_DECODE_MAX_TOKENS ? 'decode' : 'grouped');
      // y per pair on both paths (decode as over several ranges)
      const scratchBytes = moeExpertsScratchBytes({ ...args, n_routed_experts: S }, path, 2);
      checkBindings(device, label, {
        x: [args.x, 4 * T * d],
        slotIds: [args.slotIds, 4 * T * K],
        topkWeights: [args.topkWeights, 4 * T * K],
        out: [args.out, 4 * T * d],
        'scratch.h': [scratch.h, 4 * T * K * I],
        'scratch.y': [scratch.y, scratchBytes.y],
        ...weightNeeds(label, passes.weights, args.weights, S, d, I, 'slots.'),
        ...(path === 'grouped'
          ? { 'scratch.expertOffsets': [scratch.expertOffsets, scratchBytes.expertOffsets], 'scratch.sortedPairs': [scratch.sortedPairs, scratchBytes.sortedPairs] } as const
          : {}),
      });
      passes.checkGrid(label, { 'hidden_size tiles': passes.tiles(d), 'moe_intermediate_size tiles': passes.tiles(I), ...(path === 'decode' ? { 'tokens * topk': T * K } : { slots: S }) });
      const owned: { destroy(): void }[] = [];
      const sharedOwned: { destroy(): void }[] = [];
      const finishOwned: { destroy(): void }[] = [];
      try {
        const s = { T, K, E: S, d, I };
        const all = { first: 0, count: S, weights: args.weights };
        const y = scratch.y!;
        let steps: Encodable[];
        if (path === 'decode') {
          steps = [
            passes.gateUp(`${label}.gate_up`, 'decode', s, all, { gate: all.weights.gate_proj, up: all.weights.up_proj }, { x: args.x, h: scratch.h, routing: [args.slotIds] }, owned),
            ...passes.hiddenRound(label, T * K, I, scratch.h, owned),
            passes.down(`${label}.down`, 'decode_pairs', s, all, all.weights.down_proj, { h: scratch.h, out: y, routing: [args.slotIds] }, owned),
          ];
        } else {
          // moe_group drops ids >= slots: the pairs of experts not resident in this pass
          const grouping = group.prepare({ pairs: T * K, experts: S, topkIds: args.slotIds, expertOffsets: scratch.expertOffsets!, sortedPairs: scratch.sortedPairs!, label: `${label}.group` });
          owned.push(grouping);
          steps = [grouping, ...passes.grouped(label, s, { x: args.x, ranges: [all], h: scratch.h, y, offsets: scratch.expertOffsets!, sorted: scratch.sortedPairs! }, owned)];
        }
        const sharedSteps = shared ? mlpSteps(device, sharedPasses, { tokens: T, hidden_size: d, ...shared, x: shared.x ?? args.x, out: args.out, label: `${label}.shared_experts` }, sharedOwned) : undefined;
        const finishSteps = [passes.combine(label, s, { y, topkWeights: args.topkWeights, out: args.out }, finishOwned, sharedSteps !== undefined)];
        // A pass reads each resident expert of its pairs once (decode: once per pair).
        const routed = moeExpertsCost({ ...args, n_routed_experts: S }, path, passes.weights);
        const sharedCost = shared ? moeExpertsCost({ tokens: T, hidden_size: d, moe_intermediate_size: shared.intermediate_size, n_routed_experts: 1, num_experts_per_tok: 1 }, 'decode', passes.weights) : { bytes: 0, flops: 0 };
        return {
          shared: sharedSteps && preparedCall(sharedCost, sharedSteps, sharedOwned),
          pass: preparedCall(routed, steps, owned),
          finish: preparedCall({ bytes: 0, flops: 0 }, finishSteps, finishOwned),
        };
      } catch (err) {
        for (const o of [...owned, ...sharedOwned, ...finishOwned]) o.destroy();
        throw err;
      }
    },
    prepare(args) {
      const label = args.label ?? 'moe_experts';
      const { tokens: T, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K } = args;
      checkCounts(label, { tokens: T, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K });
      const ranges = expertRanges(label, args, E);
      const path = args.path ?? (T <= MOE_DECODE_MAX_TOKENS ? 'decode' : 'grouped');
      const scratchBytes = moeExpertsScratchBytes(args, path, ranges.length);
      const { scratch } = args;
      // each range's buffers hold its count of slots
      const weightBindings: BindingNeeds = Object.fromEntries(ranges.flatMap((r, i) => Object.entries(weightNeeds(label, passes.weights, r.weights, r.count, d, I, args.ranges ? `ranges[${i}].` : ''))));
      checkBindings(device, label, {
        x: [args.x, 4 * T * d],
        topkIds: [args.topkIds, 4 * T * K],
        topkWeights: [args.topkWeights, 4 * T * K],
        out: [args.out, 4 * T * d],
        'scratch.h': [scratch.h, 4 * T * K * I], // the pairs' rows; the shared experts' below, where they join the down pass
        ...weightBindings,
        ...(scratchBytes.y > 0 ? { 'scratch.y': [scratch.y, scratchBytes.y] } as const : {}),
        ...(path === 'grouped'
          ? { 'scratch.expertOffsets': [scratch.expertOffsets, scratchBytes.expertOffsets], 'scratch.sortedPairs': [scratch.sortedPairs, scratchBytes.sortedPairs] } as const
          : {}),
      });
      passes.checkGrid(label, { 'hidden_size tiles': passes.tiles(d), 'moe_intermediate_size tiles': passes.tiles(I), ...(path === 'decode' ? { 'tokens * topk': T * K } : { n_routed_experts: E }) });
      const owned: { destroy(): void }[] = [];
      const s = { T, K, E, d, I };
      try {
        const { topkIds, topkWeights, shared } = args;
        const routedWeights = ranges.length === 1 ? ranges[0].weights : undefined;
        // The router runs inside the decode passes over one set of buffers (decode_route), else as moe_route first.
        let route: PreparedRoute | undefined;
        const before: Encodable[] = [];
        if (args.router) {
          const { config, logits, bias } = args.router;
          if (config.n_routed_experts !== E || config.num_experts_per_tok !== K) {
            throw new ArgumentError(`${label}: the router's config has ${config.n_routed_experts} experts, ${config.num_experts_per_tok} per token; the call has ${E}, ${K}`);
          }
          if (path === 'decode' && routedWeights) {
            const { routing, uniforms } = prepareRouteParams(device, `${label}.route`, T, { ...args.router, topkIds, topkWeights });
            owned.push(uniforms);
            route = { routing, uniforms, logits, bias };
          } else {
            const call = router.prepare({ tokens: T, ...args.router, topkIds, topkWeights, label: `${label}.route` });
            owned.push(call);
            before.push(call);
          }
        }
        // The shared experts join those passes as T more rows where their inter width is the routed
        // experts', their weights are whole, h is not rounded (W8A8) and the adapter binds them all.
        const sharedWhole = shared && !Array.isArray(shared.weights.gate_proj) ? (shared.weights as MlpWeights) : undefined;
        const fuseShared = route !== undefined && sharedJoins(args);
        if (args.accumulate && !(route !== undefined && (shared === undefined || fuseShared))) {
          throw new ArgumentError(`${label}: accumulate needs the down pass to write the whole sum (the router in the decode passes over one set of buffers, the shared experts among their rows); this call sums in several passes`);
        }
        // otherwise: an MLP whose down adds into out (accumulate), after the routed sum
        const after = shared && !fuseShared ? mlpSteps(device, sharedPasses, { tokens: T, hidden_size: d, ...shared, x: shared.x ?? args.x, out: args.out, label: `${label}.shared_experts` }, owned, true) : [];
        const routingCost = args.router ? moeRouteCost(T, args.router.config) : { bytes: 0, flops: 0 };
        // per_expert: each distinct expert once (the cost an upper bound: no overlap), the fused shared experts once
        const reads = route ? passes.reads(T, K) : 'per_pair';
        const sharedReads = fuseShared ? reads : 'per_pair';
        const sharedCost = shared ? moeExpertsCost({ tokens: T, hidden_size: d, moe_intermediate_size: shared.intermediate_size, n_routed_experts: 1, num_experts_per_tok: 1 }, 'decode', passes.weights, { reads: sharedReads }) : { bytes: 0, flops: 0 };
        const routed = moeExpertsCost(args, path, passes.weights, { reads });
        const cost = { bytes: routed.bytes + routingCost.bytes + sharedCost.bytes, flops: routed.flops + routingCost.flops + sharedCost.flops };
        if (route) {
          if (fuseShared) {
            checkBindings(device, label, { 'scratch.h': [scratch.h, 4 * (T * K + T) * I], ...weightNeeds(label, passes.weights, sharedWhole!, 1, d, I, 'shared.') });
          }
          const b = { x: args.x, h: scratch.h, out: args.out, topkIds, topkWeights };
          return preparedCall(cost, [...passes.routedDecode(label, s, routedWeights!, b, { route, shared: fuseShared ? sharedWhole : undefined, reads, tokens: T }, owned, args.accumulate ?? false), ...after], owned);
        }
        if (path === 'decode') {
          const b = { x: args.x, ranges, h: scratch.h, out: args.out, topkIds, topkWeights, y: scratch.y };
          return preparedCall(cost, [...before, ...passes.decode(label, s, b, owned), ...after], owned);
        }
        const offsets = scratch.expertOffsets!;
        const sorted = scratch.sortedPairs!;
        const y = scratch.y!;
        const grouping = group.prepare({ pairs: T * K, experts: E, topkIds, expertOffsets: offsets, sortedPairs: sorted, label: `${label}.group` });
        owned.push(grouping);
        const steps = [
          ...before,
          grouping,
          ...passes.grouped(label, s, { x: args.x, ranges, h: scratch.h, y, offsets, sorted }, owned),
          passes.combine(label, s, { y, topkWeights, out: args.out }, owned),
          ...after,
        ];
        return preparedCall(cost, steps, owned);
      } catch (err) {
        for (const o of owned) o.destroy();
        throw err;
      }
    },
  };
}

/** A storage buffer holding `data`, written once (the MLP's constant routing). */
function constantBuffer(device: GPUDevice, label: string, data: Uint32Array<ArrayBuffer> | Float32Array<ArrayBuffer>, owned: { destroy(): void }[]): GPUBuffer {
  const buffer = device.createBuffer({ label, size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buffer, 0, data);
  owned.push(buffer);
  return buffer;
}

/**
 * The bands of an MLP's weights: whole weights as one band per projection, or `bands` checked: in
 * order, contiguous, covering the rows; fp8 bands on 128-row blocks; gate and up cut alike
 * (ArgumentError otherwise).
 */
function mlpBands(label: string, format: ExpertWeightFormat, weights: MlpWeights | MlpBands, d: number, I: number): MlpBands {
  if (!Array.isArray(weights.gate_proj)) {
    const w = weights as MlpWeights;
    const whole = (p: ExpertProjection, rows: number): ProjectionBand[] => [{ ...p, first: 0, rows }];
    return { gate_proj: whole(w.gate_proj, I), up_proj: whole(w.up_proj, I), down_proj: whole(w.down_proj, d) };
  }
  const bands = weights as MlpBands;
  for (const [name, rows] of [['gate_proj', I], ['up_proj', I], ['down_proj', d]] as const) {
    const list = bands[name];
    if (!Array.isArray(list) || list.length === 0) throw new ArgumentError(`${label}: ${name} has no bands; give each projection one buffer or its row bands`);
    let next = 0;
    list.forEach((b, i) => {
      checkCounts(label, { [`${name}[${i}].rows`]: b.rows });
      if (b.first !== next) throw new ArgumentError(`${label}: ${name}[${i}] starts at row ${b.first}, not ${next}; the bands must be in order and contiguous, covering rows 0 .. ${rows - 1}`);
      if (format === 'fp8' && b.first % BLOCK !== 0) throw new ArgumentError(`${label}: ${name}[${i}] starts at row ${b.first}, inside a 128-row scale block; fp8 bands hold whole blocks`);
      next += b.rows;
    });
    if (next !== rows) throw new ArgumentError(`${label}: the bands of ${name} cover rows 0 .. ${next - 1}, not 0 .. ${rows - 1}`);
  }
  const cuts = (list: readonly ProjectionBand[]) => list.map((b) => `${b.first}+${b.rows}`).join();
  if (cuts(bands.gate_proj) !== cuts(bands.up_proj)) throw new ArgumentError(`${label}: gate_proj and up_proj are cut in different bands (${cuts(bands.gate_proj)} vs ${cuts(bands.up_proj)}); one gate_up dispatch reads a band of each`);
  return bands;
}

/** The bytes each band of an MLP binds, named `projection[first:end]`. */
function bandNeeds(label: string, format: ExpertWeightFormat, bands: MlpBands, d: number, I: number): BindingNeeds {
  const split = bands.gate_proj.length > 1 || bands.down_proj.length > 1;
  return Object.fromEntries(
    (['gate_proj', 'up_proj', 'down_proj'] as const).flatMap((name) =>
      bands[name].flatMap((b) => {
        const cols = name === 'down_proj' ? I : d;
        const prefix = split ? `${name}[${b.first}:${b.first + b.rows}].` : `${name}.`;
        const entries: [string, readonly [GPUBuffer | undefined, number]][] = [[`${prefix}weight`, [b.weight, align4(WEIGHT_BYTES[format] * b.rows * cols)]]];
        if (format === 'fp8') {
          if (!b.weight_scale_inv) throw new ArgumentError(`${label}: ${prefix}weight_scale_inv is required for fp8 weights`);
          entries.push([`${prefix}weight_scale_inv`, [b.weight_scale_inv, 4 * Math.ceil(b.rows / BLOCK) * Math.ceil(cols / BLOCK)]]);
        } else if (b.weight_scale_inv) {
          throw new ArgumentError(`${label}: ${prefix}weight_scale_inv is not used by ${format} weights (a kernel created with weights: '${format}')`);
        }
        return entries;
      }),
    ),
  );
}

/**
 * A plain SwiGLU MLP: the dense layers' mlp, or the shared experts, as a one-expert stack. Row
 * bands (MlpBands): one gate_up dispatch per band of gate/up, each writing its columns of h, and
 * one down dispatch per band of down, each writing its columns of out: every column is computed
 * as unsplit, so the out is the same bit for bit.
 */
export function createMlp(ctx: KernelContext, options: MoeExpertsOptions = {}): Kernel<MlpArgs> {
  const { device } = ctx.gpu;
  const passes = expertPasses(ctx, options);
  return {
    name: 'moe_experts',
    prepare(args) {
      const owned: { destroy(): void }[] = [];
      const steps = mlpSteps(device, passes, args, owned, args.accumulate ?? false);
      const cost = moeExpertsCost({ tokens: args.tokens, hidden_size: args.hidden_size, moe_intermediate_size: args.intermediate_size, n_routed_experts: 1, num_experts_per_tok: 1 }, 'decode', passes.weights);
      return preparedCall(cost, steps, owned);
    },
  };
}

/**
 * The dispatches of an MLP call (checked), their buffers in `owned`. `accumulate`: the down
 * passes add into out (out = out + mlp(x)): the shared experts after the routed sum.
 */
function mlpSteps(device: GPUDevice, passes: ReturnType<typeof expertPasses>, args: MlpArgs, owned: { destroy(): void }[], accumulate = false): Encodable[] {
  const label = args.label ?? 'mlp';
  const { tokens: T, hidden_size: d, intermediate_size: I } = args;
  checkCounts(label, { tokens: T, hidden_size: d, intermediate_size: I });
  const bands = mlpBands(label, passes.weights, args.weights, d, I);
  checkBindings(device, label, { x: [args.x, 4 * T * d], h: [args.h, 4 * T * I], out: [args.out, 4 * T * d], ...bandNeeds(label, passes.weights, bands, d, I) });
  passes.checkGrid(label, { 'hidden_size tiles': passes.tiles(d), 'intermediate_size tiles': passes.tiles(I) });
  // Constant routing, written once here: few tokens take the decode kernels (each token
  // chooses expert 0 at weight 1), more the grouped ones (one expert whose rows are all
  // tokens in order; down writes out as the y of its only pair, no combine).
  const constant = (data: Uint32Array<ArrayBuffer> | Float32Array<ArrayBuffer>, name: string) => constantBuffer(device, `${label}.${name}`, data, owned);
  const s = { T, K: 1, E: 1, d, I };
  const one = { first: 0, count: 1 };
  const decode = T <= MOE_DECODE_MAX_TOKENS;
  let gateUpRouting: GPUBuffer[];
  let downRouting: GPUBuffer[];
  if (decode) {
    const ids = constant(new Uint32Array(T), 'topk_ids');
    gateUpRouting = [ids];
    downRouting = [ids, constant(new Float32Array(T).fill(1), 'topk_weights')];
  } else {
    gateUpRouting = downRouting = [constant(new Uint32Array([0, T]), 'expert_offsets'), constant(Uint32Array.from({ length: T }, (_, t) => t), 'sorted_pairs')];
  }
  const path = decode ? 'decode' : 'grouped';
  const name = (step: string, list: readonly ProjectionBand[], b: ProjectionBand) => (list.length === 1 ? `${label}.${step}` : `${label}.${step}[${b.first}:${b.first + b.rows}]`);
  return [
    ...bands.gate_proj.map((g, i) =>
      passes.gateUp(name('gate_up', bands.gate_proj, g), path, s, one, { gate: g, up: bands.up_proj[i] }, { x: args.x, h: args.h, routing: gateUpRouting }, owned, { rows: g.rows, col: g.first })),
    ...passes.hiddenRound(label, T, I, args.h, owned),
    ...bands.down_proj.map((b) => passes.down(name('down', bands.down_proj, b), path, s, one, b, { h: args.h, out: args.out, routing: downRouting }, owned, { rows: b.rows, col: b.first }, accumulate)),
  ];
}

/**
 * Allocates the scratch buffers of a path for a shape (the model shares one set across layers),
 * for calls over at most `ranges` expert ranges (moeExpertsScratchBytes).
 */
export function createMoeExpertsScratch(device: GPUDevice, shape: MoeExpertsShape, path: MoePath, label = 'moe_experts', ranges = 1): MoeExpertsScratch & { destroy(): void } {
  const bytes = moeExpertsScratchBytes(shape, path, ranges);
  const make = (name: string, size: number) =>
    size > 0 ? device.createBuffer({ label: `${label}.${name}`, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }) : undefined;
  const h = make('h', bytes.h)!;
  const y = make('y', bytes.y);
  const expertOffsets = make('expert_offsets', bytes.expertOffsets);
  const sortedPairs = make('sorted_pairs', bytes.sortedPairs);
  return {
    h, y, expertOffsets, sortedPairs,
    destroy() {
      for (const b of [h, y, expertOffsets, sortedPairs]) b?.destroy();
    },
  };
}
