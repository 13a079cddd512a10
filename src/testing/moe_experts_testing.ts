// Test support for the expert kernels (moe_experts, moe_group): random routings shaped like the
// router's, and random stacked FP8 or bf16 expert weights laid out as src/model/placement.ts places
// them, whole or split into expert ranges (ExpertRange).

import { expect } from 'vitest';
import { align4, readF32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass, type PreparedCall } from '../gpu/kernel.ts';
import { randomWeight } from './random_weights.ts';
import type { ExpertWeights, StackedExpertWeight } from '../kernels/moe_experts.ref.ts';
import type { ExpertProjection, ExpertRange, ExpertWeightFormat, MlpWeights } from '../kernels/moe_experts.ts';

/**
 * Each token's topk distinct experts in random order (as the router makes them): `hot` is chosen
 * by every token, the `cold` experts by none.
 */
export function randomRouting(next: () => number, tokens: number, topk: number, experts: number, hot = 2, cold = [0, experts - 1]): Uint32Array {
  const allowed = Array.from({ length: experts }, (_, e) => e).filter((e) => e !== hot && !cold.includes(e));
  if (allowed.length < topk - 1) throw new RangeError(`randomRouting: ${experts} experts leave too few to choose ${topk}`);
  const ids = new Uint32Array(tokens * topk);
  for (let t = 0; t < tokens; t++) {
    const pool = allowed.slice();
    const picks = [hot];
    while (picks.length < topk) picks.push(pool.splice(Math.floor(next() * pool.length), 1)[0]);
    for (let k = topk - 1; k > 0; k--) {
      const j = Math.floor(next() * (k + 1));
      [picks[k], picks[j]] = [picks[j], picks[k]];
    }
    ids.set(picks, t * topk);
  }
  return ids;
}

/**
 * E experts' random [rows, cols] weights, stacked: fp8 (all finite codes, random block scales) or
 * bf16 (normal values). The padding bytes between slots hold NaN (the e4m3 code 0x7F, the bf16
 * 0xFFFF): a kernel that reads them as weights shows.
 */
export function randomStack(next: () => number, experts: number, rows: number, cols: number, format: ExpertWeightFormat = 'fp8'): StackedExpertWeight {
  if (format === 'bf16') {
    const slot = align4(2 * rows * cols);
    const bytes = new Uint8Array(experts * slot).fill(0xff);
    for (let e = 0; e < experts; e++) bytes.set(randomWeight('bf16', rows, cols, next).bytes, e * slot);
    return { format, bytes };
  }
  const slot = align4(rows * cols);
  const bytes = new Uint8Array(experts * slot).fill(0x7f);
  const scales: Float32Array[] = [];
  for (let e = 0; e < experts; e++) {
    const w = randomWeight('fp8', rows, cols, next);
    bytes.set(w.bytes, e * slot);
    scales.push(w.scale!);
  }
  const scale = new Float32Array(scales.reduce((n, s) => n + s.length, 0));
  scales.forEach((s, e) => scale.set(s, e * s.length));
  return { format, bytes, scale };
}

export function randomExperts(next: () => number, experts: number, hidden: number, inter: number, format: ExpertWeightFormat = 'fp8'): ExpertWeights {
  return {
    gate_proj: randomStack(next, experts, inter, hidden, format),
    up_proj: randomStack(next, experts, inter, hidden, format),
    down_proj: randomStack(next, experts, hidden, inter, format),
  };
}

/** The stacks on the GPU, as MlpWeights (weight_scale_inv for fp8 stacks only). */
export function uploadExperts(device: GPUDevice, w: ExpertWeights): MlpWeights & { destroy(): void } {
  const up = (name: string, s: StackedExpertWeight): ExpertProjection => ({
    weight: uploadBuffer(device, s.bytes, `${name}.weight`),
    weight_scale_inv: s.format === 'fp8' ? uploadBuffer(device, s.scale, `${name}.weight_scale_inv`) : undefined,
  });
  const gpu = { gate_proj: up('gate_proj', w.gate_proj), up_proj: up('up_proj', w.up_proj), down_proj: up('down_proj', w.down_proj) };
  return {
    ...gpu,
    destroy() {
      for (const p of Object.values(gpu)) {
        p.weight.destroy();
        p.weight_scale_inv?.destroy();
      }
    },
  };
}

/**
 * Experts first .. first + count - 1 of a stack of `experts`, as a stack of their own: the slots
 * (and fp8 scales) copied with the whole stack's layout, as a split stack holds them.
 */
export function sliceStack(s: StackedExpertWeight, experts: number, first: number, count: number): StackedExpertWeight {
  const slot = s.bytes.length / experts;
  const bytes = s.bytes.slice(first * slot, (first + count) * slot);
  if (s.format === 'bf16') return { format: s.format, bytes };
  const scales = s.scale.length / experts;
  return { format: s.format, bytes, scale: s.scale.slice(first * scales, (first + count) * scales) };
}

/** The experts of `w` split into consecutive ranges of `counts` experts, each range's slots in buffers of its own. */
export function uploadExpertRanges(device: GPUDevice, w: ExpertWeights, counts: readonly number[]): { ranges: ExpertRange[]; destroy(): void } {
  const experts = counts.reduce((a, b) => a + b, 0);
  const uploaded: (MlpWeights & { destroy(): void })[] = [];
  let first = 0;
  const ranges = counts.map((count) => {
    const slice = (s: StackedExpertWeight) => sliceStack(s, experts, first, count);
    const weights = uploadExperts(device, { gate_proj: slice(w.gate_proj), up_proj: slice(w.up_proj), down_proj: slice(w.down_proj) });
    uploaded.push(weights);
    const range = { first, count, weights };
    first += count;
    return range;
  });
  return {
    ranges,
    destroy() {
      for (const u of uploaded) u.destroy();
    },
  };
}

/** Run one call in its own pass with no validation error, and read `count` f32 of `out` back. */
export async function runChecked(device: GPUDevice, call: PreparedCall, out: GPUBuffer, count: number): Promise<Float32Array> {
  device.pushErrorScope('validation');
  submitPass(device, call);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  return readF32(device, out, count);
}
