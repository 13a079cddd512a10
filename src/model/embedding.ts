// h [T, hidden] = embed_tokens[ids] (src/model/MATH.md 4.1) for the main model and the MTP module:
// one embed_gather call, or one per row piece of a table split over several buffers (each writes
// the rows of the ids it holds; src/kernels/embed_gather.ts).

import { sequence, type BufferResource, type PreparedCall } from '../gpu/kernel.ts';
import type { EmbeddingWeight } from './gpu_weights.ts';
import type { ModelKernels } from './model_kernels.ts';

export function prepareEmbedding(k: ModelKernels, table: EmbeddingWeight, args: { T: number; ids: BufferResource; h: BufferResource; label: string }): PreparedCall {
  const gather = k.embed(table.dtype);
  const calls = table.pieces.map((p) =>
    gather.prepare({
      T: args.T, vocab: table.vocab, d: table.d, firstRow: p.firstRow, rows: p.rows, ids: args.ids, table: p.table, h: args.h,
      label: table.pieces.length === 1 ? args.label : `${args.label}[${p.firstRow}:${p.firstRow + p.rows}]`,
    }),
  );
  return sequence(calls);
}
