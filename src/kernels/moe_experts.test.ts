// The routed experts and the SwiGLU MLP on the GPU (SwiftShader here) against the float64
// references, for both weight formats: both paths (decode T = 1..3, grouped T = 1, 7, 33) on odd
// shapes, including rows that start inside a u32 word (fp8: hidden or moe_inter not a multiple of
// 4; bf16: odd) and bf16 rows on a word whose last quad runs past k (k % 4 == 2); random e4m3
// codes and block scales, or random bf16 values; routings with an expert chosen by every token and
// experts chosen by none; the output and the work buffers poisoned with NaN, the padding between
// expert slots with NaN codes. Bound ‖out − ref‖/‖ref‖ < 1e-5: f32 accumulation of a few hundred
// products per dot, and the expert sum in k order rather than the official expert-index order.
// W8A8 (fp8 only; refused for bf16): h rounded to FP8 by act_quant, checked code by code, and out
// against the down projection of the GPU's own h (expectRoundedHidden, w8a8Want).

import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { dequantizeExpertMlp, expertDownRef, expertHiddenRef, mlpRef, moeExpertsRef, type DequantizedExpert, type ExpertShape, type ExpertWeights } from './moe_experts.ref.ts';
import { E4M3_MAX, f32ToE4m3 } from './fp8_e4m3.ref.ts';
import { BLOCK, type Kernel, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { createMlp, createMoeExperts, createMoeExpertsScratch, EXPERT_WEIGHT_FORMATS, moeExpertsCost, type ExpertWeightFormat, type MlpArgs, type MoeExperts, type MoePath } from './moe_experts.ts';
import { randomExperts, randomRouting, uploadExperts, runChecked } from '../testing/moe_experts_testing.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

const TOL = 1e-5;

let gpu: Gpu;
let ctx: KernelContext;
let experts: Record<ExpertWeightFormat, MoeExperts>;
let mlp: Record<ExpertWeightFormat, Kernel<MlpArgs>>;
beforeAll(async () => {
  gpu = await testGpu();
  ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
  experts = { fp8: createMoeExperts(ctx), bf16: createMoeExperts(ctx, { weights: 'bf16' }) };
  mlp = { fp8: createMlp(ctx), bf16: createMlp(ctx, { weights: 'bf16' }) };
});

const nan = (n: number) => new Float32Array(n).fill(Number.NaN);

const run = (call: PreparedCall, out: GPUBuffer, count: number) => runChecked(gpu.device, call, out, count);

function expectClose(got: Float32Array, want: Float32Array, what: string, tol = TOL): void {
  const bad = got.findIndex((v) => !Number.isFinite(v));
  expect(bad, `${what}: out[${bad}] = ${got[bad]} (not written, or NaN read)`).toBe(-1);
  const err = relError(got, want);
  expect(err.rel, `${what}: rel ${err.rel}, worst out[${err.worst}]: got ${got[err.worst]} want ${want[err.worst]}`).toBeLessThan(tol);
}

/**
 * W8A8: the GPU's rounded h [rows, I] against the reference's. Each value is the reference's up to
 * the f32 rounding of its group scale, or, where the reference's h / s lay at an e4m3 midpoint
 * within the f32 difference of the two sums (about 2^-19 of the values), the neighbouring code:
 * one e4m3 step apart, and rare. An unrounded or mis-scaled h fails on nearly every value.
 */
function expectRoundedHidden(got: Float32Array, want: Float32Array, I: number, what: string): void {
  let neighbours = 0;
  for (let row = 0; row < got.length / I; row++) {
    for (let g = row * I; g < (row + 1) * I; g += BLOCK) {
      let amax = 0; // the group's largest value rounds to 448 * s exactly
      for (let i = g; i < g + BLOCK; i++) amax = Math.max(amax, Math.abs(want[i]));
      const s = amax / E4M3_MAX;
      for (let i = g; i < g + BLOCK; i++) {
        if (Math.abs(got[i] - want[i]) <= 1e-6 * amax) continue;
        const [a, b] = [f32ToE4m3(got[i] / s), f32ToE4m3(want[i] / s)];
        const step = Math.abs((a & 0x7f) - (b & 0x7f)) === 1 && ((a ^ b) & 0x80) === 0;
        expect(step, `${what}: h[${Math.floor(i / I)}, ${i % I}] got ${got[i]} want ${want[i]}: not one e4m3 step apart`).toBe(true);
        neighbours++;
      }
    }
  }
  expect(neighbours, `${what}: ${neighbours} of ${got.length} h values took the neighbouring code`).toBeLessThanOrEqual(Math.max(2, got.length * 1e-4));
}

/**
 * The W8A8 expectation from the halves of the reference: h [pairs, I] rounded as the reference
 * rounds it, and out [tokens, d] = the sum over k in order of w * down_e(gotH[pair]), the GPU's own
 * rounded h, so that a neighbouring code at a midpoint (above) is not counted against the down half.
 */
function w8a8Want(weights: ExpertWeights, shape: ExpertShape, x: Float32Array, ids: Uint32Array, w: Float32Array, topk: number, gotH: Float32Array): { h: Float32Array; out: Float32Array } {
  const { hidden_size: d, moe_intermediate_size: I } = shape;
  const dequantized = new Map<number, DequantizedExpert>();
  const expert = (e: number) => dequantized.get(e) ?? dequantized.set(e, dequantizeExpertMlp(weights, shape, e)).get(e)!;
  const h = new Float32Array(ids.length * I);
  const out = new Float64Array((ids.length / topk) * d);
  ids.forEach((e, pair) => {
    const t = Math.floor(pair / topk);
    h.set(expertHiddenRef(expert(e), shape, x.subarray(t * d, (t + 1) * d), true), pair * I);
    const y = expertDownRef(expert(e), shape, gotH.subarray(pair * I, (pair + 1) * I));
    for (let j = 0; j < d; j++) out[t * d + j] += w[pair] * y[j];
  });
  return { h, out: Float32Array.from(out) };
}

interface Shape {
  hidden_size: number;
  moe_intermediate_size: number;
  n_routed_experts: number;
  num_experts_per_tok: number;
}

const SHAPES: Record<ExpertWeightFormat, Shape[]> = {
  fp8: [
    { hidden_size: 200, moe_intermediate_size: 72, n_routed_experts: 12, num_experts_per_tok: 6 },
    { hidden_size: 128, moe_intermediate_size: 128, n_routed_experts: 12, num_experts_per_tok: 6 }, // the fixture's
    { hidden_size: 300, moe_intermediate_size: 200, n_routed_experts: 16, num_experts_per_tok: 4 },
    { hidden_size: 203, moe_intermediate_size: 37, n_routed_experts: 5, num_experts_per_tok: 2 }, // rows inside words
  ],
  bf16: [
    { hidden_size: 200, moe_intermediate_size: 136, n_routed_experts: 12, num_experts_per_tok: 6 }, // k % 4 == 0, not of 128
    { hidden_size: 203, moe_intermediate_size: 37, n_routed_experts: 5, num_experts_per_tok: 2 }, // odd k: rows inside words
    { hidden_size: 130, moe_intermediate_size: 66, n_routed_experts: 6, num_experts_per_tok: 3 }, // k % 4 == 2: rows on words, last quad past k
  ],
};

const TOKENS: Record<MoePath, number[]> = { decode: [1, 2, 3], grouped: [1, 7, 33] };

async function checkMoe(kernel: MoeExperts, shape: Shape, path: MoePath, weights: ExpertWeights, next: () => number, roundHidden = false): Promise<void> {
  const { device } = gpu;
  const { hidden_size: d, n_routed_experts: E, num_experts_per_tok: K } = shape;
  const gpuWeights = uploadExperts(device, weights);
  for (const tokens of TOKENS[path]) {
    const x = randn(next, tokens * d);
    const ids = randomRouting(next, tokens, K, E);
    const w = Float32Array.from({ length: tokens * K }, () => 0.1 + 2 * next());
    const full = { ...shape, tokens };

    const scratch = createMoeExpertsScratch(device, full, path);
    for (const b of [scratch.h, scratch.y]) if (b) device.queue.writeBuffer(b, 0, nan(b.size / 4));
    const bufs = {
      x: uploadBuffer(device, x, 'x'),
      topkIds: uploadBuffer(device, ids, 'topk_ids'),
      topkWeights: uploadBuffer(device, w, 'topk_weights'),
      out: uploadBuffer(device, nan(tokens * d), 'out'),
    };
    const call = kernel.prepare({ ...full, path, ...bufs, weights: gpuWeights, scratch });
    const what = `${kernel.weights} ${path} T=${tokens} ${JSON.stringify(shape)}`;
    const got = await run(call, bufs.out, tokens * d);
    if (roundHidden) {
      const gotH = await readF32(device, scratch.h, tokens * K * shape.moe_intermediate_size);
      const want = w8a8Want(weights, shape, x, ids, w, K, gotH);
      expectRoundedHidden(gotH, want.h, shape.moe_intermediate_size, what);
      expectClose(got, want.out, what);
    } else {
      expectClose(got, moeExpertsRef({ ...full, topk: K, x, topkIds: ids, topkWeights: w, weights }), what);
    }
    call.destroy();
    scratch.destroy();
    for (const b of Object.values(bufs)) b.destroy();
  }
  gpuWeights.destroy();
}

const CASES = EXPERT_WEIGHT_FORMATS.flatMap((format) => (['decode', 'grouped'] as const).map((path) => ({ format, path })));

describe.each(CASES)('moe_experts, $format weights, $path path', ({ format, path }) => {
  it.each(SHAPES[format])('matches the reference (d=$hidden_size, moe_inter=$moe_intermediate_size, E=$n_routed_experts, K=$num_experts_per_tok)', async (shape) => {
    // fp8 keeps its seed names from before the weight formats
    const next = rng(testSeed(`moe_experts ${format === 'fp8' ? '' : 'bf16 '}${path} ${JSON.stringify(shape)}`));
    const weights = randomExperts(next, shape.n_routed_experts, shape.hidden_size, shape.moe_intermediate_size, format);
    await checkMoe(experts[format], shape, path, weights, next);
  });
});

// W8A8 on FP8 weights: h rounded in place by act_quant before down (moe_inter a multiple of 128,
// act_quant's groups), checked by expectRoundedHidden and w8a8Want.
describe('moe_experts w8a8 (roundHidden)', () => {
  const shape = { hidden_size: 200, moe_intermediate_size: 256, n_routed_experts: 6, num_experts_per_tok: 3 };
  it.each(['decode', 'grouped'] as const)('matches the reference with h rounded to FP8, %s path', async (path) => {
    const next = rng(testSeed(`moe_experts w8a8 ${path}`));
    const weights = randomExperts(next, shape.n_routed_experts, shape.hidden_size, shape.moe_intermediate_size);
    await checkMoe(createMoeExperts(ctx, { roundHidden: true }), shape, path, weights, next, true);
  });

  it('refuses bf16 weights: the official linear() quantises activations for FP8 weights only', () => {
    expect(() => createMoeExperts(ctx, { weights: 'bf16', roundHidden: true })).toThrow(ArgumentError);
    expect(() => createMoeExperts(ctx, { weights: 'bf16', roundHidden: true })).toThrow(/roundHidden \(w8a8\) quantises activations for FP8 weights only; bf16 weights run weight_only/);
    expect(() => createMlp(ctx, { weights: 'bf16', roundHidden: true })).toThrow(ArgumentError);
    expect(() => createMoeExperts(ctx, { weights: 'f32' as ExpertWeightFormat })).toThrow(/"f32" is not an expert weight format/);
  });
});

const MLP_SHAPES = [
  { format: 'fp8', hidden_size: 200, intermediate_size: 144, tokens: [1, 6] },
  { format: 'fp8', hidden_size: 203, intermediate_size: 37, tokens: [3, 9] },
  { format: 'bf16', hidden_size: 200, intermediate_size: 136, tokens: [1, 6] },
  { format: 'bf16', hidden_size: 203, intermediate_size: 37, tokens: [3, 9] },
  { format: 'fp8', hidden_size: 200, intermediate_size: 128, tokens: [2, 5], roundHidden: true },
] as const;

describe('moe_experts MLP (dense layers, shared experts)', () => {
  it.each(MLP_SHAPES)('matches the reference ($format, d=$hidden_size, inter=$intermediate_size, roundHidden=$roundHidden)', async (c) => {
    const { device } = gpu;
    const { format, hidden_size: d, intermediate_size: I, tokens: counts } = c;
    const roundHidden = 'roundHidden' in c;
    // fp8 keeps its seed names from before the weight formats
    const next = rng(testSeed(['mlp', format === 'bf16' && 'bf16', roundHidden && 'w8a8', d, I].filter((part) => part !== false).join(' ')));
    const kernel = roundHidden ? createMlp(ctx, { roundHidden }) : mlp[format];
    const weights = randomExperts(next, 1, d, I, format);
    const gpuWeights = uploadExperts(device, weights);
    for (const tokens of counts) {
      const x = randn(next, tokens * d);
      const bufs = { x: uploadBuffer(device, x, 'x'), h: uploadBuffer(device, nan(tokens * I), 'h'), out: uploadBuffer(device, nan(tokens * d), 'out') };
      const call = kernel.prepare({ tokens, hidden_size: d, intermediate_size: I, ...bufs, weights: gpuWeights });
      const what = `mlp ${format} T=${tokens} d=${d} I=${I}`;
      const got = await run(call, bufs.out, tokens * d);
      const shape = { hidden_size: d, moe_intermediate_size: I };
      if (roundHidden) {
        // as one-expert routing: every token chooses expert 0 at weight 1
        const gotH = await readF32(device, bufs.h, tokens * I);
        const want = w8a8Want(weights, shape, x, new Uint32Array(tokens), new Float32Array(tokens).fill(1), 1, gotH);
        expectRoundedHidden(gotH, want.h, I, what);
        expectClose(got, want.out, what);
      } else {
        expectClose(got, mlpRef({ tokens, ...shape, x, weights }), what);
      }
      call.destroy();
      for (const b of Object.values(bufs)) b.destroy();
    }
    gpuWeights.destroy();
  });
});

describe('moe_experts arguments', () => {
  it('rejects a stacked weight too small for n_routed_experts and missing grouped scratch', () => {
    const { device } = gpu;
    const shape = { tokens: 8, hidden_size: 16, moe_intermediate_size: 8, n_routed_experts: 4, num_experts_per_tok: 2 };
    const next = rng(1);
    const weights = uploadExperts(device, randomExperts(next, 3, 16, 8)); // one expert short
    const b = () => uploadBuffer(device, new Float32Array(1024), 'b');
    const bufs = { x: b(), topkIds: b(), topkWeights: b(), out: b() };
    const decodeScratch = createMoeExpertsScratch(device, shape, 'decode');
    expect(() => experts.fp8.prepare({ ...shape, ...bufs, weights, scratch: decodeScratch, path: 'decode' })).toThrow(/gate_proj.weight holds 384 bytes, needs 512/);
    const enough = uploadExperts(device, randomExperts(next, 4, 16, 8));
    expect(() => experts.fp8.prepare({ ...shape, ...bufs, weights: enough, scratch: decodeScratch })).toThrow(ArgumentError); // 8 tokens: grouped
    expect(() => experts.fp8.prepare({ ...shape, ...bufs, weights: enough, scratch: decodeScratch })).toThrow(/scratch.y is required/);
    expect(() => experts.fp8.prepare({ ...shape, tokens: 0, ...bufs, weights: enough, scratch: decodeScratch })).toThrow(/tokens must be a positive integer/);
    for (const x of [...Object.values(bufs), decodeScratch, weights, enough]) x.destroy();
  });

  it('takes scales with fp8 weights only, and sizes bf16 stacks at 2 bytes a weight', () => {
    const { device } = gpu;
    const shape = { tokens: 2, hidden_size: 16, moe_intermediate_size: 8, n_routed_experts: 4, num_experts_per_tok: 2, path: 'decode' as const };
    const next = rng(2);
    const b = () => uploadBuffer(device, new Float32Array(1024), 'b');
    const bufs = { x: b(), topkIds: b(), topkWeights: b(), out: b() };
    const scratch = createMoeExpertsScratch(device, shape, 'decode');
    const fp8 = uploadExperts(device, randomExperts(next, 4, 16, 8));
    const bf16 = uploadExperts(device, randomExperts(next, 4, 16, 8, 'bf16'));
    const short = uploadExperts(device, randomExperts(next, 3, 16, 8, 'bf16')); // one expert short
    const noScales = { ...fp8, down_proj: { weight: fp8.down_proj.weight } };
    const withScales = { ...bf16, up_proj: { weight: bf16.up_proj.weight, weight_scale_inv: fp8.up_proj.weight_scale_inv } };
    expect(() => experts.bf16.prepare({ ...shape, ...bufs, weights: fp8, scratch })).toThrow(ArgumentError);
    expect(() => experts.bf16.prepare({ ...shape, ...bufs, weights: withScales, scratch })).toThrow(/up_proj.weight_scale_inv is not used by bf16 weights/);
    expect(() => experts.fp8.prepare({ ...shape, ...bufs, weights: noScales, scratch })).toThrow(ArgumentError);
    expect(() => experts.fp8.prepare({ ...shape, ...bufs, weights: noScales, scratch })).toThrow(/down_proj.weight_scale_inv is required for fp8 weights/);
    expect(() => experts.bf16.prepare({ ...shape, ...bufs, weights: short, scratch })).toThrow(/gate_proj.weight holds 768 bytes, needs 1024/);
    const mlpArgs = { tokens: 2, hidden_size: 16, intermediate_size: 8, x: bufs.x, h: b(), out: bufs.out };
    expect(() => mlp.bf16.prepare({ ...mlpArgs, weights: fp8 })).toThrow(/gate_proj.weight_scale_inv is not used by bf16 weights/);
    expect(() => mlp.fp8.prepare({ ...mlpArgs, weights: bf16 })).toThrow(/gate_proj.weight_scale_inv is required for fp8 weights/);
    const call = experts.bf16.prepare({ ...shape, ...bufs, weights: bf16, scratch });
    expect(call.bytes).toBe(moeExpertsCost(shape, 'decode', 'bf16').bytes);
    for (const x of [...Object.values(bufs), mlpArgs.h, call, scratch, fp8, bf16, short]) x.destroy();
  });

  it('counts bytes and FLOPs', () => {
    const shape = { tokens: 1, hidden_size: 7168, moe_intermediate_size: 2048, n_routed_experts: 256, num_experts_per_tok: 8 };
    const { bytes, flops } = moeExpertsCost(shape, 'decode');
    expect(flops).toBe(2 * 3 * 8 * 2048 * 7168 + 2 * 8 * 7168);
    // 8 experts' FP8 weights and scales dominate: 3 * 2048 * 7168 bytes + 3 * 16 * 56 scales each
    expect(bytes - 8 * (3 * 2048 * 7168 + 4 * 3 * 16 * 56)).toBe(4 * (2 * 7168 + 2 * 8 + 2 * 8 * 2048));
    // bf16: 2 bytes a weight, no scales
    expect(moeExpertsCost(shape, 'decode', 'bf16').bytes - 8 * 2 * 3 * 2048 * 7168).toBe(4 * (2 * 7168 + 2 * 8 + 2 * 8 * 2048));
  });
});
