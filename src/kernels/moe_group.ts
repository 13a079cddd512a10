// Grouping of a prefill chunk's (token, k) pairs by expert, on the GPU (no readback): wrapper of
// shaders/moe_group.wgsl; reference: groupByExpertRef in moe_experts.ref.ts. Its outputs drive
// the grouped path of the expert kernels (moe_experts.ts).

import groupSource from '../../shaders/moe_group.wgsl?raw';
import { checkBindings, checkCounts, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext } from '../gpu/kernel.ts';

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

/** Bytes: ids read twice, offsets and sorted pairs written; no FLOPs (compares only). */
export function moeGroupCost(pairs: number, experts: number): Cost {
  return { bytes: 4 * (2 * pairs + experts + 1 + pairs), flops: 0 };
}

export function createMoeGroup(ctx: KernelContext): Kernel<MoeGroupArgs> {
  const { device } = ctx.gpu;
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'moe_group',
    source: groupSource,
    constants: { WG },
    bindings: ['uniform', 'read-only-storage', 'storage', 'storage'],
  });
  return {
    name: 'moe_group',
    prepare(args) {
      const { pairs, experts } = args;
      const label = args.label ?? 'moe_group';
      checkCounts(label, { pairs, experts });
      checkBindings(device, label, {
        topkIds: [args.topkIds, 4 * pairs],
        expertOffsets: [args.expertOffsets, 4 * (experts + 1)],
        sortedPairs: [args.sortedPairs, 4 * pairs],
      });
      const uniforms = new Uniforms(device, label, ['u32', 'u32']);
      uniforms.write([pairs, experts]);
      // One workgroup: each invocation owns the experts lid, lid + WG, ...
      return singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [args.topkIds, args.expertOffsets, args.sortedPairs],
        workgroups: [1, 1, 1],
        cost: moeGroupCost(pairs, experts),
      });
    },
  };
}
