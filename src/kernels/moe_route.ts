// MoE router kernel wrapper (sigmoid scores, bias for choosing, group limit, top-k, weights):
// pipeline, bind group, params, dispatch, bytes/FLOPs. Shader: shaders/moe_route.wgsl (the
// selection in moe_route_common.wgsl, which the decode experts' gate_up and down also run: moe_experts.ts);
// reference: moe_route.ref.ts. The gate matmul (logits = x @ Wg^T) runs before it as a plain
// matmul; expert ids and weights stay on the GPU for the expert kernels.

import commonSource from '../../shaders/moe_route_common.wgsl?raw';
import shaderSource from '../../shaders/moe_route.wgsl?raw';
import { ArgumentError, ConfigError, GpuLimitError, UnsupportedConfigError } from '../errors.ts';
import { checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext } from '../gpu/kernel.ts';
import { subgroupMinSize } from './norm_reduce.ts';
import type { RouterConfig } from './moe_route.ref.ts';

export type { RouterConfig } from './moe_route.ref.ts';

/** Groups the shader can hold (it keeps the kept groups as bits of a u32). */
export const MAX_GROUPS = 32;

/**
 * Throws the typed error a config.json with these router keys deserves: an inconsistent one is
 * a ConfigError, one the kernel cannot run an UnsupportedConfigError.
 */
export function checkRouterConfig(config: RouterConfig): void {
  const { n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K } = config;
  for (const [key, v] of Object.entries({ n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K })) {
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`config.json: ${key} must be a positive integer, got ${v}`, key);
  }
  if (E % G !== 0) throw new ConfigError(`config.json: n_routed_experts (${E}) must be a multiple of n_group (${G})`, 'n_group');
  if (G > MAX_GROUPS) throw new UnsupportedConfigError('n_group', `at most ${MAX_GROUPS} expert groups are supported, got ${G}`);
  if ((config.topk_method ?? 'noaux_tc') === 'noaux_tc' && G > 1 && E / G < 2) {
    throw new ConfigError(
      `config.json: n_group (${G}) leaves fewer than 2 experts per group; a group's score is the sum of its top 2`,
      'n_group',
    );
  }
  if (KG > G) throw new ConfigError(`config.json: topk_group (${KG}) exceeds n_group (${G})`, 'topk_group');
  if (K > (KG * E) / G) {
    throw new ConfigError(
      `config.json: num_experts_per_tok (${K}) exceeds the ${(KG * E) / G} experts of the ${KG} kept groups`,
      'num_experts_per_tok',
    );
  }
}

const WG = 64; // thread: tokens per workgroup
const WG_SOFTWARE_SUBGROUP = 4; // subgroup, on CPU adapters that do not report their subgroup size: SwiftShader's
const WG_GPU_SUBGROUP = 32; // subgroup, on GPUs that do not report it

/**
 * Who runs one token's selection (moe_route_common.wgsl's `route_reduce`): one invocation alone
 * (`thread`), or the lanes of a subgroup together (`subgroup`, needs 'subgroups'; bit for bit the
 * same ids and weights). The same choice for moe_route and the decode experts' passes.
 */
export const ROUTE_REDUCES = ['thread', 'subgroup'] as const;
export type RouteReduce = (typeof ROUTE_REDUCES)[number];

export interface MoeRouteOptions {
  /** Default `thread`; chooseRouteReduce (variant_choice.ts) measures which is faster here. */
  reduce?: RouteReduce;
  /**
   * `subgroup` only: invocations per token, any count the adapter allows in a workgroup. Default
   * the adapter's smallest subgroup size (one subgroup per token), else 4 on CPU adapters, 32 on GPUs.
   */
  subgroupWorkgroupSize?: number;
}

/** The selection's reduction and moe_route's workgroup size (typed errors for bad options or a missing feature). */
export function resolveRouteReduce(ctx: KernelContext, kernel: string, options: MoeRouteOptions): { reduce: RouteReduce; workgroupSize: number } {
  const { device } = ctx.gpu;
  const reduce = options.reduce ?? 'thread';
  if (!ROUTE_REDUCES.includes(reduce)) throw new ArgumentError(`${kernel}: "${String(reduce)}" is not a route reduction; use one of ${ROUTE_REDUCES.join(', ')}`);
  if (reduce === 'thread') {
    if (options.subgroupWorkgroupSize !== undefined) throw new ArgumentError(`${kernel}: subgroupWorkgroupSize is for the subgroup reduction only`);
    return { reduce, workgroupSize: WG };
  }
  if (!device.features.has('subgroups')) throw new GpuLimitError(`${kernel}: the subgroup route reduction needs the 'subgroups' feature, which this device lacks`);
  const workgroupSize = options.subgroupWorkgroupSize ?? subgroupMinSize(device) ?? (ctx.gpu.adapter.isSoftware ? WG_SOFTWARE_SUBGROUP : WG_GPU_SUBGROUP);
  const max = Math.min(device.limits.maxComputeWorkgroupSizeX, device.limits.maxComputeInvocationsPerWorkgroup);
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1 || workgroupSize > max) {
    throw new ArgumentError(`${kernel}: subgroupWorkgroupSize must be an integer in 1 .. ${max}, got ${workgroupSize}`);
  }
  return { reduce, workgroupSize };
}

