// a += b in place, f32: the MoE output as routed experts plus shared experts (src/model/MATH.md
// 4.6), before the residual add. Shader: shaders/add.wgsl; reference: Math.fround(a[i] + b[i]).

import addSource from '../../shaders/add.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts, checkU32Indices, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext } from '../gpu/kernel.ts';

export interface AddArgs {
  /** Elements to add. */
  n: number;
  /** [n] f32, updated: a[i] += b[i]. */
  a: GPUBuffer;
  /** [n] f32; another buffer than a. */
  b: GPUBuffer;
  label?: string;
}

export interface AddOptions {
  /** Invocations per workgroup, default 64. A tuning number. */
  workgroupSize?: number;
}

/** Reads a and b, writes a; one FLOP per element. */
export function addCost(n: number): Cost {
  return { bytes: 12 * n, flops: n };
}

export function createAdd(ctx: KernelContext, options: AddOptions = {}): Kernel<AddArgs> {
  const { device } = ctx.gpu;
  const workgroupSize = options.workgroupSize ?? 64;
  checkCounts('add', { workgroupSize });
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'add',
    source: addSource,
    constants: { WORKGROUP_SIZE: workgroupSize },
    bindings: ['uniform', 'storage', 'read-only-storage'],
  });

  return {
    name: 'add',
    prepare({ n, a, b, label = 'add' }) {
      checkCounts(label, { n });
      checkU32Indices(label, { n });
      // WebGPU forbids binding a written buffer twice in one bind group.
      if (a === b) throw new ArgumentError(`${label}: a and b must be different buffers`);
      checkBindings(device, label, { a: [a, 4 * n], b: [b, 4 * n] }, `n=${n}`);
      const uniforms = new Uniforms(device, label, ['u32']);
      uniforms.write([n]);
      // Bind exactly n elements, so a larger a is left alone past n.
      return singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [{ buffer: a, size: 4 * n }, { buffer: b, size: 4 * n }],
        workgroups: Math.ceil(n / workgroupSize),
        cost: addCost(n),
      });
    },
  };
}
