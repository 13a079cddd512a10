// a += b in place, f32: the MoE output as routed experts plus shared experts (DEEPSEEK_V3_MATH.md
// 4.6), before the residual add. Shader: shaders/add.wgsl; reference: Math.fround(a[i] + b[i]).

import addSource from '../../shaders/add.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import type { PreparedCall } from './matmul_operands.ts';
import type { PipelineCache } from './pipeline_cache.ts';

export type { PreparedCall } from './matmul_operands.ts';

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
export function addCost(n: number): { bytes: number; flops: number } {
  return { bytes: 12 * n, flops: n };
}

export function createAdd(cache: PipelineCache, options: AddOptions = {}): { prepare(args: AddArgs): PreparedCall } {
  const { device } = cache;
  const workgroupSize = options.workgroupSize ?? 64;
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1) {
    throw new ArgumentError(`add: workgroupSize ${workgroupSize} must be a positive integer`);
  }
  const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({
    binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type },
  });
  const kernel = cache.get({ kernel: 'add', variant: {}, constants: { WORKGROUP_SIZE: workgroupSize } }, () => ({
    code: addSource,
    entries: [entry(0, 'uniform'), entry(1, 'storage'), entry(2, 'read-only-storage')],
  }));

  return {
    prepare({ n, a, b, label = 'add' }) {
      if (!Number.isInteger(n) || n < 1 || n >= 2 ** 32) throw new ArgumentError(`${label}: n must be a positive 32-bit integer, got ${n}`);
      // WebGPU forbids binding a written buffer twice in one bind group.
      if (a === b) throw new ArgumentError(`${label}: a and b must be different buffers`);
      for (const [name, buffer] of [['a', a], ['b', b]] as const) {
        if (buffer.size < 4 * n) throw new ArgumentError(`${label}: ${name} holds ${buffer.size} bytes, n=${n} needs ${4 * n}`);
        if (4 * n > device.limits.maxStorageBufferBindingSize) {
          throw new GpuLimitError(
            `${label}: ${name} needs a ${4 * n}-byte binding, over this GPU's maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`,
          );
        }
      }
      const params = device.createBuffer({ label: `${label}.params`, size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(params, 0, new Uint32Array([n, 0, 0, 0]));
      // Bind exactly n elements, so a larger a is left alone past n.
      const bindGroup = device.createBindGroup({
        label,
        layout: kernel.bindGroupLayout,
        entries: [
          { binding: 0, resource: { buffer: params } },
          { binding: 1, resource: { buffer: a, size: 4 * n } },
          { binding: 2, resource: { buffer: b, size: 4 * n } },
        ],
      });
      const [gx, gy] = workgroupGrid(Math.ceil(n / workgroupSize), device.limits.maxComputeWorkgroupsPerDimension);
      return {
        ...addCost(n),
        encode(pass) {
          pass.setPipeline(kernel.pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(gx, gy);
        },
        destroy() {
          params.destroy();
        },
      };
    },
  };
}
