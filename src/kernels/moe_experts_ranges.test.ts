// The routed experts over a stack split into expert ranges (ExpertRange: each range's slots in
// buffers of their own, as a loader lays out a stack too large for one binding) against the same
// call on the unsplit stack, bit for bit: fp8 and bf16, decode (T = 1, 3) and grouped (T = 3, 9),
// w8a8 (roundHidden) on fp8, at odd shapes (rows inside words), split as one range, as uneven
// ranges and as one range per expert. The routing has a hot expert (rows past one tile of 4), a
// cold one (a range no pair chooses) and, at T = 9, every other expert chosen; out, h and y start
// as NaN, so a pass that skipped its range's pairs shows. Also: a range with zeroed weights
// changes exactly the tokens that chose it, the dispatch counts, and the ArgumentErrors.

import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import type { KernelContext, PreparedCall } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import type { ExpertWeights } from './moe_experts.ref.ts';
import { createMoeExperts, createMoeExpertsScratch, moeExpertsScratchBytes, type ExpertRange, type ExpertWeightFormat, type MlpWeights, type MoeExperts, type MoeExpertsArgs, type MoePath } from './moe_experts.ts';
import { randomExperts, randomRouting, uploadExpertRanges, uploadExperts, runChecked } from '../testing/moe_experts_testing.ts';

let gpu: Gpu;
let ctx: KernelContext;
let kernels: Record<'fp8' | 'bf16' | 'w8a8', MoeExperts>;
beforeAll(async () => {
  gpu = await testGpu();
  ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
  kernels = { fp8: createMoeExperts(ctx), bf16: createMoeExperts(ctx, { weights: 'bf16' }), w8a8: createMoeExperts(ctx, { roundHidden: true }) };
});

const nan = (n: number) => new Float32Array(n).fill(Number.NaN);
const HOT = 2;

interface Case {
  kernel: keyof typeof kernels;
  hidden_size: number;
  moe_intermediate_size: number;
  n_routed_experts: number;
  num_experts_per_tok: number;
}

const CASES: Case[] = [
  { kernel: 'fp8', hidden_size: 200, moe_intermediate_size: 136, n_routed_experts: 7, num_experts_per_tok: 3 },
  { kernel: 'fp8', hidden_size: 203, moe_intermediate_size: 37, n_routed_experts: 13, num_experts_per_tok: 3 }, // rows inside words
  { kernel: 'bf16', hidden_size: 72, moe_intermediate_size: 40, n_routed_experts: 13, num_experts_per_tok: 3 },
  { kernel: 'bf16', hidden_size: 201, moe_intermediate_size: 37, n_routed_experts: 7, num_experts_per_tok: 3 }, // odd k
  { kernel: 'w8a8', hidden_size: 200, moe_intermediate_size: 256, n_routed_experts: 7, num_experts_per_tok: 3 }, // act_quant: moe_inter of 128s
];

const TOKENS: Record<MoePath, number[]> = { decode: [1, 3], grouped: [3, 9] };

/** The splits of E experts, as range sizes: one range, uneven ranges (one of a single expert), one per expert. */
const splits = (E: number): number[][] => [[E], E === 7 ? [3, 1, 3] : [5, 1, 7], Array<number>(E).fill(1)];

const formatOf = (c: Case): ExpertWeightFormat => (c.kernel === 'bf16' ? 'bf16' : 'fp8');

/**
 * The router's shape of routing (randomRouting: expert HOT chosen by every token, the last by
 * none), redrawn until every other expert is chosen when the pairs allow it.
 */
function routing(next: () => number, tokens: number, K: number, E: number): Uint32Array {
  const others = E - 2; // neither hot nor cold
  for (;;) {
    const ids = randomRouting(next, tokens, K, E, HOT, [E - 1]);
    if (tokens * (K - 1) < others || new Set(ids).size === E - 1) return ids;
  }
}

const run = (call: PreparedCall, out: GPUBuffer, count: number) => runChecked(gpu.device, call, out, count);

function expectSameBits(got: Float32Array, want: Float32Array, what: string): void {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const bad = a.findIndex((v, i) => v !== b[i]);
  expect(bad, `${what}: [${bad}] = ${got[bad]}, unsplit ${want[bad]}`).toBe(-1);
}

