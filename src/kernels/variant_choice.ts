// Per-adapter choice of a kernel's strategy by measurement: the first time a kernel runs on an
// adapter, time one call of each candidate on a small representative shape and keep the fastest,
// remembered under the adapter's identity so later sessions skip the measurement. The adapter's
// name alone (isSoftware) picks the defaults in createGemv / createGemm; this replaces a guess
// with a number where it matters, on GPUs whose strengths we cannot know ahead.

import type { Gpu } from '../gpu/device.ts';
import { align4, createStorageBuffer, uploadBuffer } from '../gpu/buffers.ts';
import { BLOCK, type Encodable, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { timeComputePass, type TimeOptions, type Timing } from '../gpu/timing.ts';
import type { VariantStore } from '../gpu/variant_store.ts';
import { createGemm, GEMM_STRATEGIES, type GemmStrategy } from './gemm_fp8.ts';
import { createGemv, GEMV_STRATEGIES, type GemvStrategy } from './gemv_fp8.ts';
import { createRmsNorm, RMSNORM_REDUCES, type RmsNormReduce } from './rmsnorm.ts';
import { createMlaDecode, MLA_DECODE_REDUCES, type MlaDecodeReduce } from './mla_decode.ts';
import { kvBBytes } from './mla_absorb.ts';
import { createMoeRoute, ROUTE_REDUCES, type RouteReduce, type RouterConfig } from './moe_route.ts';
import { createMoeExperts, createMoeExpertsScratch, EXPERT_READS, type ExpertReads } from './moe_experts.ts';
import { operandBytes, type MatmulBuffers, type MatmulShape, type WeightFormat } from './matmul_operands.ts';

// The stores live in gpu/ (runtime/ uses them too); re-exported for the kernels' callers.
export { defaultVariantStore, memoryVariantStore, webStorageStore, type StorageLike, type VariantStore } from '../gpu/variant_store.ts';

/** The time of one candidate's call: the benchmark's timeComputePass, or a fake in tests. */
export type TimeFunction = (gpu: Gpu, record: (pass: GPUComputePassEncoder) => void, options: TimeOptions) => Promise<Timing>;

export interface ChooseVariantOptions<V extends string> {
  gpu: Gpu;
  /** The kernel's name, e.g. "gemv_fp8". */
  kernel: string;
  /** What the representative shape stands for, e.g. "fp8 M=1 K=1024 N=1024"; part of the key. */
  shapeClass: string;
  /**
   * The candidates' code revision, part of the key: bump it when a candidate changes enough that
   * a choice remembered for the old code may no longer hold. Default 1.
   */
  revision?: number;
  /** The variants to choose among, the default first (it wins ties). */
  candidates: readonly V[];
  /** One call of `candidate` on the representative shape; destroyed after its measurement. */
  build(candidate: V): Encodable & { destroy(): void };
  store: VariantStore;
  /** Default timeComputePass. */
  time?: TimeFunction;
  /** Timed runs of a candidate that survives its first run; default 3. */
  runs?: number;
  /** A candidate whose first run is slower than this many times the best so far is not timed further; default 3. */
  giveUpRatio?: number;
}

export interface VariantChoice<V extends string> {
  variant: V;
  /** The store key. */
  key: string;
  /** False when the choice came from the store. */
  measured: boolean;
  /** Best time (ms) per candidate measured now; empty when remembered, absent for a failed one. */
  times: Partial<Record<V, number>>;
}

/**
 * The store key: adapter identity, kernel and its code revision, shape class and the candidate
 * list (a new candidate or revision re-measures).
 */
export function variantKey(gpu: Gpu, kernel: string, shapeClass: string, candidates: readonly string[], revision = 1): string {
  const { vendor, architecture, device, description } = gpu.adapter;
  const name = revision === 1 ? kernel : `${kernel}@${revision}`;
  return ['webmoe.variant', vendor, architecture, device, description, name, shapeClass, candidates.join(',')].join('|');
}

/** The fastest candidate on this adapter: from the store, else measured now and stored. */
export async function chooseVariant<V extends string>(options: ChooseVariantOptions<V>): Promise<VariantChoice<V>> {
  const { gpu, kernel, shapeClass, candidates, build, store, revision } = options;
  const time = options.time ?? timeComputePass;
  const runs = options.runs ?? 3;
  const giveUpRatio = options.giveUpRatio ?? 3;
  if (candidates.length === 0) throw new Error(`${kernel}: no variants to choose from`);
  const key = variantKey(gpu, kernel, shapeClass, candidates, revision);
  const remembered = store.get(key);
  if (remembered !== undefined && (candidates as readonly string[]).includes(remembered)) {
    return { variant: remembered as V, key, measured: false, times: {} };
  }

  const times: Partial<Record<V, number>> = {};
  const failures: string[] = [];
  let best: V | undefined;
  let bestMs = Infinity;
  const { device } = gpu;
  for (const candidate of candidates) {
    // A variant this adapter cannot compile or run is out of the race, not an error.
    device.pushErrorScope('validation');
    let ms = Infinity;
    let thrown: unknown;
    try {
      const call = build(candidate);
      try {
        const record = (pass: GPUComputePassEncoder) => call.encode(pass);
        ms = (await time(gpu, record, { warmup: 1, runs: 1 })).minMs;
        if (ms <= giveUpRatio * bestMs && runs > 1) ms = Math.min(ms, (await time(gpu, record, { warmup: 0, runs: runs - 1 })).minMs);
      } finally {
        call.destroy();
      }
    } catch (error) {
      thrown = error;
    }
    const invalid = await device.popErrorScope();
    if (thrown !== undefined || invalid) {
      failures.push(`${candidate}: ${invalid ? invalid.message : String(thrown)}`);
      continue;
    }
    times[candidate] = ms;
    if (ms < bestMs) {
      best = candidate;
      bestMs = ms;
    }
  }
  if (best === undefined) throw new Error(`${kernel}: every variant failed on this adapter (${failures.join('; ')})`);
  store.set(key, best);
  return { variant: best, key, measured: true, times };
}

export interface ChooseMatmulOptions {
  /** Default fp8: the Linears of the decode and prefill plans. */
  weights?: WeightFormat;
  /** Default timeComputePass. */
  time?: TimeFunction;
}

/**
 * Buffers for a representative y = x W^T, weight_only: W a fixed pattern of finite values (an
 * all-zero buffer might be compressed by some GPUs), x ones, power-of-two block scales.
 */
function matmulOperands(gpu: Gpu, shape: MatmulShape, weights: WeightFormat): MatmulBuffers & { destroy(): void } {
  const { device } = gpu;
  const bytes = operandBytes(shape, { weights, numerics: 'weight_only' });
  // Bytes 0x00 .. 0x3f: finite e4m3 codes, and small finite bf16 / f32 bit patterns.
  const pattern = Uint8Array.from({ length: bytes.weight }, (_, i) => (i * 37) & 0x3f);
  const weight = uploadBuffer(device, pattern, 'variant_choice.weight');
  const x = uploadBuffer(device, new Float32Array(shape.M * shape.K).fill(1), 'variant_choice.x');
  const y = createStorageBuffer(device, bytes.y, 'variant_choice.y');
  const scales = Math.ceil(shape.N / BLOCK) * Math.ceil(shape.K / BLOCK);
  const scale = weights === 'fp8' ? uploadBuffer(device, new Float32Array(scales).fill(0.5), 'variant_choice.scale') : undefined;
  return {
    x,
    weight,
    y,
    weight_scale_inv: scale,
    destroy() {
      for (const b of [x, weight, y, scale]) b?.destroy();
    },
  };
}

function shapeClass(shape: MatmulShape, weights: WeightFormat): string {
  return `${weights} weight_only M=${shape.M} K=${shape.K} N=${shape.N}`;
}

/**
 * The candidates with the kernel's own default for this adapter first: it is measured in full
 * first, so a much slower alternative is dropped after one run, and it wins a tie.
 */
function defaultFirst<V extends string>(all: readonly V[], preferred: V): V[] {
  return [preferred, ...all.filter((v) => v !== preferred)];
}

/** A call that also frees its operand buffers. */
function owning(call: PreparedCall, operands: { destroy(): void }): Encodable & { destroy(): void } {
  return {
    encode: (pass) => call.encode(pass),
    destroy() {
      call.destroy();
      operands.destroy();
    },
  };
}

/**
 * The decode GEMV's strategy for this adapter, measured on M=1, K=1024, N=1024 the first time.
 * subgroup_per_row is a candidate only where the device has 'subgroups'; the createGemv default
 * goes first and wins a tie.
 */
export async function chooseGemvStrategy(ctx: KernelContext, store: VariantStore, options: ChooseMatmulOptions = {}): Promise<GemvStrategy> {
  const { gpu } = ctx;
  const weights = options.weights ?? 'fp8';
  const shape = { M: 1, K: 1024, N: 1024 };
  const available = GEMV_STRATEGIES.filter((s) => s !== 'subgroup_per_row' || gpu.device.features.has('subgroups'));
  const choice = await chooseVariant({
    gpu,
    kernel: 'gemv_fp8',
    shapeClass: shapeClass(shape, weights),
    candidates: defaultFirst(available, gpu.adapter.isSoftware ? 'thread_per_4_rows' : 'workgroup_per_row'),
    store,
    time: options.time,
    build(strategy) {
      const operands = matmulOperands(gpu, shape, weights);
      return owning(createGemv(ctx, { weights, strategy }).prepare({ ...shape, ...operands, label: `gemv_fp8 ${strategy}` }), operands);
    },
  });
  return choice.variant;
}

/**
 * The prefill GEMM's strategy for this adapter, measured on M=64, K=512, N=512 the first time
 * (thread_tile's 4-row tile; chunks of 128 rows or more run its 32-row tile, not measured here).
 */
export async function chooseGemmStrategy(ctx: KernelContext, store: VariantStore, options: ChooseMatmulOptions = {}): Promise<GemmStrategy> {
  const { gpu } = ctx;
  const weights = options.weights ?? 'fp8';
  const shape = { M: 64, K: 512, N: 512 };
  const choice = await chooseVariant({
    gpu,
    kernel: 'gemm_fp8',
    revision: 3, // thread_tile: register tiles of 4 x 8 (32 x 8 from 128 rows), was 4 x 4 in loops
    shapeClass: shapeClass(shape, weights),
    candidates: defaultFirst(GEMM_STRATEGIES, gpu.adapter.isSoftware ? 'thread_tile' : 'workgroup_tile'),
    store,
    time: options.time,
    build(strategy) {
      const operands = matmulOperands(gpu, shape, weights);
      return owning(createGemm(ctx, { weights, strategy }).prepare({ ...shape, ...operands, label: `gemm_fp8 ${strategy}` }), operands);
    },
  });
  return choice.variant;
}

/** Calls of the candidate in one timed pass (delta is zeros: x stays as it is). */
export const RMSNORM_CALLS_PER_PASS = 8;

export interface ChooseRmsNormOptions {
  /** The row width measured; default 2048 (between the shipped checkpoint's 256 and V3's 7168). */
  width?: number;
  /** Default timeComputePass. */
  time?: TimeFunction;
}

/**
 * The RMSNorm reduction for this adapter, measured on one row (the decode step's norms) the first
 * time. `subgroup` is a candidate only where the device has 'subgroups'; the createRmsNorm
 * default (`thread` on software adapters, else `workgroup`) goes first and wins a tie.
 */
export async function chooseRmsNormReduce(ctx: KernelContext, store: VariantStore, options: ChooseRmsNormOptions = {}): Promise<RmsNormReduce> {
  const { gpu } = ctx;
  const { device } = gpu;
  const width = options.width ?? 2048;
  const available = RMSNORM_REDUCES.filter((r) => r !== 'subgroup' || device.features.has('subgroups'));
  const choice = await chooseVariant({
    gpu,
    kernel: 'rmsnorm',
    shapeClass: `rows=1 width=${width}`,
    candidates: defaultFirst(available, gpu.adapter.isSoftware ? 'thread' : 'workgroup'),
    store,
    time: options.time,
    build(reduce) {
      // With the residual add: a layer's two norms per step (post_attention_layernorm, the next input_layernorm).
      const values = Float32Array.from({ length: width }, (_, i) => 1 + (i % 7) / 8);
      const x = uploadBuffer(device, values, 'variant_choice.x');
      const delta = uploadBuffer(device, new Float32Array(width), 'variant_choice.delta');
      const weight = uploadBuffer(device, values, 'variant_choice.weight');
      const y = createStorageBuffer(device, 4 * width, 'variant_choice.y');
      const call = createRmsNorm(ctx, { reduce, addResidual: true }).prepare({ rows: 1, width, eps: 1e-6, x, delta, weight, y, label: `rmsnorm ${reduce}` });
      return {
        // A call is a fraction of a millisecond, near the tick of some adapters' timestamps
        // (65.5 us on SwiftShader): time RMSNORM_CALLS_PER_PASS of them in a row.
        encode(pass) {
          for (let i = 0; i < RMSNORM_CALLS_PER_PASS; i++) call.encode(pass);
        },
        destroy() {
          call.destroy();
          for (const b of [x, delta, weight, y]) b.destroy();
        },
      };
    },
  });
  return choice.variant;
}

/** A finite, varied pattern (an all-zero buffer might be compressed by some GPUs): values in [-0.5, 0.5). */
function pattern(n: number, period: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => ((i * 7) % period) / period - 0.5);
}

