// Test support for the matrix kernels (gemv_fp8, gemm_fp8, act_quant): random weights in each
// format, uploads, one run into a NaN-poisoned output, and the fp8_gemm_cases of the
// dsv3-tiny-official fixture (real activations and the official fp8_gemm's outputs).

import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { relError } from '../gpu/testing.ts';
import { officialFixture, officialReference } from './fixtures.ts';
import { BLOCK, submitPass } from '../gpu/kernel.ts';
export { randomWeight } from './random_weights.ts';
import { parseSafetensorsHeader } from '../io/safetensors.ts';
import type { MatmulRefArgs, RefWeight } from '../kernels/gemm_fp8.ref.ts';
import type { PreparedCall } from '../gpu/kernel.ts';
import type { MatmulBuffers, MatmulShape } from '../kernels/matmul_operands.ts';

/** The GPU buffers of a weight, named as the kernels' bindings. */
export function uploadWeight(device: GPUDevice, w: RefWeight): { weight: GPUBuffer; weight_scale_inv?: GPUBuffer } {
  const weight = uploadBuffer(device, w.bytes, 'weight');
  return w.scale ? { weight, weight_scale_inv: uploadBuffer(device, w.scale, 'weight_scale_inv') } : { weight };
}

/** A storage buffer of `count` f32 filled with NaN, so an element the kernel misses shows. */
export function poisonedOutput(device: GPUDevice, count: number, label = 'y'): GPUBuffer {
  return uploadBuffer(device, new Float32Array(count).fill(NaN), label);
}

/** Encode `calls` in one compute pass, submit, and read `count` f32 of `out` back. */
export async function runAndRead(device: GPUDevice, calls: PreparedCall[], out: GPUBuffer, count: number): Promise<Float32Array> {
  submitPass(device, ...calls);
  return readF32(device, out, count);
}

/** Upload the operands of `args`, run `kernel` into a poisoned y, read y [M, N] back, free everything. */
export async function runMatmul(
  device: GPUDevice,
  kernel: { prepare(args: MatmulShape & MatmulBuffers): PreparedCall },
  { M, N, K, weight, activations }: MatmulRefArgs,
): Promise<Float32Array> {
  const w = uploadWeight(device, weight);
  const a = activations;
  const x = uploadBuffer(device, a.numerics === 'w8a8' ? a.codes : a.x, 'x');
  const x_scale = a.numerics === 'w8a8' ? uploadBuffer(device, a.scales, 'x_scale') : undefined;
  const y = poisonedOutput(device, M * N);
  const owned = [w.weight, w.weight_scale_inv, x, x_scale, y];
  try {
    const call = kernel.prepare({ M, N, K, x, y, ...w, ...(x_scale && { x_scale }) });
    try {
      return await runAndRead(device, [call], y, M * N);
    } finally {
      call.destroy();
    }
  } finally {
    for (const b of owned) b?.destroy();
  }
}

/**
 * Rows [first, first + rows) of W [N, K] as a weight of its own: a row band of a split Linear.
 * fp8 bands start on a 128-row block, so their scales are whole block rows.
 */
export function weightRows(w: RefWeight, N: number, K: number, first: number, rows: number): RefWeight {
  const rowBytes = w.bytes.byteLength / N;
  const bytes = w.bytes.slice(first * rowBytes, (first + rows) * rowBytes);
  if (!w.scale) return { format: w.format, bytes };
  if (first % BLOCK !== 0) throw new Error(`an fp8 band must start on a ${BLOCK}-row block, got row ${first}`);
  const kBlocks = Math.ceil(K / BLOCK);
  return { format: w.format, bytes, scale: w.scale.slice((first / BLOCK) * kBlocks, Math.ceil((first + rows) / BLOCK) * kBlocks) };
}

/**
 * As runMatmul, with W split into row bands of `bandRows` (the last band takes the rest), each in
 * its own buffers and writing its columns of one y [M, N] (yStride N, yCol its first row).
 */
