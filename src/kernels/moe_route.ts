// MoE router kernel wrapper (sigmoid scores, bias for choosing, group limit, top-k, weights):
// pipeline, bind group, params, dispatch, bytes/FLOPs. Shader: shaders/moe_route.wgsl (the
// selection in moe_route_common.wgsl, which the decode experts' gate_up and down also run: moe_experts.ts);
// reference: moe_route.ref.ts. The gate matmul (logits = x @ Wg^T) runs before it as a plain
// matmul; expert ids and weights stay on the GPU for the expert kernels.

import commonSource from '../../shaders/moe_route_common.wgsl?raw';
import shaderSource from '../../shaders/moe_route.wgsl?raw';
import { ArgumentError, ConfigError, UnsupportedConfigError } from '../errors.ts';
import { checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext } from '../gpu/kernel.ts';
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

const WG = 64;

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

/** moe_route_common.wgsl, for the kernels that run the selection (its `routing` axis). */
export const ROUTE_SNIPPET = { name: 'moe_route_common.wgsl', code: commonSource } as const;

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

export function createMoeRoute(ctx: KernelContext): Kernel<MoeRouteArgs> {
  const { device } = ctx.gpu;
  const pipelines = Object.fromEntries(
    ROUTINGS.map((routing) => [
      routing,
      kernelPipeline(ctx.pipelines, {
        kernel: 'moe_route',
        source: shaderSource,
        snippets: [ROUTE_SNIPPET],
        axes: { routing: ROUTINGS },
        variant: { routing },
        constants: { WG },
        // params, logits, bias (noaux_tc), topk_ids, topk_weights
        bindings: ['uniform', 'read-only-storage', routing === 'noaux_tc' ? 'read-only-storage' : undefined, 'storage', 'storage'],
      }),
    ]),
  ) as Record<(typeof ROUTINGS)[number], ReturnType<typeof kernelPipeline>>;
  return {
    name: 'moe_route',
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
        workgroups: Math.ceil(tokens / WG),
        cost: moeRouteCost(tokens, config),
      });
    },
  };
}
