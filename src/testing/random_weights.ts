// Random matrix weights in each format the matrix kernels read, for tests and the benchmark
// (browser-safe: no Node imports).

import type { RefWeight } from '../kernels/gemm_fp8.ref.ts';
import { BLOCK, type WeightFormat } from '../kernels/matmul_operands.ts';
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