export async function runMatmulBands(
  device: GPUDevice,
  kernel: { prepare(args: MatmulShape & MatmulBuffers): PreparedCall },
  { M, N, K, weight, activations }: MatmulRefArgs,
  bandRows: number,
): Promise<Float32Array> {
  const a = activations;
  const x = uploadBuffer(device, a.numerics === 'w8a8' ? a.codes : a.x, 'x');
  const x_scale = a.numerics === 'w8a8' ? uploadBuffer(device, a.scales, 'x_scale') : undefined;
  const y = poisonedOutput(device, M * N);
  const owned: (GPUBuffer | PreparedCall | undefined)[] = [x, x_scale, y];
  try {
    const calls: PreparedCall[] = [];
    for (let first = 0; first < N; first += bandRows) {
      const rows = Math.min(bandRows, N - first);
      const w = uploadWeight(device, weightRows(weight, N, K, first, rows));
      owned.push(w.weight, w.weight_scale_inv);
      const call = kernel.prepare({ M, N: rows, K, yStride: N, yCol: first, x, y, ...w, ...(x_scale && { x_scale }) });
      owned.push(call);
      calls.push(call);
    }
    return await runAndRead(device, calls, y, M * N);
  } finally {
    for (const b of owned) b?.destroy();
  }
}

/** ‖out − ref‖ / ‖ref‖ < bound (NaN fails), showing the worst element and the first NaN. */
export function expectClose(out: ArrayLike<number>, ref: ArrayLike<number>, bound: number, what: string): number {
  const { rel, worst } = relError(out, ref);
  const at = (i: number) => `[${i}] got ${out[i]} want ${ref[i]}`;
  const firstNaN = Array.from(out).findIndex((v) => Number.isNaN(v));
  const detail = [worst >= 0 ? `worst ${at(worst)}` : '', firstNaN >= 0 ? `first NaN ${at(firstNaN)}` : ''].filter(Boolean).join('; ');
  expect(rel, `${what}: relative error ${rel}; ${detail}`).toBeLessThan(bound);
  return rel;
}

// ---- the dsv3-tiny-official fixture ----


/** One entry of reference.json's fp8_gemm_cases, with its weight read from model.safetensors. */
export interface Fp8GemmCase {
  hf_weight: string;
  M: number;
  K: number;
  N: number;
  /** [M, K] flattened. */
  x: Float32Array;
  /** [M, K] e4m3 codes from the official act_quant. */
  codes: Uint8Array;
  /** [M, K/128]. */
  scales: Float32Array;
  /** [row, col] pairs where x/s is within 4 f32 ulps of an e4m3 midpoint. */
  nearTies: [number, number][];
  /** [M, N] the official fp8_gemm output. */
  y_fp8: Float32Array;
  /** [M, N] the f32 dequantised F.linear output. */
  y_dequant_f32: Float32Array;
  weight: RefWeight;
}

interface RawCase {
  hf_weight: string;
  M: number;
  K: number;
  N: number;
  x: number[][];
  act_quant_codes: number[][];
  act_quant_scales: number[][];
  near_tie_inputs: [number, number][];
  y_fp8: number[][];
  y_dequant_f32: number[][];
}

let cases: Fp8GemmCase[] | undefined;

/** The 9 fp8_gemm_cases (read once per test file). */
export function fp8GemmCases(): Fp8GemmCase[] {
  if (cases) return cases;
  const reference = officialReference<{ fp8_gemm_cases: RawCase[] }>();
  const file = readFileSync(officialFixture('model.safetensors'));
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength);
  const header = parseSafetensorsHeader(bytes, 'model.safetensors', bytes.byteLength);
  const tensor = (name: string, dtype: string): Uint8Array => {
    const info = header.tensors.get(name);
    if (!info || info.dtype !== dtype) throw new Error(`model.safetensors: ${name} (${dtype}) is missing`);
    return bytes.slice(info.byteOffset, info.byteOffset + info.byteLength); // a copy: aligned for Float32Array
  };
  cases = reference.fp8_gemm_cases.map((c) => ({
    hf_weight: c.hf_weight,
    M: c.M,
    K: c.K,
    N: c.N,
    x: Float32Array.from(c.x.flat()),
    codes: Uint8Array.from(c.act_quant_codes.flat()),
    scales: Float32Array.from(c.act_quant_scales.flat()),
    nearTies: c.near_tie_inputs,
    y_fp8: Float32Array.from(c.y_fp8.flat()),
    y_dequant_f32: Float32Array.from(c.y_dequant_f32.flat()),
    weight: {
      format: 'fp8',
      bytes: tensor(c.hf_weight, 'F8_E4M3'),
      scale: new Float32Array(tensor(`${c.hf_weight}_scale_inv`, 'F32').buffer),
    },
  }));
  return cases;
}
