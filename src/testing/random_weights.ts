// Random matrix weights in each format the matrix kernels read, for tests and the benchmark
// (browser-safe: no Node imports).

import type { RefWeight } from '../kernels/gemm_fp8.ref.ts';
import { BLOCK } from '../gpu/kernel.ts';
import type { WeightFormat } from '../kernels/matmul_operands.ts';
import { E4M3_MAX, f32ToE4m3 } from '../kernels/fp8_e4m3.ref.ts';
import { randn } from './random.ts';

/** Random W [N, K]: fp8 codes drawn from all 254 finite codes with random block scales. */
export function randomWeight(format: WeightFormat, N: number, K: number, next: () => number): RefWeight {
  if (format === 'fp8') {
    const bytes = new Uint8Array(N * K);
    for (let i = 0; i < bytes.length; i++) {
      const code = Math.floor(next() * 254); // 0 .. 253, skipping the NaN codes 0x7F and 0xFF
      bytes[i] = code < 0x7f ? code : code + 1;
    }
    const scale = Float32Array.from({ length: Math.ceil(N / BLOCK) * Math.ceil(K / BLOCK) }, () => 2 ** (-12 + 6 * next()));
    return { format, bytes, scale };
  }
  const values = randn(next, N * K);
  if (format === 'f32') return { format, bytes: new Uint8Array(values.buffer) };
  const bits = new Uint16Array(N * K);
  const words = new Uint32Array(values.buffer);
  for (let i = 0; i < bits.length; i++) bits[i] = words[i] >>> 16; // bf16: the top half of the f32
  return { format, bytes: new Uint8Array(bits.buffer) };
}

/**
 * FP8 W [N, K] as a checkpoint ships it: normal values quantised per 128 x 128 block with
 * weight_scale_inv = amax / 448, as DeepSeek's weight quantisation does. Unlike randomWeight's
 * uniform codes (every code, for tests), zeros and subnormals are as rare as in real weights
 * (about 0.01% of codes), which is what a benchmark of the decode should see. Built one band of
 * 128 rows at a time, so V3's largest matrices need no f32 copy of the whole weight.
 */
export function quantizedWeight(N: number, K: number, next: () => number): RefWeight {
  const kBlocks = Math.ceil(K / BLOCK);
  const bytes = new Uint8Array(N * K);
  const scale = new Float32Array(Math.ceil(N / BLOCK) * kBlocks);
  for (let n0 = 0; n0 < N; n0 += BLOCK) {
    const rows = Math.min(BLOCK, N - n0);
    const values = randn(next, rows * K);
    const band = scale.subarray((n0 / BLOCK) * kBlocks, (n0 / BLOCK + 1) * kBlocks);
    for (let i = 0; i < values.length; i++) {
      const kb = Math.floor((i % K) / BLOCK);
      band[kb] = Math.max(band[kb], Math.abs(values[i]) / E4M3_MAX);
    }
    for (let kb = 0; kb < kBlocks; kb++) band[kb] ||= 1; // an all-zero block: any scale; never 0 / 0
    for (let i = 0; i < values.length; i++) bytes[n0 * K + i] = f32ToE4m3(values[i] / band[Math.floor((i % K) / BLOCK)]);
  }
  return { format: 'fp8', bytes, scale };
}
