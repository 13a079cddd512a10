// CPU reference of shaders/embed_gather.wgsl (src/model/MATH.md 4.1):
//   h[t, :] = embed_tokens[ids[t], :]   (official ParallelEmbedding with mp = 1: a plain lookup)
// with the table decoded to f32 from its stored dtype, and a row of zeros for an id >= vocab.

import { decodeF16, decodeF32 } from './float_decode.ref.ts';
import { dequantizeRef } from './gemm_fp8.ref.ts';
import type { EmbedDtype } from './embed_gather.ts';

export interface EmbedGatherRefArgs {
  dtype: EmbedDtype;
  /** [vocab, d] little-endian bytes as in the checkpoint, rows not padded. */
  table: Uint8Array;
  vocab: number;
  d: number;
  ids: Uint32Array;
}

/** h [T, d] f32. */
export function embedGatherRef({ dtype, table, vocab, d, ids }: EmbedGatherRefArgs): Float32Array {
  const values =
    dtype === 'bf16' ? dequantizeRef({ format: 'bf16', bytes: table }, vocab, d) : dtype === 'f16' ? decodeF16(table) : decodeF32(table);
  const h = new Float32Array(ids.length * d);
  ids.forEach((id, t) => {
    if (id < vocab) h.set(values.subarray(id * d, (id + 1) * d), t * d);
  });
  return h;
}
