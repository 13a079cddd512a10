// The matrix product y[m, n] = sum_k x[m, k] * W[n, k], the executable spec of gemm_fp8 and
// gemv_fp8 (the same function; GEMV is the M <= 4 case). src/model/MATH.md sections 3 and 5.

import { E4M3_VALUES } from './fp8_e4m3.ref.ts';
import { BLOCK } from '../gpu/kernel.ts';
import type { WeightFormat } from './matmul_operands.ts';

/** W [N, K] as stored: raw little-endian bytes, rows not padded, as the checkpoint has them. */
export interface RefWeight {
  format: WeightFormat;
  /** fp8: N*K e4m3 codes; bf16: 2*N*K bytes; f32: 4*N*K bytes. */
  bytes: Uint8Array;
  /** fp8 only: weight_scale_inv [ceil(N/128), ceil(K/128)]. */
  scale?: Float32Array;
}

export type RefActivations =
  /** x [M, K] f32 against the dequantised W (the official gemm_impl "bf16" path, in f32). */
  | { numerics: 'weight_only'; x: Float32Array }
  /** act_quant output (the official "fp8" path): codes [M, K], scales [M, K/128]. */
  | { numerics: 'w8a8'; codes: Uint8Array; scales: Float32Array };

/** The value of a bf16 number: the upper half of an f32. */
export function bf16ToF32(bits: number): number {
  return new Float32Array(new Uint32Array([(bits & 0xffff) << 16]).buffer)[0];
}

/** W[n, k] as f32: e4m3(Q) * S[n/128, k/128] rounded to f32 (official weight_dequant), bf16 or f32. */
export function dequantizeRef(weight: RefWeight, N: number, K: number): Float32Array {
  const { bytes } = weight;
  const out = new Float32Array(N * K);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kBlocks = Math.ceil(K / BLOCK);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const i = n * K + k;
      if (weight.format === 'fp8') {
        const scale = weight.scale![Math.floor(n / BLOCK) * kBlocks + Math.floor(k / BLOCK)];
        out[i] = E4M3_VALUES[bytes[i]] * scale;
      } else if (weight.format === 'bf16') {
        out[i] = bf16ToF32(view.getUint16(2 * i, true));
      } else {
        out[i] = view.getFloat32(4 * i, true);
      }
    }
  }
  return out;
}

export interface MatmulRefArgs {
  M: number;
  N: number;
  K: number;
  weight: RefWeight;
  activations: RefActivations;
}

/**
 * y [M, N].
 * weight_only: sum_k x[m, k] * W[n, k] with W = dequantizeRef(...), accumulated in f64 (the exact
 * value the f32 kernels approximate).
 * w8a8: for each 128-wide K block in order, d = the exact dot product of the e4m3 values rounded
 * once to f32, then acc = f32(acc + f32(f32(d * x_scale[m, block]) * S[n/128, block])), as the
 * official fp8_gemm (tl.dot per block, then `* a_s * b_s`) does.
 */
export function matmulRef({ M, N, K, weight, activations }: MatmulRefArgs): Float32Array {
  const y = new Float32Array(M * N);
  if (activations.numerics === 'weight_only') {
    const W = dequantizeRef(weight, N, K);
    const { x } = activations;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += x[m * K + k] * W[n * K + k];
        y[m * N + n] = acc;
      }
    }
    return y;
  }
  if (weight.format !== 'fp8') throw new RangeError('w8a8 is defined for fp8 weights only');
  if (K % BLOCK !== 0) throw new RangeError(`w8a8 needs K to be a multiple of ${BLOCK}, got ${K}`);
  const { codes, scales } = activations;
  const kBlocks = K / BLOCK;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let b = 0; b < kBlocks; b++) {
        let d = 0; // exact in f64: 128 products of 4-bit significands within 2^-18 .. 2^18
        for (let k = b * BLOCK; k < (b + 1) * BLOCK; k++) d += E4M3_VALUES[codes[m * K + k]] * E4M3_VALUES[weight.bytes[n * K + k]];
        const xs = scales[m * kBlocks + b];
        const ws = weight.scale![Math.floor(n / BLOCK) * kBlocks + b];
        acc = Math.fround(acc + Math.fround(Math.fround(Math.fround(d) * xs) * ws));
      }
      y[m * N + n] = acc;
    }
  }
  return y;
}
