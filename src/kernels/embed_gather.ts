// The embedding lookup h0[t] = embed_tokens[ids[t]] (DEEPSEEK_V3_MATH.md 4.1), the first op of a
// forward pass (and of the MTP module, with its own embed_tokens copy). The ids are read on the
// GPU, so the previous step's sampled token goes from the sampler to here without a readback.
// Shader: shaders/embed_gather.wgsl; reference: embed_gather.ref.ts.

import gatherSource from '../../shaders/embed_gather.wgsl?raw';
import type { Gpu } from '../gpu/device.ts';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import type { PreparedCall } from './matmul_operands.ts';
import type { CachedPipeline, PipelineCache } from './pipeline_cache.ts';
import { composeShader } from './shader_compose.ts';

export type { PreparedCall } from './matmul_operands.ts';

/** How `model.embed_tokens.weight` is stored: BF16 in the release; F16 and F32 are read as they are. */
export const EMBED_DTYPES = ['bf16', 'f16', 'f32'] as const;
export type EmbedDtype = (typeof EMBED_DTYPES)[number];

const ELEMENT_BYTES: Record<EmbedDtype, number> = { bf16: 2, f16: 2, f32: 4 };

export interface EmbedGatherOptions {
  gpu: Gpu;
  cache: PipelineCache;
  /** Default bf16. */
  dtype?: EmbedDtype;
  /** Invocations per workgroup, default 64. A tuning number. */
  workgroupSize?: number;
}

export interface EmbedGatherArgs {
  /** Tokens to embed. */
  T: number;
  /** Rows of the table (vocab_size). */
  vocab: number;
  /** Columns of the table (hidden_size). */
  d: number;
  /** [T] u32 token ids. An id >= vocab gives a row of zeros (never an out-of-bounds read). */
  ids: GPUBuffer | GPUBufferBinding;
  /** [vocab, d] in `dtype`, little-endian, rows not padded, as in the checkpoint. */
  table: GPUBuffer | GPUBufferBinding;
  /** [T, d] f32, written. */
  h: GPUBuffer | GPUBufferBinding;
  label?: string;
}

export interface EmbedGather {
  readonly dtype: EmbedDtype;
  readonly workgroupSize: number;
  /** Check the arguments, write the params, build the bind group: once per plan, not per step. */
  prepare(args: EmbedGatherArgs): PreparedCall;
}

/** Bytes read (ids, T table rows) and written (h); a gather does no arithmetic. */
export function embedGatherCost({ T, d, dtype }: { T: number; d: number; dtype: EmbedDtype }): { bytes: number; flops: number } {
  return { bytes: 4 * T + ELEMENT_BYTES[dtype] * T * d + 4 * T * d, flops: 0 };
}

const asBinding = (resource: GPUBuffer | GPUBufferBinding): GPUBufferBinding => ('buffer' in resource ? resource : { buffer: resource });
const bindingSize = (b: GPUBufferBinding): number => b.size ?? b.buffer.size - (b.offset ?? 0);

export function createEmbedGather(options: EmbedGatherOptions): EmbedGather {
  const { gpu, cache } = options;
  const dtype = options.dtype ?? 'bf16';
  if (!EMBED_DTYPES.includes(dtype)) throw new ArgumentError(`embed_gather: dtype "${dtype}" is not one of ${EMBED_DTYPES.join(', ')}`);
  const workgroupSize = options.workgroupSize ?? 64;
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1) {
    throw new ArgumentError(`embed_gather: workgroupSize ${workgroupSize} must be a positive integer`);
  }
  const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({
    binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type },
  });
  const kernel: CachedPipeline = cache.get({ kernel: 'embed_gather', variant: { dtype }, constants: { WORKGROUP_SIZE: workgroupSize } }, () => ({
    code: composeShader({ kernel: { name: 'embed_gather.wgsl', code: gatherSource }, axes: { dtype: EMBED_DTYPES }, variant: { dtype } }),
    entries: [entry(0, 'uniform'), entry(1, 'read-only-storage'), entry(2, 'read-only-storage'), entry(3, 'storage')],
  }));
  const { device } = gpu;

  return {
    dtype,
    workgroupSize,
    prepare(args) {
      const { T, vocab, d, label = 'embed_gather' } = args;
      for (const [name, value] of Object.entries({ T, vocab, d })) {
        if (!Number.isInteger(value) || value < 1) throw new ArgumentError(`${label}: ${name} must be a positive integer, got ${value}`);
      }
      // Element indices are u32 in the shader.
      if (vocab * d >= 2 ** 32 || T * d >= 2 ** 32) throw new ArgumentError(`${label}: vocab=${vocab} T=${T} d=${d} overflow 32-bit element indices`);
      const needs: [string, GPUBufferBinding, number][] = [
        ['ids', asBinding(args.ids), 4 * T],
        ['table', asBinding(args.table), ELEMENT_BYTES[dtype] * vocab * d],
        ['h', asBinding(args.h), 4 * T * d],
      ];
      for (const [name, binding, bytes] of needs) {
        const have = bindingSize(binding);
        if (have < bytes) throw new ArgumentError(`${label}: ${name} holds ${have} bytes, T=${T} vocab=${vocab} d=${d} (${dtype}) needs ${bytes}`);
        if (bytes > device.limits.maxStorageBufferBindingSize) {
          throw new GpuLimitError(
            `${label}: ${name} needs a ${bytes}-byte binding, over this GPU's maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`,
          );
        }
      }
      const params = device.createBuffer({ label: `${label}.params`, size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(params, 0, new Uint32Array([T, d, vocab, 0]));
      const bindGroup = device.createBindGroup({
        label,
        layout: kernel.bindGroupLayout,
        entries: [{ buffer: params }, ...needs.map(([, binding]) => binding)].map((resource, binding) => ({ binding, resource })),
      });
      const [gx, gy] = workgroupGrid(Math.ceil((T * d) / workgroupSize), device.limits.maxComputeWorkgroupsPerDimension);
      return {
        ...embedGatherCost({ T, d, dtype }),
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