/** The reductions a device can run, the adapter's default first (it is measured in full first and wins a tie). */
function reductionCandidates<V extends string>(gpu: Gpu, all: readonly V[], preferred: V): V[] {
  return defaultFirst(all.filter((r) => r !== 'subgroup' || gpu.device.features.has('subgroups')), preferred);
}

/** Calls of the candidate in one timed pass (each writes the same outputs from the same inputs). */
export const MLA_DECODE_CALLS_PER_PASS = 4;

/** The attention of one decode step as the model runs it: its config's head and latent widths. */
export interface MlaDecodeChoiceShape {
  heads: number;
  kvLoraRank: number;
  ropeDim: number;
  qkNopeHeadDim: number;
  vHeadDim: number;
}

export interface ChooseMlaDecodeOptions {
  /** Cache positions attended; default 256 (one split: a step of a short chat, the fused path). */
  positions?: number;
  /** Default timeComputePass. */
  time?: TimeFunction;
}

/**
 * MLA decode attention's reduction for this adapter, measured the first time on one query row
 * over `positions` cache rows at the model's widths, kv_b_proj in fp8. `subgroup` is a candidate
 * only where the device has 'subgroups'; the createMlaDecode default (`thread` on software
 * adapters, else `workgroup`) goes first and wins a tie.
 */