/**
 * Bytes and FLOPs for the benchmark: logits read once (the K + 1 passes over them hit the cache),
 * the bias, ids and weights written; (K + 1) passes of E biased scores at 5 FLOPs each (the
 * sigmoid counted as 4).
 */
export function moeRouteCost(tokens: number, config: RouterConfig): Cost {
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  return { bytes: 4 * (tokens * E + E + 2 * tokens * K), flops: tokens * (K + 1) * E * 5 };
}

export interface MoeRouteArgs extends RouterInputs {
  tokens: number;
  /** [tokens, num_experts_per_tok] u32 out. */
  topkIds: GPUBuffer;
  /** [tokens, num_experts_per_tok] f32 out. */
  topkWeights: GPUBuffer;
  label?: string;
}

export const ROUTINGS = ['noaux_tc', 'softmax'] as const;
export type Routing = (typeof ROUTINGS)[number];

/**
 * moe_route_common.wgsl, for the kernels that run the selection (its axes `routing` and
 * `route_reduce`); the first snippet of their modules (the subgroup variant's `enable`).
 */
export const ROUTE_SNIPPET = { name: 'moe_route_common.wgsl', code: commonSource } as const;
const ROUTE_AXES = { routing: ROUTINGS, route_reduce: ROUTE_REDUCES };

/** The router's inputs: the config's keys, the gate's logits and (noaux_tc) the bias. */
export interface RouterInputs {
  config: RouterConfig;
  /** [tokens, n_routed_experts] f32 router logits. */
  logits: GPUBuffer;
  /** [n_routed_experts] f32 e_score_correction_bias (noaux_tc only; absent for DeepSeek-V2's softmax routing). */
  bias?: GPUBuffer;
}

/**
 * Checks a router call (typed errors for the config, ArgumentError for the buffers) and writes its
 * RouteParams uniform (moe_route_common.wgsl): the routing variant and the uniform.
 */
export function prepareRouteParams(device: GPUDevice, label: string, tokens: number, args: RouterInputs & { topkIds: GPUBuffer; topkWeights: GPUBuffer }): { routing: Routing; uniforms: Uniforms } {
  const { config } = args;
  checkRouterConfig(config);
  checkCounts(label, { tokens }, 0);
  const method = config.topk_method ?? 'noaux_tc';
  const scoring = config.scoring_func ?? 'sigmoid';
  if ((method === 'noaux_tc') !== (scoring === 'sigmoid')) {
    throw new ArgumentError(`${label}: ${scoring} scores with topk_method ${method}: noaux_tc goes with sigmoid, greedy and group_limited_greedy with softmax`);
  }
  const routing = method === 'noaux_tc' ? 'noaux_tc' : 'softmax';
  if (routing === 'noaux_tc' && !args.bias) throw new ArgumentError(`${label}: noaux_tc routing needs e_score_correction_bias`);
  if (routing === 'softmax' && args.bias) throw new ArgumentError(`${label}: ${method} routing has no bias`);
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  checkBindings(device, label, {
    logits: [args.logits, 4 * tokens * E],
    ...(args.bias ? { bias: [args.bias, 4 * E] as const } : {}),
    topkIds: [args.topkIds, 4 * tokens * K],
    topkWeights: [args.topkWeights, 4 * tokens * K],
  });
  const groups = method === 'greedy' ? 1 : config.n_group;
  const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32', 'u32', 'f32']);
  uniforms.write([tokens, E, groups, method === 'greedy' ? 1 : config.topk_group, K, config.norm_topk_prob ? 1 : 0, config.routed_scaling_factor]);
  return { routing, uniforms };
}

export interface MoeRoute extends Kernel<MoeRouteArgs> {
  readonly reduce: RouteReduce;
  /** Tokens per workgroup (thread), or invocations per token (subgroup). */
  readonly workgroupSize: number;
}

export function createMoeRoute(ctx: KernelContext, options: MoeRouteOptions = {}): MoeRoute {
  const { device } = ctx.gpu;
  const { reduce, workgroupSize } = resolveRouteReduce(ctx, 'moe_route', options);
  const pipelines = Object.fromEntries(
    ROUTINGS.map((routing) => [
      routing,
      kernelPipeline(ctx.pipelines, {
        kernel: 'moe_route',
        source: shaderSource,
        snippets: [ROUTE_SNIPPET],
        axes: ROUTE_AXES,
        variant: { routing, route_reduce: reduce },
        constants: { WG: workgroupSize },
        // params, logits, bias (noaux_tc), topk_ids, topk_weights
        bindings: ['uniform', 'read-only-storage', routing === 'noaux_tc' ? 'read-only-storage' : undefined, 'storage', 'storage'],
      }),
    ]),
  ) as Record<(typeof ROUTINGS)[number], ReturnType<typeof kernelPipeline>>;
  return {
    name: 'moe_route',
    reduce,
    workgroupSize,
    prepare(args) {
      const label = args.label ?? 'moe_route';
      const { routing, uniforms } = prepareRouteParams(device, label, args.tokens, args);
      const { tokens, config } = args;
      return singleDispatch({
        device,
        label,
        pipeline: pipelines[routing],
        uniforms,
        bindings: [args.logits, args.bias, args.topkIds, args.topkWeights],
        workgroups: reduce === 'subgroup' ? tokens : Math.ceil(tokens / WG),
        cost: moeRouteCost(tokens, config),
      });
    },
  };
}
