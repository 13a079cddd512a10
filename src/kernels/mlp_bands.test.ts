// The SwiGLU MLP (dense layers, shared experts) over projections split in row bands, as the loader
// places a projection larger than a storage binding (src/model/placement.ts): the same out as the
// whole projections, bit for bit, in both weight formats, on both paths (decode T <= 4, grouped
// T > 4), W8A8 included, at odd shapes (the last band short, rows not a multiple of 4), and bands
// whose outputs leave the rest of h and out as they were (poisoned with NaN: a band that writes
// outside its columns, or one that is skipped, shows). Bad bands are ArgumentErrors. As a MoE
// layer's shared experts (moe_experts with its router): banded, they run as an MLP adding into
// the routed sum; the out equals the whole weights' (2 fused passes) bit for bit.

import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { uploadBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { BLOCK, type KernelContext } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { randn, relError, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { randomExperts, runChecked, uploadExperts } from '../testing/moe_experts_testing.ts';
import { submitPass } from '../gpu/kernel.ts';
import { readF32 } from '../gpu/buffers.ts';
import { mlpRef, type StackedExpertWeight } from './moe_experts.ref.ts';
import { createMlp, createMoeExperts, createMoeExpertsScratch, type ExpertWeightFormat, type MlpBands, type ProjectionBand } from './moe_experts.ts';

let gpu: Gpu;
let ctx: KernelContext;
beforeAll(async () => {
  gpu = await testGpu();
  ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
});

/** Rows first .. first + rows - 1 of a one-expert [n, cols] projection, in buffers of their own. */
function uploadBand(device: GPUDevice, s: StackedExpertWeight, cols: number, first: number, rows: number, owned: GPUBuffer[]): ProjectionBand {
  const bytesPerWeight = s.format === 'fp8' ? 1 : 2;
  const weight = uploadBuffer(device, s.bytes.slice(first * cols * bytesPerWeight, (first + rows) * cols * bytesPerWeight), `band[${first}]`);
  owned.push(weight);
  if (s.format === 'bf16') return { weight, first, rows };
  const kBlocks = Math.ceil(cols / BLOCK);
  const scales = s.scale.slice((first / BLOCK) * kBlocks, Math.ceil((first + rows) / BLOCK) * kBlocks);
  const weight_scale_inv = uploadBuffer(device, scales, `band[${first}].scale`);
  owned.push(weight_scale_inv);
  return { weight, weight_scale_inv, first, rows };
}

/** A projection of n rows cut at `cuts` (the first rows of the bands after the first). */
function uploadBands(device: GPUDevice, s: StackedExpertWeight, n: number, cols: number, cuts: readonly number[], owned: GPUBuffer[]): ProjectionBand[] {
  const starts = [0, ...cuts];
  return starts.map((first, i) => uploadBand(device, s, cols, first, (starts[i + 1] ?? n) - first, owned));
}

const CASES: { format: ExpertWeightFormat; roundHidden?: boolean; d: number; I: number; gateUpCuts: number[]; downCuts: number[] }[] = [
  { format: 'fp8', roundHidden: false, d: 203, I: 300, gateUpCuts: [128, 256], downCuts: [128] },
  { format: 'fp8', roundHidden: false, d: 260, I: 129, gateUpCuts: [128], downCuts: [256] },
  { format: 'bf16', roundHidden: false, d: 201, I: 150, gateUpCuts: [37, 101], downCuts: [3, 200] },
  { format: 'fp8', roundHidden: true, d: 200, I: 256, gateUpCuts: [128], downCuts: [128] },
];

describe('the MLP over row bands', () => {
  it.each(CASES)('equals the whole projections bit for bit ($format, w8a8 $roundHidden, d=$d, I=$I, gate/up cut at $gateUpCuts, down at $downCuts)', async ({ format, roundHidden, d, I, gateUpCuts, downCuts }) => {
    const { device } = gpu;
    const next = rng(testSeed(`mlp bands ${format} ${roundHidden} ${d} ${I}`));
    const kernel = createMlp(ctx, { weights: format, roundHidden });
    const weights = randomExperts(next, 1, d, I, format);
    const whole = uploadExperts(device, weights);
    const owned: GPUBuffer[] = [];
    const bands: MlpBands = {
      gate_proj: uploadBands(device, weights.gate_proj, I, d, gateUpCuts, owned),
      up_proj: uploadBands(device, weights.up_proj, I, d, gateUpCuts, owned),
      down_proj: uploadBands(device, weights.down_proj, d, I, downCuts, owned),
    };
    try {
      for (const tokens of [1, 3, 6]) {
        const x = randn(next, tokens * d);
        const run = async (w: typeof whole | MlpBands) => {
          const bufs = { x: uploadBuffer(device, x, 'x'), h: uploadBuffer(device, new Float32Array(tokens * I).fill(Number.NaN), 'h'), out: uploadBuffer(device, new Float32Array(tokens * d).fill(Number.NaN), 'out') };
          const call = kernel.prepare({ tokens, hidden_size: d, intermediate_size: I, ...bufs, weights: w });
          try {
            return await runChecked(device, call, bufs.out, tokens * d);
          } finally {
            call.destroy();
            for (const b of Object.values(bufs)) b.destroy();
          }
        };
        const want = await run(whole);
        const got = await run(bands);
        const what = `${format} T=${tokens}`;
        expect(got.findIndex((v) => !Number.isFinite(v)), `${what}: a column no band wrote`).toBe(-1);
        expect(new Uint32Array(got.buffer), what).toEqual(new Uint32Array(want.buffer));
        if (!roundHidden) expect(relError(got, mlpRef({ tokens, hidden_size: d, moe_intermediate_size: I, x, weights })).rel, what).toBeLessThan(1e-5);
      }
    } finally {
      whole.destroy();
      for (const b of owned) b.destroy();
    }
  });

  it('accumulate: out += mlp(x) in one addition (a dense layer adding into the residual stream), banded or whole, decode and grouped', async () => {
    const { device } = gpu;
    const { format, d, I, gateUpCuts, downCuts } = CASES[0];
    const next = rng(testSeed('mlp accumulate'));
    const kernel = createMlp(ctx, { weights: format });
    const weights = randomExperts(next, 1, d, I, format);
    const whole = uploadExperts(device, weights);
    const owned: GPUBuffer[] = [];
    const bands: MlpBands = {
      gate_proj: uploadBands(device, weights.gate_proj, I, d, gateUpCuts, owned),
      up_proj: uploadBands(device, weights.up_proj, I, d, gateUpCuts, owned),
      down_proj: uploadBands(device, weights.down_proj, d, I, downCuts, owned),
    };
    try {
      for (const tokens of [1, 6]) {
        const x = randn(next, tokens * d);
        const residual = randn(next, tokens * d);
        const run = async (w: typeof whole | MlpBands, accumulate: boolean) => {
          const bufs = { x: uploadBuffer(device, x, 'x'), h: uploadBuffer(device, new Float32Array(tokens * I), 'h'), out: uploadBuffer(device, accumulate ? residual : new Float32Array(tokens * d), 'out') };
          const call = kernel.prepare({ tokens, hidden_size: d, intermediate_size: I, ...bufs, weights: w, accumulate });
          try {
            return await runChecked(device, call, bufs.out, tokens * d);
          } finally {
            call.destroy();
            for (const b of Object.values(bufs)) b.destroy();
          }
        };
        const stored = await run(whole, false);
        const want = stored.map((v, i) => Math.fround(residual[i] + v));
        for (const w of [whole, bands]) {
          const got = await run(w, true);
          expect(new Uint32Array(got.buffer), `T=${tokens} ${w === whole ? 'whole' : 'bands'}`).toEqual(new Uint32Array(want.buffer));
        }
      }
    } finally {
      whole.destroy();
      for (const b of owned) b.destroy();
    }
  });

  it('refuses bands that leave rows out, overlap, split a scale block, or cut gate and up apart', () => {
    const { device } = gpu;
    const next = rng(7);
    const [d, I] = [64, 256];
    const weights = randomExperts(next, 1, d, I, 'fp8');
    const owned: GPUBuffer[] = [];
    const gate = uploadBands(device, weights.gate_proj, I, d, [128], owned);
    const up = uploadBands(device, weights.up_proj, I, d, [128], owned);
    const down = uploadBands(device, weights.down_proj, d, I, [], owned);
    const b = (n: number) => {
      const buffer = uploadBuffer(device, new Float32Array(n), 'b');
      owned.push(buffer);
      return buffer;
    };
    const args = { tokens: 2, hidden_size: d, intermediate_size: I, x: b(2 * d), h: b(2 * I), out: b(2 * d) };
    const kernel = createMlp(ctx);
    const prepare = (w: MlpBands) => () => kernel.prepare({ ...args, weights: w });
    expect(prepare({ gate_proj: [gate[0]], up_proj: [up[0]], down_proj: down })).toThrow(ArgumentError);
    expect(prepare({ gate_proj: [gate[0]], up_proj: [up[0]], down_proj: down })).toThrow(/the bands of gate_proj cover rows 0 .. 127, not 0 .. 255/);
    expect(prepare({ gate_proj: [gate[0], gate[0]], up_proj: up, down_proj: down })).toThrow(/gate_proj\[1\] starts at row 0, not 128/);
    const midBlock = (p: ProjectionBand[]) => [{ ...p[0], rows: 100 }, { ...p[1], first: 100, rows: 156 }];
    expect(prepare({ gate_proj: midBlock(gate), up_proj: midBlock(up), down_proj: down })).toThrow(/gate_proj\[1\] starts at row 100, inside a 128-row scale block/);
    const bf16Cuts = createMlp(ctx, { weights: 'bf16' });
    const bf16 = randomExperts(next, 1, d, I, 'bf16');
    const bg = uploadBands(device, bf16.gate_proj, I, d, [100], owned);
    const bu = uploadBands(device, bf16.up_proj, I, d, [101], owned);
    const bd = uploadBands(device, bf16.down_proj, d, I, [], owned);
    expect(() => bf16Cuts.prepare({ ...args, weights: { gate_proj: bg, up_proj: bu, down_proj: bd } })).toThrow(/gate_proj and up_proj are cut in different bands/);
    expect(prepare({ gate_proj: gate, up_proj: [up[0], { ...up[1], weight_scale_inv: undefined }], down_proj: down })).toThrow(/up_proj\[128:256\]\.weight_scale_inv is required for fp8 weights/);
    expect(prepare({ gate_proj: gate, up_proj: [up[0], { ...up[1], weight: b(4) }], down_proj: down })).toThrow(/up_proj\[128:256\]\.weight holds 16 bytes, needs 8192/);
    for (const buffer of owned) buffer.destroy();
  });

  it('as the shared experts of a MoE layer: banded, added into the routed sum as the whole weights are', async () => {
    const { device } = gpu;
    const next = rng(testSeed('mlp bands shared experts'));
    const [T, d, I, E, K] = [2, 203, 136, 6, 2];
    const router = { n_routed_experts: E, n_group: 2, topk_group: 1, num_experts_per_tok: K, norm_topk_prob: true, routed_scaling_factor: 2.5 };
    const routed = uploadExperts(device, randomExperts(next, E, d, I));
    const weights = randomExperts(next, 1, d, I);
    const whole = uploadExperts(device, weights);
    const owned: GPUBuffer[] = [];
    const bands: MlpBands = {
      gate_proj: uploadBands(device, weights.gate_proj, I, d, [128], owned),
      up_proj: uploadBands(device, weights.up_proj, I, d, [128], owned),
      down_proj: uploadBands(device, weights.down_proj, d, I, [128], owned),
    };
    const shape = { tokens: T, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K };
    const scratch = createMoeExpertsScratch(device, shape, 'decode');
    const buf = (data: Float32Array | Uint32Array, name: string) => {
      const b = uploadBuffer(device, data, name);
      owned.push(b);
      return b;
    };
    const [x, logits, bias] = [buf(randn(next, T * d), 'x'), buf(randn(next, T * E), 'logits'), buf(randn(next, E), 'bias')];
    const kernel = createMoeExperts(ctx);
    const run = async (w: typeof whole | MlpBands) => {
      const out = buf(new Float32Array(T * d).fill(Number.NaN), 'out');
      const call = kernel.prepare({
        ...shape, x, weights: routed, scratch, out, topkIds: buf(new Uint32Array(T * K), 'ids'), topkWeights: buf(new Float32Array(T * K), 'w'),
        router: { config: router, logits, bias }, shared: { intermediate_size: I, weights: w, h: buf(new Float32Array(T * I), 'h') },
      });
      device.pushErrorScope('validation');
      submitPass(device, call);
      expect((await device.popErrorScope())?.message).toBeUndefined();
      call.destroy();
      return readF32(device, out, T * d);
    };
    try {
      const want = await run(whole);
      const got = await run(bands);
      expect(got.findIndex((v) => !Number.isFinite(v))).toBe(-1);
      expect(new Uint32Array(got.buffer)).toEqual(new Uint32Array(want.buffer));
    } finally {
      for (const b of [routed, whole, scratch, ...owned]) b.destroy();
    }
  });
});
