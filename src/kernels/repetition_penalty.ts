// Repetition penalty on the head's logits [rows, vocab] before sampling, in place on the GPU
// (Hugging Face's RepetitionPenaltyLogitsProcessor, the `repetition_penalty` users know): the
// logit of every id already seen is divided by the penalty when positive, multiplied when not.
// The seen ids live in a presence mask on the GPU that the caller rewrites as tokens are added,
// so the step needs no readback. Shader: shaders/repetition_penalty.wgsl; reference:
// repetition_penalty.ref.ts.

import penaltySource from '../../shaders/repetition_penalty.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts, checkU32Indices, kernelPipeline, singleDispatch, Uniforms, type Cost, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';

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
export function repetitionPenaltyCost({ rows, vocab }: { rows: number; vocab: number }): Cost {
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
export function presenceMask(vocab: number, ids: Iterable<number>): Uint32Array<ArrayBuffer> {
  if (!Number.isInteger(vocab) || vocab < 1) throw new ArgumentError(`presenceMask: vocab must be a positive integer, got ${vocab}`);
  const mask = new Uint32Array(maskWords(vocab));
  for (const id of ids) markPresent(mask, vocab, id);
  return mask;
}

/** Sets id's bit in a presence mask of `vocab` ids. */
export function markPresent(mask: Uint32Array, vocab: number, id: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocab) {
    throw new ArgumentError(`presenceMask: token id ${id} is outside the vocabulary [0, ${vocab})`);
  }
  mask[id >>> 5] |= 1 << (id & 31);
}

export function createRepetitionPenalty(ctx: KernelContext, options: RepetitionPenaltyOptions = {}): Kernel<RepetitionPenaltyArgs, PreparedRepetitionPenalty> {
  const { device } = ctx.gpu;
  const workgroupSize = options.workgroupSize ?? 64;
  checkCounts('repetition_penalty', { workgroupSize });
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'repetition_penalty',
    source: penaltySource,
    constants: { WORKGROUP_SIZE: workgroupSize },
    bindings: ['uniform', 'storage', 'read-only-storage'],
  });

  return {
    name: 'repetition_penalty',
    prepare({ rows, vocab, logits, mask, penalty, label = 'repetition_penalty' }) {
      checkCounts(label, { rows, vocab });
      checkU32Indices(label, { 'rows * vocab': rows * vocab });
      checkPenalty(label, penalty);
      // WebGPU forbids binding a written buffer twice in one bind group.
      if (logits === mask) throw new ArgumentError(`${label}: logits and mask must be different buffers`);
      const words = maskWords(vocab);
      checkBindings(device, label, { logits: [logits, 4 * rows * vocab], mask: [mask, 4 * words] }, `rows=${rows} vocab=${vocab}`);
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'f32']);
      uniforms.write([rows, vocab, words, penalty]);
      // Bind exactly what the shape needs, so a larger logits buffer is left alone past rows * vocab.
      const call = singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [{ buffer: logits, size: 4 * rows * vocab }, { buffer: mask, size: 4 * words }],
        workgroups: Math.ceil((rows * words) / workgroupSize),
        cost: repetitionPenaltyCost({ rows, vocab }),
      });
      return {
        ...call,
        setPenalty(next) {
          checkPenalty(label, next);
          uniforms.set(3, next);
        },
      };
    },
  };
}
