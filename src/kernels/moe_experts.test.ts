// The routed experts and the SwiGLU MLP on the GPU (SwiftShader here) against the float64
// references: both paths (decode T = 1..3, grouped T = 1, 7, 33) on odd shapes, including rows
// that start inside a u32 word (hidden or moe_inter not a multiple of 4); random e4m3 codes and
// block scales; routings with an expert chosen by every token and experts chosen by none; the
// output and the work buffers poisoned with NaN, the padding between expert slots with NaN codes.
// Bound ‖out − ref‖/‖ref‖ < 1e-5: f32 accumulation of a few hundred products per dot, and the
// expert sum in k order rather than the official expert-index order.

import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { mlpRef, moeExpertsRef, type ExpertWeights } from './moe_experts.ref.ts';
import { submitPass, type Kernel, type PreparedCall } from '../gpu/kernel.ts';
import { createMlp, createMoeExperts, createMoeExpertsScratch, moeExpertsCost, type MlpArgs, type MoeExperts, type MoePath } from './moe_experts.ts';
import { randomExperts, randomRouting, uploadExperts } from '../testing/moe_experts_testing.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

const TOL = 1e-5;

let gpu: Gpu;
let experts: MoeExperts;
let mlp: Kernel<MlpArgs>;
beforeAll(async () => {
  gpu = await testGpu();
  const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
  experts = createMoeExperts(ctx);
  mlp = createMlp(ctx);
});

const nan = (n: number) => new Float32Array(n).fill(Number.NaN);

async function run(call: PreparedCall, out: GPUBuffer, count: number): Promise<Float32Array> {
  const { device } = gpu;
  device.pushErrorScope('validation');
  submitPass(device, call);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  return readF32(device, out, count);
}

function expectClose(got: Float32Array, want: Float32Array, what: string): void {
  const bad = got.findIndex((v) => !Number.isFinite(v));
  expect(bad, `${what}: out[${bad}] = ${got[bad]} (not written, or NaN read)`).toBe(-1);
  const err = relError(got, want);
  expect(err.rel, `${what}: rel ${err.rel}, worst out[${err.worst}]: got ${got[err.worst]} want ${want[err.worst]}`).toBeLessThan(TOL);
}

interface Shape {
  hidden_size: number;
  moe_intermediate_size: number;
  n_routed_experts: number;
  num_experts_per_tok: number;
}

const SHAPES: Shape[] = [
  { hidden_size: 200, moe_intermediate_size: 72, n_routed_experts: 12, num_experts_per_tok: 6 },
  { hidden_size: 128, moe_intermediate_size: 128, n_routed_experts: 12, num_experts_per_tok: 6 }, // the fixture's
  { hidden_size: 300, moe_intermediate_size: 200, n_routed_experts: 16, num_experts_per_tok: 4 },
  { hidden_size: 203, moe_intermediate_size: 37, n_routed_experts: 5, num_experts_per_tok: 2 }, // rows inside words
];

const TOKENS: Record<MoePath, number[]> = { decode: [1, 2, 3], grouped: [1, 7, 33] };

async function checkMoe(shape: Shape, path: MoePath, weights: ExpertWeights, next: () => number): Promise<void> {
  const { device } = gpu;
  const { hidden_size: d, n_routed_experts: E, num_experts_per_tok: K } = shape;
  const gpuWeights = uploadExperts(device, weights);
  for (const tokens of TOKENS[path]) {
    const x = randn(next, tokens * d);
    const ids = randomRouting(next, tokens, K, E);
    const w = Float32Array.from({ length: tokens * K }, () => 0.1 + 2 * next());
    const full = { ...shape, tokens };
    const want = moeExpertsRef({ ...full, topk: K, x, topkIds: ids, topkWeights: w, weights });

    const scratch = createMoeExpertsScratch(device, full, path);
    for (const b of [scratch.h, scratch.y]) if (b) device.queue.writeBuffer(b, 0, nan(b.size / 4));
    const bufs = {
      x: uploadBuffer(device, x, 'x'),
      topkIds: uploadBuffer(device, ids, 'topk_ids'),
      topkWeights: uploadBuffer(device, w, 'topk_weights'),
      out: uploadBuffer(device, nan(tokens * d), 'out'),
    };
    const call = experts.prepare({ ...full, path, ...bufs, weights: gpuWeights, scratch });
    expectClose(await run(call, bufs.out, tokens * d), want, `${path} T=${tokens} ${JSON.stringify(shape)}`);
    call.destroy();
    scratch.destroy();
    for (const b of Object.values(bufs)) b.destroy();
  }
  gpuWeights.destroy();
}

