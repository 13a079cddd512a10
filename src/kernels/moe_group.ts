// Grouping of a prefill chunk's (token, k) pairs by expert, on the GPU (no readback): wrapper of
// shaders/moe_group.wgsl; reference: groupByExpertRef in moe_experts.ref.ts. Its outputs drive
// the grouped path of the expert kernels (moe_experts.ts).

import groupSource from '../../shaders/moe_group.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import type { PipelineCache } from './pipeline_cache.ts';

/** Invocations of the one workgroup; each owns experts lid, lid + WG, ... */
const WG = 256;

export interface MoeGroupArgs {
  /** T * num_experts_per_tok. */
  pairs: number;
  /** n_routed_experts. */
  experts: number;
  /** [pairs] u32 expert ids (moe_route's topk_ids). */
  topkIds: GPUBuffer;
  /** [experts + 1] u32, written: pairs of expert e are sorted rows expert_offsets[e] .. expert_offsets[e + 1]. */
  expertOffsets: GPUBuffer;
  /** [pairs] u32, written: the pairs t * topk + k in expert order, ascending within an expert. */
  sortedPairs: GPUBuffer;
  label?: string;
}

export interface PreparedMoeGroup {
  readonly bytes: number;
  readonly flops: number;
  encode(pass: GPUComputePassEncoder): void;
  destroy(): void;
}

/** Bytes: ids read twice, offsets and sorted pairs written; no FLOPs (compares only). */
export function moeGroupCost(pairs: number, experts: number): { bytes: number; flops: number } {
  return { bytes: 4 * (2 * pairs + experts + 1 + pairs), flops: 0 };
}

export function prepareMoeGroup(device: GPUDevice, cache: PipelineCache, args: MoeGroupArgs): PreparedMoeGroup {
  const { pairs, experts } = args;
  const label = args.label ?? 'moe_group';
  for (const [name, v] of Object.entries({ pairs, experts })) {
    if (!Number.isInteger(v) || v < 1) throw new ArgumentError(`${label}: ${name} must be a positive integer, got ${v}`);
  }
  const need: [string, GPUBuffer, number][] = [
    ['topkIds', args.topkIds, pairs],
    ['expertOffsets', args.expertOffsets, experts + 1],
    ['sortedPairs', args.sortedPairs, pairs],
  ];
  for (const [name, buffer, count] of need) {
    if (buffer.size < 4 * count) throw new ArgumentError(`${label}: ${name} is ${buffer.size} bytes, needs ${4 * count}`);
  }
  const kernel = cache.get({ kernel: 'moe_group', variant: {}, constants: { WG } }, () => ({
    code: groupSource,
    entries: [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
      { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
      { binding: 2, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
      { binding: 3, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
    ],
  }));
  const params = device.createBuffer({ label: `${label}.params`, size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(params, 0, new Uint32Array([pairs, experts, 0, 0]));
  const bindGroup = device.createBindGroup({
    label,
    layout: kernel.bindGroupLayout,
    entries: [params, args.topkIds, args.expertOffsets, args.sortedPairs].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  return {
    ...moeGroupCost(pairs, experts),
    encode(pass) {
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(1);
    },
    destroy() {
      params.destroy();
    },
  };
}