interface Inputs {
  x: GPUBuffer;
  topkIds: GPUBuffer;
  topkWeights: GPUBuffer;
}

/** One call's out (and h) from NaN-poisoned out and scratch, with `weights` or `ranges`. */
async function runOnce(kernel: MoeExperts, shape: Case & { tokens: number }, path: MoePath, inputs: Inputs, w: { weights: MlpWeights } | { ranges: readonly ExpertRange[] }): Promise<{ out: Float32Array; h: Float32Array; bytes: number }> {
  const { device } = gpu;
  const { tokens: T, hidden_size: d, moe_intermediate_size: I, num_experts_per_tok: K } = shape;
  const scratch = createMoeExpertsScratch(device, shape, path, 'moe_experts', 'ranges' in w ? w.ranges.length : 1);
  for (const b of [scratch.h, scratch.y]) if (b) device.queue.writeBuffer(b, 0, nan(b.size / 4));
  const out = uploadBuffer(device, nan(T * d), 'out');
  const call = kernel.prepare({ ...shape, path, ...inputs, ...w, scratch, out } as MoeExpertsArgs);
  const got = { out: await run(call, out, T * d), h: await readF32(device, scratch.h, T * K * I), bytes: call.bytes };
  call.destroy();
  scratch.destroy();
  out.destroy();
  return got;
}

describe.each(['decode', 'grouped'] as const)('moe_experts over expert ranges, %s path', (path) => {
  it.each(CASES)('equals the unsplit call bit for bit ($kernel, d=$hidden_size, moe_inter=$moe_intermediate_size, E=$n_routed_experts, K=$num_experts_per_tok)', async (c) => {
    const { device } = gpu;
    const { hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K } = c;
    const next = rng(testSeed(`moe_experts ranges ${path} ${JSON.stringify(c)}`));
    const weights = randomExperts(next, E, d, I, formatOf(c));
    const whole = uploadExperts(device, weights);
    const split = splits(E).map((counts) => uploadExpertRanges(device, weights, counts));
    for (const tokens of TOKENS[path]) {
      const ids = routing(next, tokens, K, E);
      const inputs = {
        x: uploadBuffer(device, randn(next, tokens * d), 'x'),
        topkIds: uploadBuffer(device, ids, 'topk_ids'),
        topkWeights: uploadBuffer(device, Float32Array.from({ length: tokens * K }, () => 0.1 + 2 * next()), 'topk_weights'),
      };
      const shape = { ...c, tokens };
      const want = await runOnce(kernels[c.kernel], shape, path, inputs, { weights: whole });
      const bad = want.out.findIndex((v) => !Number.isFinite(v));
      expect(bad, `unsplit out[${bad}] = ${want.out[bad]}`).toBe(-1);
      for (const { ranges } of split) {
        const what = `${c.kernel} ${path} T=${tokens} ranges ${ranges.map((r) => r.count).join('+')}`;
        const got = await runOnce(kernels[c.kernel], shape, path, inputs, { ranges });
        expectSameBits(got.out, want.out, `${what} out`);
        expectSameBits(got.h, want.h, `${what} h`);
        expect(got.bytes, what).toBe(want.bytes);
      }
      for (const b of Object.values(inputs)) b.destroy();
    }
    for (const x of [whole, ...split]) x.destroy();
  });

  it('binds only its range: zeroed weights for experts 3 .. 3 change exactly the tokens that chose 3', async () => {
    const { device } = gpu;
    const c = { hidden_size: 72, moe_intermediate_size: 40, n_routed_experts: 7, num_experts_per_tok: 3 };
    const { hidden_size: d, n_routed_experts: E, num_experts_per_tok: K } = c;
    const tokens = path === 'decode' ? 3 : 9;
    const next = rng(testSeed(`moe_experts ranges zeroed ${path}`));
    const weights = randomExperts(next, E, d, c.moe_intermediate_size);
    const whole = uploadExperts(device, weights);
    const split = uploadExpertRanges(device, weights, [3, 1, 3]);
    const zero = (p: keyof MlpWeights) => ({ weight: uploadBuffer(device, new Uint8Array(split.ranges[1].weights[p].weight.size), 'zero'), weight_scale_inv: split.ranges[1].weights[p].weight_scale_inv });
    const zeroed = { gate_proj: zero('gate_proj'), up_proj: zero('up_proj'), down_proj: zero('down_proj') };
    const ranges = split.ranges.map((r, i) => (i === 1 ? { ...r, weights: zeroed } : r));
    // token t chooses t, t + 2 and t + 4 (mod 7), rotated: expert 3 by tokens 1, 3, 6, 8
    const ids = Uint32Array.from({ length: tokens * K }, (_, pair) => (Math.floor(pair / K) + 2 * ((pair + Math.floor(pair / K)) % K)) % E);
    const inputs = {
      x: uploadBuffer(device, randn(next, tokens * d), 'x'),
      topkIds: uploadBuffer(device, ids, 'topk_ids'),
      topkWeights: uploadBuffer(device, Float32Array.from({ length: tokens * K }, () => 0.1 + 2 * next()), 'topk_weights'),
    };
    const shape = { ...c, kernel: 'fp8' as const, tokens };
    const want = await runOnce(kernels.fp8, shape, path, inputs, { weights: whole });
    const got = await runOnce(kernels.fp8, shape, path, inputs, { ranges });
    const chose3 = Array.from({ length: tokens }, (_, t) => ids.subarray(t * K, (t + 1) * K).includes(3));
    expect(chose3.includes(true) && chose3.includes(false)).toBe(true);
    for (let t = 0; t < tokens; t++) {
      const row = (v: Float32Array) => v.subarray(t * d, (t + 1) * d);
      if (chose3[t]) expect(row(got.out).some((v, j) => v !== row(want.out)[j]), `token ${t} chose expert 3`).toBe(true);
      else expectSameBits(row(got.out), row(want.out), `token ${t}, which did not choose expert 3`);
    }
    for (const x of [...Object.values(inputs), ...Object.values(zeroed).map((p) => p.weight), whole, split]) x.destroy();
  });
});