describe.each(['decode', 'grouped'] as const)('moe_experts, %s path', (path) => {
  it.each(SHAPES)('matches the reference (d=$hidden_size, moe_inter=$moe_intermediate_size, E=$n_routed_experts, K=$num_experts_per_tok)', async (shape) => {
    const next = rng(testSeed(`moe_experts ${path} ${JSON.stringify(shape)}`));
    const weights = randomExperts(next, shape.n_routed_experts, shape.hidden_size, shape.moe_intermediate_size);
    await checkMoe(shape, path, weights, next);
  });
});

describe('moe_experts MLP (dense layers, shared experts)', () => {
  it.each([
    { hidden_size: 200, intermediate_size: 144, tokens: [1, 6] },
    { hidden_size: 203, intermediate_size: 37, tokens: [3, 9] },
  ])('matches the reference (d=$hidden_size, inter=$intermediate_size)', async ({ hidden_size: d, intermediate_size: I, tokens: counts }) => {
    const { device } = gpu;
    const next = rng(testSeed(`mlp ${d} ${I}`));
    const weights = randomExperts(next, 1, d, I);
    const gpuWeights = uploadExperts(device, weights);
    for (const tokens of counts) {
      const x = randn(next, tokens * d);
      const want = mlpRef({ tokens, hidden_size: d, moe_intermediate_size: I, x, weights });
      const bufs = { x: uploadBuffer(device, x, 'x'), h: uploadBuffer(device, nan(tokens * I), 'h'), out: uploadBuffer(device, nan(tokens * d), 'out') };
      const call = mlp.prepare({ tokens, hidden_size: d, intermediate_size: I, ...bufs, weights: gpuWeights });
      expectClose(await run(call, bufs.out, tokens * d), want, `mlp T=${tokens} d=${d} I=${I}`);
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
    expect(() => experts.prepare({ ...shape, ...bufs, weights, scratch: decodeScratch, path: 'decode' })).toThrow(/gate_proj.weight holds 384 bytes, needs 512/);
    const enough = uploadExperts(device, randomExperts(next, 4, 16, 8));
    expect(() => experts.prepare({ ...shape, ...bufs, weights: enough, scratch: decodeScratch })).toThrow(ArgumentError); // 8 tokens: grouped
    expect(() => experts.prepare({ ...shape, ...bufs, weights: enough, scratch: decodeScratch })).toThrow(/scratch.y is required/);
    expect(() => experts.prepare({ ...shape, tokens: 0, ...bufs, weights: enough, scratch: decodeScratch })).toThrow(/tokens must be a positive integer/);
    for (const x of [...Object.values(bufs), decodeScratch, weights, enough]) x.destroy();
  });

  it('counts bytes and FLOPs', () => {
    const shape = { tokens: 1, hidden_size: 7168, moe_intermediate_size: 2048, n_routed_experts: 256, num_experts_per_tok: 8 };
    const { bytes, flops } = moeExpertsCost(shape, 'decode');
    expect(flops).toBe(2 * 3 * 8 * 2048 * 7168 + 2 * 8 * 7168);
    // 8 experts' FP8 weights and scales dominate: 3 * 2048 * 7168 bytes + 3 * 16 * 56 scales each
    expect(bytes - 8 * (3 * 2048 * 7168 + 4 * 3 * 16 * 56)).toBe(4 * (2 * 7168 + 2 * 8 + 2 * 8 * 2048));
  });
});