export async function chooseMlaDecodeReduce(ctx: KernelContext, store: VariantStore, shape: MlaDecodeChoiceShape, options: ChooseMlaDecodeOptions = {}): Promise<MlaDecodeReduce> {
  const { gpu } = ctx;
  const { device } = gpu;
  const positions = options.positions ?? 256;
  const { heads, kvLoraRank: rkv, ropeDim: dr, qkNopeHeadDim: dn, vHeadDim: dv } = shape;
  const choice = await chooseVariant({
    gpu,
    kernel: 'mla_decode',
    shapeClass: `rows=1 positions=${positions} heads=${heads} rkv=${rkv} dr=${dr} dn=${dn} dv=${dv} fp8`,
    candidates: reductionCandidates(gpu, MLA_DECODE_REDUCES, gpu.adapter.isSoftware ? 'thread' : 'workgroup'),
    store,
    time: options.time,
    build(reduce) {
      const kv = kvBBytes({ heads, qkNopeHeadDim: dn, vHeadDim: dv, kvLoraRank: rkv }, 'fp8');
      const buffers = {
        qLat: uploadBuffer(device, pattern(heads * rkv, 11), 'variant_choice.q_lat'),
        qPe: uploadBuffer(device, pattern(Math.max(4, heads * dr), 5), 'variant_choice.q_pe'),
        cache: uploadBuffer(device, pattern(positions * (rkv + dr), 13), 'variant_choice.cache'),
        oLat: createStorageBuffer(device, 4 * heads * rkv, 'variant_choice.o_lat'),
        // Bytes 0x00 .. 0x3f: finite e4m3 codes.
        kvB: uploadBuffer(device, Uint8Array.from({ length: kv.weight }, (_, i) => (i * 37) & 0x3f), 'variant_choice.kv_b'),
        kvBScale: uploadBuffer(device, new Float32Array(kv.scale / 4).fill(0.5), 'variant_choice.kv_b.scale'),
        o: createStorageBuffer(device, 4 * heads * dv, 'variant_choice.o'),
      };
      const call = createMlaDecode(ctx, { weights: 'fp8', reduce }).prepare({
        rows: 1, heads, kvLoraRank: rkv, ropeDim: dr, qkNopeHeadDim: dn, vHeadDim: dv, maxT: positions, startPos: positions - 1,
        softmaxScale: 1 / Math.sqrt(rkv + dr), ...buffers, label: `mla_decode ${reduce}`,
      });
      return {
        // A call at a small model's widths is near the tick of some adapters' timestamps: several in a row.
        encode(pass) {
          for (let i = 0; i < MLA_DECODE_CALLS_PER_PASS; i++) call.encode(pass);
        },
        destroy() {
          call.destroy();
          for (const b of Object.values(buffers)) b.destroy();
        },
      };
    },
  });
  return choice.variant;
}

