// The embedding lookup h0[t] = embed_tokens[ids[t]] (src/model/MATH.md 4.1), the first op of a
// forward pass (and of the MTP module, with its own embed_tokens copy). The ids are read on the
// GPU, so the previous step's sampled token goes from the sampler to here without a readback.
// Shader: shaders/embed_gather.wgsl; reference: embed_gather.ref.ts.

import gatherSource from '../../shaders/embed_gather.wgsl?raw';
import halfFloatSource from '../../shaders/half_float.wgsl?raw';
import { ArgumentError } from '../errors.ts';
import { checkBindings, checkCounts, checkU32Indices, kernelPipeline, singleDispatch, Uniforms, type BufferResource, type Cost, type Kernel, type KernelContext } from '../gpu/kernel.ts';

/** How `model.embed_tokens.weight` is stored: BF16 in the release; F16 and F32 are read as they are. */
export const EMBED_DTYPES = ['bf16', 'f16', 'f32'] as const;
export type EmbedDtype = (typeof EMBED_DTYPES)[number];

const ELEMENT_BYTES: Record<EmbedDtype, number> = { bf16: 2, f16: 2, f32: 4 };

export interface EmbedGatherOptions {
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
  ids: BufferResource;
  /** [vocab, d] in `dtype`, little-endian, rows not padded, as in the checkpoint (or rows firstRow .. firstRow + rows - 1 of it). */
  table: BufferResource;
  /**
   * A piece of a table split by rows: the id of its row 0 (default 0) and its row count (default
   * vocab). It writes the rows of h whose ids it holds; the piece at firstRow 0 also writes the
   * zeros of ids >= vocab. One call per piece, in any order.
   */
  firstRow?: number;
  rows?: number;
  /** [T, d] f32, written. */
  h: BufferResource;
  label?: string;
}

export interface EmbedGather extends Kernel<EmbedGatherArgs> {
  readonly dtype: EmbedDtype;
  readonly workgroupSize: number;
}

/** Bytes read (ids, T table rows) and written (h); a gather does no arithmetic. */
export function embedGatherCost({ T, d, dtype }: { T: number; d: number; dtype: EmbedDtype }): Cost {
  return { bytes: 4 * T + ELEMENT_BYTES[dtype] * T * d + 4 * T * d, flops: 0 };
}

export function createEmbedGather(ctx: KernelContext, options: EmbedGatherOptions = {}): EmbedGather {
  const { device } = ctx.gpu;
  const dtype = options.dtype ?? 'bf16';
  if (!EMBED_DTYPES.includes(dtype)) throw new ArgumentError(`embed_gather: dtype "${dtype}" is not one of ${EMBED_DTYPES.join(', ')}`);
  const workgroupSize = options.workgroupSize ?? 64;
  checkCounts('embed_gather', { workgroupSize });
  const pipeline = kernelPipeline(ctx.pipelines, {
    kernel: 'embed_gather',
    source: gatherSource,
    snippets: [{ name: 'half_float.wgsl', code: halfFloatSource }],
    axes: { dtype: EMBED_DTYPES },
    variant: { dtype },
    constants: { WORKGROUP_SIZE: workgroupSize },
    bindings: ['uniform', 'read-only-storage', 'read-only-storage', 'storage'],
  });

  return {
    name: 'embed_gather',
    dtype,
    workgroupSize,
    prepare(args) {
      const { T, vocab, d, firstRow = 0, rows = vocab - firstRow, label = 'embed_gather' } = args;
      checkCounts(label, { T, vocab, d, rows });
      if (!Number.isInteger(firstRow) || firstRow < 0 || firstRow + rows > vocab) {
        throw new ArgumentError(`${label}: rows ${firstRow} .. ${firstRow + rows - 1} are not rows of a ${vocab}-row table`);
      }
      checkU32Indices(label, { 'rows * d': rows * d, 'T * d': T * d });
      checkBindings(
        device,
        label,
        { ids: [args.ids, 4 * T], table: [args.table, ELEMENT_BYTES[dtype] * rows * d], h: [args.h, 4 * T * d] },
        `T=${T} rows=${rows} d=${d} (${dtype})`,
      );
      const uniforms = new Uniforms(device, label, ['u32', 'u32', 'u32', 'u32', 'u32']);
      uniforms.write([T, d, rows, firstRow, vocab]);
      return singleDispatch({
        device,
        label,
        pipeline,
        uniforms,
        bindings: [args.ids, args.table, args.h],
        workgroups: Math.ceil((T * d) / workgroupSize),
        cost: embedGatherCost({ T, d, dtype }),
      });
    },
  };
}
