// Checkpoint tensors as f32 arrays for the CPU reference forward: FP8 Linear weights
// dequantised with their block scales exactly as the official weight_dequant does
// (W[i, j] = e4m3(Q[i, j]) * S[i/128, j/128], the product rounded to float32; src/model/MATH.md
// section 3), BF16/F16/F32 decoded (and, on request, quantised to FP8 as the loader does). Everything is read into memory: this is for small
// checkpoints (tests, the fixture), not for the 671B model.

import type { DeepseekV3Config } from '../../config.ts';
import { CheckpointError } from '../../errors.ts';
import type { Checkpoint } from '../../io/checkpoint_files.ts';
import { shapeSize, type TensorInfo } from '../../io/safetensors.ts';
import { dequantizeRef } from '../../kernels/gemm_fp8.ref.ts';
import { quantizeFp8 } from '../../kernels/quantize_fp8.ref.ts';
import { decodeF16, decodeF32 } from '../../kernels/float_decode.ref.ts';
import { assertTensors, expectedTensors, scaleInvName } from '../weights.ts';

/** A checkpoint's tensors by their Hugging Face names, as f32 values (FP8 ones dequantised). */
export interface ReferenceWeights {
  /** The tensor's values in row-major order; a CheckpointError names a missing one. */
  get(name: string): Float32Array;
  has(name: string): boolean;
  /** Names held (the `_scale_inv` block scales are folded into their weights, not listed). */
  readonly names: readonly string[];
}

/**
 * Read every tensor of `checkpoint` after checking the set against what `config` implies
 * (names, shapes, dtypes: model/weights.ts), so a wrong file fails here with its names.
 */
export interface ReferenceWeightOptions {
  signal?: AbortSignal;
  /**
   * Quantise the block-scaled Linears of a BF16 / F16 / F32 release to FP8 first, as the loader's
   * weights 'fp8' does on the GPU (quantizeFp8), so the reference runs on the same weights.
   */
  quantise?: boolean;
}

export async function loadReferenceWeights(checkpoint: Checkpoint, config: DeepseekV3Config, options: ReferenceWeightOptions = {}): Promise<ReferenceWeights> {
  const { signal } = options;
  const expected = expectedTensors(config);
  assertTensors(expected, checkpoint.tensors, checkpoint.dir.description);
  const values = new Map<string, Float32Array>();
  for (const [name, want] of expected) {
    if (want.kind === 'scale_inv') continue;
    const info = checkpoint.tensors.get(name)!;
    const bytes = await readTensorBytes(checkpoint, info, signal);
    const [rows, cols] = info.shape.length === 2 ? info.shape : [1, shapeSize(info.shape)];
    if (info.dtype === 'F8_E4M3') {
      const scaleInfo = checkpoint.tensors.get(scaleInvName(name))!;
      const scaleBytes = await readTensorBytes(checkpoint, scaleInfo, signal);
      const scale = decodeF32(scaleBytes);
      values.set(name, dequantizeRef({ format: 'fp8', bytes, scale }, rows, cols));
    } else {
      const decoded = decodeFloats(name, info, bytes);
      if (options.quantise && want.blockScaled) {
        const q = quantizeFp8(decoded, rows, cols);
        values.set(name, dequantizeRef({ format: 'fp8', bytes: q.codes, scale: q.scaleInv }, rows, cols));
      } else {
        values.set(name, decoded);
      }
    }
  }
  const where = checkpoint.dir.description;
  return {
    names: Object.freeze([...values.keys()]),
    has: (name) => values.has(name),
    get(name) {
      const v = values.get(name);
      if (!v) throw new CheckpointError(`tensor "${name}" is missing from the checkpoint in ${where}`);
      return v;
    },
  };
}

function decodeFloats(name: string, info: TensorInfo, bytes: Uint8Array): Float32Array {
  if (info.dtype === 'BF16') return dequantizeRef({ format: 'bf16', bytes }, 1, bytes.byteLength / 2);
  if (info.dtype === 'F32') return decodeF32(bytes);
  if (info.dtype === 'F16') return decodeF16(bytes);
  throw new CheckpointError(`tensor "${name}" has dtype ${info.dtype}, which the reference forward cannot read`, info.file);
}

async function readTensorBytes(checkpoint: Checkpoint, info: TensorInfo, signal?: AbortSignal): Promise<Uint8Array> {
  const source = checkpoint.sources.get(info.file);
  if (!source) throw new CheckpointError(`no open file for tensor "${info.name}"`, info.file);
  return source.read(info.byteOffset, info.byteLength, signal);
}