/** Calls of the candidate in one timed pass. */
export const ROUTE_CALLS_PER_PASS = 8;

/**
 * Who runs the router's selection on this adapter (moe_route and the decode experts' passes),
 * measured the first time on moe_route for one token with the model's router keys. `subgroup` is
 * a candidate only where the device has 'subgroups'; `thread` (the createMoeRoute default) goes
 * first and wins a tie.
 */
export async function chooseRouteReduce(ctx: KernelContext, store: VariantStore, config: RouterConfig, options: { time?: TimeFunction } = {}): Promise<RouteReduce> {
  const { gpu } = ctx;
  const { device } = gpu;
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  const noauxTc = (config.topk_method ?? 'noaux_tc') === 'noaux_tc';
  const choice = await chooseVariant({
    gpu,
    kernel: 'moe_route',
    shapeClass: `tokens=1 E=${E} G=${config.n_group} KG=${config.topk_group} K=${K} ${config.topk_method ?? 'noaux_tc'}`,
    candidates: reductionCandidates(gpu, ROUTE_REDUCES, 'thread'),
    store,
    time: options.time,
    build(reduce) {
      const buffers = {
        logits: uploadBuffer(device, pattern(E, 17), 'variant_choice.logits'),
        bias: noauxTc ? uploadBuffer(device, pattern(E, 3), 'variant_choice.bias') : undefined,
        topkIds: createStorageBuffer(device, 4 * K, 'variant_choice.topk_ids'),
        topkWeights: createStorageBuffer(device, 4 * K, 'variant_choice.topk_weights'),
      };
      const call = createMoeRoute(ctx, { reduce }).prepare({ tokens: 1, config, ...buffers, label: `moe_route ${reduce}` });
      return {
        encode(pass) {
          for (let i = 0; i < ROUTE_CALLS_PER_PASS; i++) call.encode(pass);
        },
        destroy() {
          call.destroy();
          for (const b of Object.values(buffers)) b?.destroy();
        },
      };
    },
  });
  return choice.variant;
}

