// Serialise tensors to safetensors bytes: for tests and generated checkpoints. Tensors are laid
// out back to back in the given order; the JSON is padded with spaces to a multiple of 8 bytes,
// as the reference implementation does, so the data section starts 8-byte aligned.

import { ArgumentError } from '../errors.ts';
import { DTYPE_SIZE, shapeSize, type Dtype } from './safetensors.ts';

export interface TensorToWrite {
  dtype: Dtype;
  shape: readonly number[];
  /** The raw little-endian bytes: product(shape) * dtype size of them. */
  data: ArrayBufferView;
}

/** safetensors bytes for `tensors` (in insertion order) and optional `__metadata__`. */
export function writeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, { dtype, shape, data }] of Object.entries(tensors)) {
    if (!Object.hasOwn(DTYPE_SIZE, dtype)) throw new ArgumentError(`writeSafetensors: tensor "${name}": unknown dtype ${dtype}`);
    const bytes = shapeSize(shape) * DTYPE_SIZE[dtype];
    if (data.byteLength !== bytes) {
      throw new ArgumentError(`writeSafetensors: tensor "${name}": ${dtype} [${shape.join(', ')}] needs ${bytes} bytes, got ${data.byteLength}`);
    }
    header[name] = { dtype, shape: [...shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let at = 8 + json.byteLength;
  for (const { data } of Object.values(tensors)) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}
