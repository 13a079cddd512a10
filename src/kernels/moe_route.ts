// MoE router kernel wrapper (sigmoid scores, bias for choosing, group limit, top-k, weights):
// pipeline, bind group, params, dispatch, bytes/FLOPs. Shader: shaders/moe_route.wgsl;
// reference: moe_route.ref.ts. The gate matmul (logits = x @ Wg^T) runs before it as a plain
// matmul; expert ids and weights stay on the GPU for the expert kernels.

import { ConfigError, UnsupportedConfigError } from '../errors.ts';
import shaderSource from '../../shaders/moe_route.wgsl?raw';
import type { RouterConfig } from './moe_route.ref.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';

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
  if (G > 1 && E / G < 2) {
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

export interface MoeRoutePipeline {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly workgroupSize: number;
}

const WG = 64;

/** Builds the pipeline (the one place to move onto the shared pipeline cache). */
export function createMoeRoutePipeline(device: GPUDevice): MoeRoutePipeline {
  const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({
    binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type },
  });
  const layout = device.createBindGroupLayout({
    label: 'moe_route',
    entries: [
      entry(0, 'uniform'), // params
      entry(1, 'read-only-storage'), // logits
      entry(2, 'read-only-storage'), // bias
      entry(3, 'storage'), // topk_ids
      entry(4, 'storage'), // topk_weights
    ],
  });
  const pipeline = device.createComputePipeline({
    label: 'moe_route',
    layout: device.createPipelineLayout({ label: 'moe_route', bindGroupLayouts: [layout] }),
    compute: {
      module: device.createShaderModule({ label: 'moe_route.wgsl', code: shaderSource }),
      entryPoint: 'main',
      constants: { WG },
    },
  });
  return { pipeline, layout, workgroupSize: WG };
}

/**
 * Bytes and FLOPs for the benchmark: logits read once (the K + 1 passes over them hit the cache),
 * the bias, ids and weights written; (K + 1) passes of E biased scores at 5 FLOPs each (the
 * sigmoid counted as 4).
 */
export function moeRouteCost(tokens: number, config: RouterConfig): { bytes: number; flops: number } {
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  return { bytes: 4 * (tokens * E + E + 2 * tokens * K), flops: tokens * (K + 1) * E * 5 };
}

export interface MoeRouteArgs {
  tokens: number;
  config: RouterConfig;
  /** [tokens, n_routed_experts] f32 router logits. */
  logits: GPUBuffer;
  /** [n_routed_experts] f32 e_score_correction_bias. */
  bias: GPUBuffer;
  /** [tokens, num_experts_per_tok] u32 out. */
  topkIds: GPUBuffer;
  /** [tokens, num_experts_per_tok] f32 out. */
  topkWeights: GPUBuffer;
  label?: string;
}

export interface PreparedMoeRoute {
  readonly bytes: number;
  readonly flops: number;
  encode(pass: GPUComputePassEncoder): void;
  destroy(): void;
}

/** Validates the arguments, writes the params and builds the bind group once. */
export function prepareMoeRoute(device: GPUDevice, kernel: MoeRoutePipeline, args: MoeRouteArgs): PreparedMoeRoute {
  const { tokens, config } = args;
  const label = args.label ?? 'moe_route';
  checkRouterConfig(config);
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  const need: [string, GPUBuffer, number][] = [
    ['logits', args.logits, tokens * E],
    ['bias', args.bias, E],
    ['topkIds', args.topkIds, tokens * K],
    ['topkWeights', args.topkWeights, tokens * K],
  ];
  for (const [name, buffer, count] of need) {
    if (buffer.size < 4 * count) throw new RangeError(`${label}: ${name} is ${buffer.size} bytes, needs ${4 * count}`);
  }

  const params = new ArrayBuffer(32);
  new Uint32Array(params, 0, 6).set([tokens, E, config.n_group, config.topk_group, K, config.norm_topk_prob ? 1 : 0]);
  new Float32Array(params, 24, 1)[0] = config.routed_scaling_factor;
  const paramsBuffer = device.createBuffer({ label: `${label}.params`, size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(paramsBuffer, 0, params);
  const bindGroup = device.createBindGroup({
    label,
    layout: kernel.layout,
    entries: [paramsBuffer, args.logits, args.bias, args.topkIds, args.topkWeights].map((buffer, binding) => ({
      binding,
      resource: { buffer },
    })),
  });
  const workgroups = Math.ceil(tokens / kernel.workgroupSize);
  const [gx, gy] = workgroupGrid(workgroups, device.limits.maxComputeWorkgroupsPerDimension);
  return {
    ...moeRouteCost(tokens, config),
    encode(pass) {
      if (workgroups === 0) return;
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
    },
    destroy() {
      paramsBuffer.destroy();
    },
  };
}