/** Calls of the candidate in one timed pass. */
export const VERIFY_EXPERTS_CALLS_PER_PASS = 4;

/** The experts the measured verify step reads: a MoE layer's widths and router keys. */
export interface VerifyExpertsShape {
  hidden_size: number;
  moe_intermediate_size: number;
  /** n_shared_experts * moe_intermediate_size; 0 without shared experts. */
  shared_intermediate_size: number;
  router: RouterConfig;
}

export interface ChooseVerifyExpertsOptions {
  /** The router selection's reduction the model runs (chooseRouteReduce); default `thread`. */
  routeReduce?: RouteReduce;
  /** The most bytes of expert weights the measurement allocates; default 64 MiB (verifyWidths). */
  budgetBytes?: number;
  /** Default timeComputePass. */
  time?: TimeFunction;
}

/**
 * Two tokens' router logits that choose about half of their experts alike (the shipped
 * checkpoint's verify steps share ~0.4 of them): token 0 favours experts 0 .. K - 1, token 1
 * experts K - K/2 .. 2K - K/2 - 1 (with group limits the sets may shift a little); the rest low.
 * A token's logits are distinct (no ties), and the shared experts come in different k order.
 */
export function verifyLogits(config: RouterConfig): Float32Array {
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  const logits = new Float32Array(2 * E);
  const start = [0, K - Math.floor(K / 2)];
  for (let t = 0; t < 2; t++) {
    for (let e = 0; e < E; e++) {
      const chosen = e >= start[t] && e < start[t] + K;
      const rank = t === 0 ? e : E - 1 - e; // token 1 ranks its experts the other way round
      logits[t * E + e] = (chosen ? 3 : -3) + rank / (4 * E);
    }
  }
  return logits;
}

