// How the loader fills the CPU stacks of offloaded experts (src/model/expert_offload.ts) as the
// checkpoint streams in: bytes as stored, or, for a BF16 release held as FP8, each expert tensor
// quantised on the CPU when its last byte arrives, by the executable spec of the GPU quantiser
// (quantize_fp8.ref.ts, which shaders/quantize_fp8.wgsl matches bit for bit: the tensors are the
// ones a resident load would make).

import type { TensorInfo } from '../io/safetensors.ts';
import type { ChunkWriter } from '../io/stream_to_gpu.ts';
import { decodeF16, decodeF32 } from '../kernels/float_decode.ref.ts';
import { quantizeFp8 } from '../kernels/quantize_fp8.ref.ts';
import type { HostStack } from './expert_offload.ts';

/** Writes a tensor's bytes into `stack` at expert `expert`'s slot. */
export function hostWriter(stack: HostStack, expert: number): ChunkWriter {
  const base = expert * stack.slotBytes;
  return {
    write(chunk, offsetInTensor) {
      stack.bytes.set(chunk, base + offsetInTensor);
    },
    finish() {},
  };
}

/** Source values of a BF16 / F16 / F32 tensor's little-endian bytes. */
function decode(dtype: string, bytes: Uint8Array): Float32Array {
  if (dtype === 'F32') return decodeF32(bytes);
  if (dtype === 'F16') return decodeF16(bytes);
  // bf16: the upper half of an f32
  const out = new Float32Array(bytes.byteLength / 2);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < out.length; i++) bits[i] = (bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16;
  return out;
}

/** Gathers one [rows, cols] tensor, then writes its e4m3 codes and block scales into the stacks. */
export function quantisingHostWriter(t: TensorInfo, codes: HostStack, scales: HostStack, expert: number): ChunkWriter {
  // Quantised when its last byte arrives (not at the file's end): one expert tensor held at a time.
  let source: Uint8Array | undefined = new Uint8Array(t.byteLength);
  let received = 0;
  return {
    write(chunk, offsetInTensor) {
      source!.set(chunk, offsetInTensor);
      received += chunk.byteLength;
      if (received < t.byteLength) return;
      const [rows, cols] = t.shape;
      const q = quantizeFp8(decode(t.dtype, source!), rows, cols);
      source = undefined;
      codes.bytes.set(q.codes, expert * codes.slotBytes);
      scales.bytes.set(new Uint8Array(q.scaleInv.buffer, q.scaleInv.byteOffset, q.scaleInv.byteLength), expert * scales.slotBytes);
    },
    finish() {},
  };
}
