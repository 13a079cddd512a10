// Repetition penalty on the head's logits [rows, vocab] before sampling, in place on the GPU
// (Hugging Face's RepetitionPenaltyLogitsProcessor, the `repetition_penalty` users know): the
// logit of every id already seen is divided by the penalty when positive, multiplied when not.
// The seen ids live in a presence mask on the GPU that the caller rewrites as tokens are added,
// so the step needs no readback. Shader: shaders/repetition_penalty.wgsl; reference:
// repetition_penalty.ref.ts.

import penaltySource from '../../shaders/repetition_penalty.wgsl?raw';
import { ArgumentError, GpuLimitError } from '../errors.ts';
import { workgroupGrid } from '../gpu/dispatch.ts';
import type { PreparedCall } from './matmul_operands.ts';
import type { PipelineCache } from './pipeline_cache.ts';

export type { PreparedCall } from './matmul_operands.ts';

export interface RepetitionPenaltyArgs {
  /** Rows of logits: 1 for decode, 2 for a speculative (MTP) verify step. */
  rows: number;
  vocab: number;
  /** [rows, vocab] f32, updated in place where the mask bit is set. */
  logits: GPUBuffer;
  /** [ceil(vocab / 32)] u32 presence mask of the seen ids (presenceMask), the same for every row. */
  mask: GPUBuffer;
  /** > 0; 1 leaves the logits unchanged, > 1 discourages repeats. */
  penalty: number;
  label?: string;
}

export interface RepetitionPenaltyOptions {
  /** Invocations per workgroup, default 64. A tuning number. */
  workgroupSize?: number;
}

export interface PreparedRepetitionPenalty extends PreparedCall {
  /** Change the penalty for the next submits (one 4-byte uniform write). */
  setPenalty(penalty: number): void;
}

/** Words of the presence mask of a vocabulary: one bit per id. */
export function maskWords(vocab: number): number {
  return Math.ceil(vocab / 32);
}

/**
 * Bytes read (the mask, once per row) and FLOPs: the logits of seen ids (8 bytes and 1 FLOP
 * each, read and written) depend on the ids, unknown here, and are few, so they are not counted.
 */
export function repetitionPenaltyCost({ rows, vocab }: { rows: number; vocab: number }): { bytes: number; flops: number } {
  return { bytes: 4 * rows * maskWords(vocab), flops: 0 };
}

/** Throws unless `penalty` is a finite number > 0 that stays so in f32 (the uniform's type). */
function checkPenalty(label: string, penalty: number): void {
  const f32 = Math.fround(penalty);
  if (typeof penalty !== 'number' || !Number.isFinite(f32) || !(f32 > 0)) {
    throw new ArgumentError(`${label}: penalty must be a finite number > 0 (1 = no penalty), got ${penalty}`);
  }
}

/**
 * A presence mask of the ids on the CPU, to upload with queue.writeBuffer (rewritten whenever ids
 * are added): bit j % 32 of word j / 32 is set when id j occurs; repeats set it once.
 */
export function presenceMask(vocab: number, ids: Iterable<number>): Uint32Array {
  if (!Number.isInteger(vocab) || vocab < 1) throw new ArgumentError(`presenceMask: vocab must be a positive integer, got ${vocab}`);
  const mask = new Uint32Array(maskWords(vocab));
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new ArgumentError(`presenceMask: token id ${id} is outside the vocabulary [0, ${vocab})`);
    }
    mask[id >>> 5] |= 1 << (id & 31);
  }
  return mask;
}

export function createRepetitionPenalty(
  cache: PipelineCache,
  options: RepetitionPenaltyOptions = {},
): { prepare(args: RepetitionPenaltyArgs): PreparedRepetitionPenalty } {
  const { device } = cache;
  const workgroupSize = options.workgroupSize ?? 64;
  if (!Number.isInteger(workgroupSize) || workgroupSize < 1) {
    throw new ArgumentError(`repetition_penalty: workgroupSize ${workgroupSize} must be a positive integer`);
  }
  const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({
    binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type },
  });
  const kernel = cache.get({ kernel: 'repetition_penalty', variant: {}, constants: { WORKGROUP_SIZE: workgroupSize } }, () => ({
    code: penaltySource,
    entries: [entry(0, 'uniform'), entry(1, 'storage'), entry(2, 'read-only-storage')],
  }));

  return {
    prepare({ rows, vocab, logits, mask, penalty, label = 'repetition_penalty' }) {
      for (const [name, value] of Object.entries({ rows, vocab })) {
        if (!Number.isInteger(value) || value < 1) throw new ArgumentError(`${label}: ${name} must be a positive integer, got ${value}`);
      }
      // Logit indices are u32 in the shader.
      if (rows * vocab >= 2 ** 32) throw new ArgumentError(`${label}: rows=${rows} vocab=${vocab} overflow 32-bit element indices`);
      checkPenalty(label, penalty);
      // WebGPU forbids binding a written buffer twice in one bind group.
      if (logits === mask) throw new ArgumentError(`${label}: logits and mask must be different buffers`);
      const words = maskWords(vocab);
      const needs: [string, GPUBuffer, number][] = [
        ['logits', logits, 4 * rows * vocab],
        ['mask', mask, 4 * words],
      ];
      for (const [name, buffer, bytes] of needs) {
        if (buffer.size < bytes) throw new ArgumentError(`${label}: ${name} holds ${buffer.size} bytes, rows=${rows} vocab=${vocab} needs ${bytes}`);
        if (bytes > device.limits.maxStorageBufferBindingSize) {
          throw new GpuLimitError(
            `${label}: ${name} needs a ${bytes}-byte binding, over this GPU's maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`,
          );
        }
      }
      const params = device.createBuffer({ label: `${label}.params`, size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      const packed = new ArrayBuffer(16);
      new Uint32Array(packed, 0, 3).set([rows, vocab, words]);
      new Float32Array(packed, 12, 1)[0] = penalty;
      device.queue.writeBuffer(params, 0, packed);
      // Bind exactly what the shape needs, so a larger logits buffer is left alone past rows * vocab.
      const bindGroup = device.createBindGroup({
        label,
        layout: kernel.bindGroupLayout,
        entries: [{ buffer: params }, ...needs.map(([, buffer, size]) => ({ buffer, size }))].map((resource, binding) => ({ binding, resource })),
      });
      const [gx, gy] = workgroupGrid(Math.ceil((rows * words) / workgroupSize), device.limits.maxComputeWorkgroupsPerDimension);
      return {
        ...repetitionPenaltyCost({ rows, vocab }),
        encode(pass) {
          pass.setPipeline(kernel.pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(gx, gy);
        },
        setPenalty(next) {
          checkPenalty(label, next);
          device.queue.writeBuffer(params, 12, new Float32Array([next]));
        },
        destroy() {
          params.destroy();
        },
      };
    },
  };
}