/**
 * The widths measured: the model's while its expert stacks (E routed and the shared, fp8) fit
 * `budget` bytes, else d and I scaled down alike (multiples of 4, so the aligned readers run). At
 * DeepSeek-V3's size (11 GB of experts) the measurement then runs at reduced widths with the
 * model's router keys, where the selection is a larger share of the work than in the model: a
 * per_expert win there is a lower bound of the model's.
 */
export function verifyWidths(shape: VerifyExpertsShape, budget: number): { d: number; I: number; sharedI: number } {
  const { hidden_size: d, moe_intermediate_size: I, shared_intermediate_size: sharedI } = shape;
  const bytes = 3 * d * (shape.router.n_routed_experts * I + sharedI);
  if (bytes <= budget) return { d, I, sharedI };
  const f = Math.sqrt(budget / bytes);
  const scaled = (n: number) => (n === 0 ? 0 : Math.max(4, 4 * Math.floor((n * f) / 4)));
  // the shared experts keep their width relative to the routed ones (fused into the passes when equal)
  return { d: scaled(d), I: scaled(I), sharedI: sharedI === I ? scaled(I) : scaled(sharedI) };
}

/**
 * How the MTP verify step's experts pass reads the experts of its 2 rows on this adapter
 * (moe_experts.ts ExpertReads), measured the first time on one 2-token MoE call as the decode
 * plans make it (the router in the passes, the shared experts, out += the sum), FP8, at the
 * model's widths (verifyWidths) with logits whose tokens share about half their experts
 * (verifyLogits). per_expert reads fewer bytes and does more selection work per invocation (all
 * tokens' picks), which pays on a bandwidth-bound GPU and may not on an instruction-bound CPU
 * adapter; per_pair (today's passes) goes first and wins a tie.
 */