describe('moe_experts expert range arguments', () => {
  const shape = { tokens: 2, hidden_size: 16, moe_intermediate_size: 8, n_routed_experts: 7, num_experts_per_tok: 2 };
  let bufs: Inputs & { out: GPUBuffer };
  let scratch: ReturnType<typeof createMoeExpertsScratch>;
  let experts: ExpertWeights;
  beforeAll(() => {
    const b = () => uploadBuffer(gpu.device, new Float32Array(1024), 'b');
    bufs = { x: b(), topkIds: b(), topkWeights: b(), out: b() };
    scratch = createMoeExpertsScratch(gpu.device, shape, 'grouped');
    experts = randomExperts(rng(3), 7, 16, 8);
  });
  // w: weights and/or ranges (invalid on purpose in some cases), and a path
  const prepare = (w: { weights?: MlpWeights; ranges?: readonly ExpertRange[]; path?: MoePath }, s = scratch) => kernels.fp8.prepare({ ...shape, ...bufs, ...w, scratch: s } as MoeExpertsArgs);
  /** Ranges over the split [3, 1, 3], with each range's first and count replaced as given. */
  const ranges = (split: ReturnType<typeof uploadExpertRanges>, ...bounds: [number, number][]) => bounds.map(([first, count], i) => ({ ...split.ranges[i], first, count }));

  it('rejects a gap, an overlap, both weights and ranges, neither, and ranges not covering the experts', () => {
    const split = uploadExpertRanges(gpu.device, experts, [3, 1, 3]);
    const whole = uploadExperts(gpu.device, experts);
    prepare({ ranges: split.ranges }).destroy();
    const cases: [Parameters<typeof prepare>[0], RegExp][] = [
      [{ ranges: ranges(split, [0, 3], [4, 1], [5, 2]) }, /ranges\[1\] starts at expert 4, leaving experts 3 \.\. 3 in no range; the ranges must be in order and contiguous, covering experts 0 \.\. 6/],
      [{ ranges: ranges(split, [0, 3], [2, 1], [3, 4]) }, /ranges\[1\] starts at expert 2, overlapping ranges\[0\] \(which ends at expert 2\)/],
      [{ ranges: ranges(split, [1, 3], [4, 3]) }, /ranges\[0\] starts at expert 1, leaving experts 0 \.\. 0 in no range/],
      [{ ranges: ranges(split, [3, 1], [0, 3], [4, 3]) }, /ranges\[0\] starts at expert 3, leaving experts 0 \.\. 2/], // out of order
      [{ ranges: ranges(split, [0, 3], [3, 1]) }, /the ranges end at expert 3, leaving experts 4 \.\. 6 in no range/],
      [{ ranges: ranges(split, [0, 3], [3, 1], [4, 4]) }, /ranges\[2\] ends at expert 7, past n_routed_experts = 7/],
      [{ ranges: ranges(split, [0, 3], [3, 0], [3, 4]) }, /ranges\[1\]\.count must be a positive integer, got 0/],
      [{ ranges: [] }, /ranges is empty; it must cover experts 0 \.\. 6/],
      [{ weights: whole, ranges: split.ranges }, /pass weights \(every expert in one set of buffers\) or ranges \(a stack split by expert\), not both/],
      [{}, /weights or ranges is required/],
    ];
    for (const [w, message] of cases) {
      expect(() => prepare(w), message.source).toThrow(ArgumentError);
      expect(() => prepare(w)).toThrow(message);
    }
    split.destroy();
    whole.destroy();
  });

  it("checks each range's buffers for its count of slots, and decode's y over several ranges", () => {
    const split = uploadExpertRanges(gpu.device, experts, [3, 1, 3]);
    // the middle range's buffers hold 1 slot: as 2 experts they are one short
    expect(() => prepare({ ranges: ranges(split, [0, 3], [3, 2], [5, 2]) })).toThrow(/ranges\[1\]\.gate_proj\.weight holds 128 bytes, needs 256/);
    const noScale = split.ranges.map((r, i) => (i === 2 ? { ...r, weights: { ...r.weights, down_proj: { weight: r.weights.down_proj.weight } } } : r));
    expect(() => prepare({ ranges: noScale })).toThrow(/ranges\[2\]\.down_proj\.weight_scale_inv is required for fp8 weights/);
    // decode over several ranges sums y per pair in moe_combine: its scratch needs y
    const unsplitDecode = createMoeExpertsScratch(gpu.device, shape, 'decode');
    expect(unsplitDecode.y).toBeUndefined();
    expect(() => prepare({ ranges: split.ranges, path: 'decode' }, unsplitDecode)).toThrow(/scratch\.y is required/);
    const one = uploadExpertRanges(gpu.device, experts, [7]);
    prepare({ ranges: one.ranges, path: 'decode' }, unsplitDecode).destroy(); // one range: no y
    const splitDecode = createMoeExpertsScratch(gpu.device, shape, 'decode', 'moe_experts', 3);
    prepare({ ranges: split.ranges, path: 'decode' }, splitDecode).destroy();
    expect(moeExpertsScratchBytes(shape, 'decode', 3).y).toBe(4 * 2 * 2 * 16);
    expect(moeExpertsScratchBytes(shape, 'decode').y).toBe(0);
    expect(moeExpertsScratchBytes(shape, 'grouped', 3)).toEqual(moeExpertsScratchBytes(shape, 'grouped'));
    for (const x of [split, one, unsplitDecode, splitDecode]) x.destroy();
  });

  it('keeps the unsplit dispatches: decode 2 (2 * ranges + 1 split), grouped 4 (2 * ranges + 2)', () => {
    const split = uploadExpertRanges(gpu.device, experts, [3, 1, 3]);
    const one = uploadExpertRanges(gpu.device, experts, [7]);
    const whole = uploadExperts(gpu.device, experts);
    const splitDecode = createMoeExpertsScratch(gpu.device, shape, 'decode', 'moe_experts', 3);
    const dispatches = (call: PreparedCall) => {
      let n = 0;
      call.encode({ setPipeline() {}, setBindGroup() {}, dispatchWorkgroups: () => n++ } as unknown as GPUComputePassEncoder);
      call.destroy();
      return n;
    };
    for (const [path, s, unsplit, three] of [['decode', splitDecode, 2, 7], ['grouped', scratch, 4, 8]] as const) {
      expect(dispatches(prepare({ weights: whole, path }, s)), path).toBe(unsplit);
      expect(dispatches(prepare({ ranges: one.ranges, path }, s)), path).toBe(unsplit);
      expect(dispatches(prepare({ ranges: split.ranges, path }, s)), path).toBe(three);
    }
    for (const x of [split, one, whole, splitDecode]) x.destroy();
  });
});
