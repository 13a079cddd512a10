// The small tensors whose non-finite values would poison every token are checked as they stream
// in (block scales, norm weights, the router's bias): a NaN or an infinity there is refused at
// load, naming the tensor and the element, instead of turning every logit into NaN later.

import { CheckpointError } from '../errors.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import type { ChunkWriter } from '../io/stream_to_gpu.ts';

const CHECKED = /(_scale_inv|layernorm\.weight|norm\.weight|e_score_correction_bias)$/;
const ELEMENT_BYTES: Record<string, number> = { F32: 4, BF16: 2, F16: 2 };

/** Whether the loader checks this tensor's values. */
export function checkedForFinite(t: TensorInfo): boolean {
  return CHECKED.test(t.name) && t.dtype in ELEMENT_BYTES;
}

/** Passes every chunk on to `next` after checking its whole elements (an element split by a chunk edge is carried over). */
export function finiteChecking(t: TensorInfo, file: string, next: ChunkWriter): ChunkWriter {
  const size = ELEMENT_BYTES[t.dtype];
  const carry = new Uint8Array(size);
  let carried = 0;
  const check = (bytes: Uint8Array, firstElement: number) => {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i + size <= bytes.byteLength; i += size) {
      // Exponent all ones: NaN or infinity (F32 0x7f800000, BF16 0x7f80, F16 0x7c00).
      const bad = size === 4 ? (view.getUint32(i, true) & 0x7f800000) === 0x7f800000 : t.dtype === 'BF16' ? (view.getUint16(i, true) & 0x7f80) === 0x7f80 : (view.getUint16(i, true) & 0x7c00) === 0x7c00;
      if (bad) throw new CheckpointError(`${t.name} holds a NaN or infinite value at element ${firstElement + i / size}: the checkpoint is broken`, file);
    }
  };
  return {
    write(chunk, offsetInTensor) {
      let data = chunk;
      let at = offsetInTensor;
      if (carried > 0) {
        const take = Math.min(size - carried, data.byteLength);
        carry.set(data.subarray(0, take), carried);
        carried += take;
        if (carried < size) return next.write(chunk, offsetInTensor);
        check(carry, (at + take) / size - 1);
        carried = 0;
        data = data.subarray(take);
        at += take;
      }
      const whole = data.byteLength - (data.byteLength % size);
      check(data.subarray(0, whole), at / size);
      carry.set(data.subarray(whole));
      carried = data.byteLength - whole;
      next.write(chunk, offsetInTensor);
    },
    finish() {
      next.finish();
    },
  };
}