export async function chooseVerifyExperts(ctx: KernelContext, store: VariantStore, shape: VerifyExpertsShape, options: ChooseVerifyExpertsOptions = {}): Promise<ExpertReads> {
  const { gpu } = ctx;
  const { device } = gpu;
  const routeReduce = options.routeReduce ?? 'thread';
  const { router } = shape;
  const E = router.n_routed_experts;
  const K = router.num_experts_per_tok;
  const T = 2;
  const { d, I, sharedI } = verifyWidths(shape, options.budgetBytes ?? 64 * 2 ** 20);
  const noauxTc = (router.topk_method ?? 'noaux_tc') === 'noaux_tc';
  const choice = await chooseVariant({
    gpu,
    kernel: 'moe_experts_verify',
    shapeClass: `tokens=${T} d=${d} I=${I} shared=${sharedI} E=${E} G=${router.n_group} KG=${router.topk_group} K=${K} ${router.topk_method ?? 'noaux_tc'} ${routeReduce} fp8`,
    candidates: EXPERT_READS,
    store,
    time: options.time,
    build(expertReads) {
      const stack = (experts: number, inter: number) => {
        const words = (rows: number, cols: number) => uploadBuffer(device, codes(experts * align4(rows * cols)), 'variant_choice.expert_weight');
        const scales = (rows: number, cols: number) => uploadBuffer(device, new Float32Array(experts * Math.ceil(rows / BLOCK) * Math.ceil(cols / BLOCK)).fill(0.01), 'variant_choice.expert_scale');
        return {
          gate_proj: { weight: words(inter, d), weight_scale_inv: scales(inter, d) },
          up_proj: { weight: words(inter, d), weight_scale_inv: scales(inter, d) },
          down_proj: { weight: words(d, inter), weight_scale_inv: scales(d, inter) },
        };
      };
      const routed = stack(E, I);
      const sharedWeights = sharedI > 0 ? stack(1, sharedI) : undefined;
      const shape2 = { tokens: T, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K };
      const scratch = createMoeExpertsScratch(device, shape2, 'decode', 'variant_choice.scratch');
      const buffers = {
        x: uploadBuffer(device, pattern(T * d, 13), 'variant_choice.x'),
        logits: uploadBuffer(device, verifyLogits(router), 'variant_choice.logits'),
        bias: noauxTc ? uploadBuffer(device, new Float32Array(E), 'variant_choice.bias') : undefined,
        topkIds: createStorageBuffer(device, 4 * T * K, 'variant_choice.topk_ids'),
        topkWeights: createStorageBuffer(device, 4 * T * K, 'variant_choice.topk_weights'),
        out: uploadBuffer(device, new Float32Array(T * d), 'variant_choice.out'),
        sharedH: createStorageBuffer(device, 4 * T * Math.max(1, sharedI), 'variant_choice.shared_h'),
      };
      const projections = [routed, sharedWeights].flatMap((w) => (w ? Object.values(w).flatMap((p) => [p.weight, p.weight_scale_inv]) : []));
      const free = () => {
        for (const b of [...Object.values(buffers), ...projections, scratch]) b?.destroy();
      };
      try {
        const kernel = createMoeExperts(ctx, { routeReduce, expertReads });
        const args = {
          ...shape2, x: buffers.x, topkIds: buffers.topkIds, topkWeights: buffers.topkWeights, weights: routed, scratch, out: buffers.out,
          router: { config: router, logits: buffers.logits, bias: buffers.bias },
          shared: sharedWeights && { intermediate_size: sharedI, weights: sharedWeights, h: buffers.sharedH },
          label: `moe_experts_verify ${expertReads}`,
        };
        // as the decode plans call it (src/model/ffn.ts): out += the sum where the down pass writes all of it
        const call = kernel.prepare({ ...args, accumulate: kernel.sumsInOnePass(args) });
        return {
          encode(pass) {
            for (let i = 0; i < VERIFY_EXPERTS_CALLS_PER_PASS; i++) call.encode(pass);
          },
          destroy() {
            call.destroy();
            free();
          },
        };
      } catch (error) {
        free();
        throw error;
      }
    },
  });
  return choice.variant;
}

/** n bytes 0x00 .. 0x3f: finite e4m3 codes (not all zero: some GPUs might compress those). */
function codes(n: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 37) & 0x3f;
  return bytes;
}
