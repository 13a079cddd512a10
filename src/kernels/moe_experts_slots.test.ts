// The routed experts over a GPU expert cache (prepareSlots: S slots, each pass over the experts
// resident in it, then finish) against the resident call on the whole stack (prepare), bit for
// bit: fp8, bf16 and w8a8 (roundHidden) at odd shapes (rows inside words, odd k), decode (T = 1, 3)
// and grouped (T = 9), at S = 1 (every expert a pass of its own), 2 and E - 1 (two passes when
// every expert is chosen). Each pass uploads its experts into slots in scrambled order with
// queue.writeBuffer from the CPU stacks, as src/model/expert_offload.ts does, and is submitted
// alone; the slots start as NaN weights and out, h and y as NaN, so a pair run in the wrong pass,
// on the wrong slot or not at all shows. Also: the shared experts (written first, the routed sum added by finish), a pair that no
// pass covers (its y stays unwritten, only its token changes), the dispatch counts and the
// ArgumentErrors.

import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass, type KernelContext, type PreparedCall } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import type { ExpertWeights, StackedExpertWeight } from './moe_experts.ref.ts';
import { createMoeExperts, createMoeExpertsScratch, type ExpertProjection, type ExpertWeightFormat, type MlpWeights, type MoeExperts, type MoePath, type SharedExperts } from './moe_experts.ts';
import { randomExperts, randomRouting, runChecked, sliceStack, uploadExperts } from '../testing/moe_experts_testing.ts';

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
const PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj'] as const;

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
  { kernel: 'bf16', hidden_size: 201, moe_intermediate_size: 37, n_routed_experts: 7, num_experts_per_tok: 3 }, // odd k
  { kernel: 'w8a8', hidden_size: 200, moe_intermediate_size: 256, n_routed_experts: 7, num_experts_per_tok: 3 }, // act_quant: moe_inter of 128s
];

const TOKENS: Record<MoePath, number[]> = { decode: [1, 3], grouped: [9] };

const formatOf = (c: Case): ExpertWeightFormat => (c.kernel === 'bf16' ? 'bf16' : 'fp8');

/** A random permutation of `items` (Fisher-Yates). */
function shuffle<T>(next: () => number, items: readonly T[]): T[] {
  const a = items.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/**
 * The router's shape of routing with expert HOT chosen by every token (rows past one tile of 4 at
 * T = 9), redrawn until every expert is chosen when the pairs allow it: S = E - 1 then takes two passes.
 */
function routing(next: () => number, tokens: number, K: number, E: number): Uint32Array {
  for (;;) {
    const ids = randomRouting(next, tokens, K, E, HOT, []);
    if (tokens * (K - 1) < E - 1 || new Set(ids).size === E) return ids;
  }
}

/** One pass over the cache: the experts to upload (slot, expert), then every pair's slot id. */
interface Pass {
  uploads: [slot: number, expert: number][];
  slotIds: Uint32Array<ArrayBuffer>;
}

/**
 * The passes of a step, as ExpertCache.passes makes them but scrambled: the chosen experts in
 * random order, S per pass, each in a random slot; a pair whose expert is in another pass gets
 * S, a larger id or 0xffffffff (all mean "not resident in this pass").
 */
function planPasses(next: () => number, ids: Uint32Array, E: number, S: number): Pass[] {
  const order = shuffle(next, [...new Set(ids)]);
  const absent = [S, S + 1 + Math.floor(next() * E), 0xffffffff];
  const passes: Pass[] = [];
  for (let first = 0; first < order.length; first += S) {
    const batch = order.slice(first, first + S);
    const slots = shuffle(next, Array.from({ length: S }, (_, s) => s));
    const slotOf = new Map(batch.map((e, i) => [e, slots[i]]));
    passes.push({ uploads: batch.map((e) => [slotOf.get(e)!, e]), slotIds: Uint32Array.from(ids, (e, pair) => slotOf.get(e) ?? absent[pair % absent.length]) });
  }
  return passes;
}

/**
 * A cache of S slots laid out as a stack of S experts (one buffer per projection and scale), NaN
 * until written (the e4m3 code 0x7F, bf16 0xFFFF, NaN scales): `upload` copies an expert's slot
 * (and scales) from the CPU stacks, as ExpertCache does.
 */
function createCache(device: GPUDevice, stacks: ExpertWeights, E: number, S: number): { weights: MlpWeights; upload(slot: number, expert: number): void; destroy(): void } {
  const buffers: GPUBuffer[] = [];
  const make = (bytes: ArrayBufferView, label: string) => {
    const b = uploadBuffer(device, bytes, label);
    buffers.push(b);
    return b;
  };
  const projection = (name: string, s: StackedExpertWeight): ExpertProjection => {
    const slot = sliceStack(s, E, 0, 1); // one expert's bytes (and scales), padding included
    return {
      weight: make(new Uint8Array(S * slot.bytes.length).fill(slot.format === 'fp8' ? 0x7f : 0xff), `cache.${name}.weight`),
      weight_scale_inv: slot.format === 'fp8' ? make(nan(S * slot.scale.length), `cache.${name}.weight_scale_inv`) : undefined,
    };
  };
  const weights = { gate_proj: projection('gate_proj', stacks.gate_proj), up_proj: projection('up_proj', stacks.up_proj), down_proj: projection('down_proj', stacks.down_proj) };
  return {
    weights,
    upload(slot, expert) {
      for (const p of PROJECTIONS) {
        const s = stacks[p];
        const slotBytes = s.bytes.length / E;
        device.queue.writeBuffer(weights[p].weight, slot * slotBytes, s.bytes as Uint8Array<ArrayBuffer>, expert * slotBytes, slotBytes);
        if (s.format === 'fp8') {
          const n = s.scale.length / E;
          device.queue.writeBuffer(weights[p].weight_scale_inv!, 4 * slot * n, s.scale as Float32Array<ArrayBuffer>, expert * n, n); // offset in bytes, data in elements
        }
      }
    },
    destroy() {
      for (const b of buffers) b.destroy();
    },
  };
}

function expectSameBits(got: Float32Array, want: Float32Array, what: string): void {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const bad = a.findIndex((v, i) => v !== b[i]);
  expect(bad, `${what}: [${bad}] = ${got[bad]}, resident ${want[bad]}`).toBe(-1);
}

interface Inputs {
  x: GPUBuffer;
  topkIds: GPUBuffer;
  topkWeights: GPUBuffer;
}

type Shape = Case & { tokens: number };

/** Scratch for both calls (expertOffsets for E >= S experts, y as over several ranges), h and y NaN. */
function poisonedScratch(shape: Shape, path: MoePath) {
  const scratch = createMoeExpertsScratch(gpu.device, shape, path, 'moe_experts', 2);
  for (const b of [scratch.h, scratch.y]) if (b) gpu.device.queue.writeBuffer(b, 0, nan(b.size / 4));
  return scratch;
}

/** The resident call's out: every expert in one stack, out and scratch NaN beforehand. */
async function runResident(shape: Shape, path: MoePath, inputs: Inputs, weights: MlpWeights, shared?: SharedExperts): Promise<Float32Array> {
  const { device } = gpu;
  const { tokens: T, hidden_size: d } = shape;
  const scratch = poisonedScratch(shape, path);
  const out = uploadBuffer(device, nan(T * d), 'out');
  if (shared) device.queue.writeBuffer(shared.h, 0, nan(shared.h.size / 4));
  const call = kernels[shape.kernel].prepare({ ...shape, path, ...inputs, weights, shared, scratch, out });
  const got = await runChecked(device, call, out, T * d);
  for (const x of [call, scratch, out]) x.destroy();
  return got;
}

/**
 * The cache call's out (and y): the shared experts first (they need no routing), then each pass's
 * uploads, its slot ids and the pass in a submit of its own; then finish. out, scratch and the
 * shared experts' h NaN beforehand.
 */
async function runSlots(shape: Shape, path: MoePath, inputs: Inputs, stacks: ExpertWeights, S: number, passes: readonly Pass[], shared?: SharedExperts): Promise<{ out: Float32Array; y: Float32Array }> {
  const { device } = gpu;
  const { tokens: T, hidden_size: d, n_routed_experts: E, num_experts_per_tok: K } = shape;
  const cache = createCache(device, stacks, E, S);
  const scratch = poisonedScratch(shape, path);
  const out = uploadBuffer(device, nan(T * d), 'out');
  if (shared) device.queue.writeBuffer(shared.h, 0, nan(shared.h.size / 4));
  const slotIds = uploadBuffer(device, new Uint32Array(T * K), 'slot_ids');
  const { shared: sharedCall, pass, finish } = kernels[shape.kernel].prepareSlots({ ...shape, path, slots: S, x: inputs.x, slotIds, topkWeights: inputs.topkWeights, weights: cache.weights, shared, scratch, out });
  expect(sharedCall !== undefined).toBe(shared !== undefined);
  device.pushErrorScope('validation');
  if (sharedCall) submitPass(device, sharedCall);
  for (const p of passes) {
    for (const [slot, expert] of p.uploads) cache.upload(slot, expert);
    device.queue.writeBuffer(slotIds, 0, p.slotIds);
    submitPass(device, pass);
  }
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const got = { out: await runChecked(device, finish, out, T * d), y: await readF32(device, scratch.y!, T * K * d) };
  for (const x of [sharedCall, pass, finish, cache, scratch, out, slotIds]) x?.destroy();
  return got;
}

function randomInputs(next: () => number, tokens: number, d: number, K: number, ids: Uint32Array): Inputs {
  const { device } = gpu;
  return {
    x: uploadBuffer(device, randn(next, tokens * d), 'x'),
    topkIds: uploadBuffer(device, ids, 'topk_ids'),
    topkWeights: uploadBuffer(device, Float32Array.from({ length: tokens * K }, () => 0.1 + 2 * next()), 'topk_weights'),
  };
}

/** The shared experts: an MLP of moe_intermediate_size on a one-expert stack of their own, h [tokens, I]. */
function randomShared(next: () => number, tokens: number, d: number, I: number) {
  const weights = uploadExperts(gpu.device, randomExperts(next, 1, d, I));
  const h = uploadBuffer(gpu.device, nan(tokens * I), 'shared.h');
  return {
    shared: { intermediate_size: I, weights, h } satisfies SharedExperts,
    destroy() {
      weights.destroy();
      h.destroy();
    },
  };
}

describe.each(['decode', 'grouped'] as const)('moe_experts over an expert cache, %s path', (path) => {
  it.each(CASES)('equals the resident call bit for bit ($kernel, d=$hidden_size, moe_inter=$moe_intermediate_size, E=$n_routed_experts, K=$num_experts_per_tok)', async (c) => {
    const { hidden_size: d, n_routed_experts: E, num_experts_per_tok: K } = c;
    const next = rng(testSeed(`moe_experts slots ${path} ${JSON.stringify(c)}`));
    const stacks = randomExperts(next, E, d, c.moe_intermediate_size, formatOf(c));
    const whole = uploadExperts(gpu.device, stacks);
    for (const tokens of TOKENS[path]) {
      const ids = routing(next, tokens, K, E);
      const inputs = randomInputs(next, tokens, d, K, ids);
      const shape = { ...c, tokens };
      const want = await runResident(shape, path, inputs, whole);
      const bad = want.findIndex((v) => !Number.isFinite(v));
      expect(bad, `resident out[${bad}] = ${want[bad]}`).toBe(-1);
      for (const S of [1, 2, E - 1]) {
        const passes = planPasses(next, ids, E, S);
        expect(passes.length).toBe(Math.ceil(new Set(ids).size / S));
        const got = await runSlots(shape, path, inputs, stacks, S, passes);
        expectSameBits(got.out, want, `${c.kernel} ${path} T=${tokens} S=${S} (${passes.length} passes) out`);
      }
      for (const b of Object.values(inputs)) b.destroy();
    }
    whole.destroy();
  });

  it('adds the shared experts as the resident call does, bit for bit (fp8, S = 2; they are written first, the routed sum added by finish)', async () => {
    const c = CASES[0];
    const { hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K } = c;
    const tokens = path === 'decode' ? 3 : 9;
    const next = rng(testSeed(`moe_experts slots shared ${path}`));
    const stacks = randomExperts(next, E, d, I);
    const whole = uploadExperts(gpu.device, stacks);
    const { shared, destroy } = randomShared(next, tokens, d, I);
    const ids = routing(next, tokens, K, E);
    const inputs = randomInputs(next, tokens, d, K, ids);
    const shape = { ...c, tokens };
    const want = await runResident(shape, path, inputs, whole, shared);
    const routedOnly = await runResident(shape, path, inputs, whole);
    expect(want.every(Number.isFinite)).toBe(true);
    expect(want.some((v, i) => v !== routedOnly[i]), 'the shared experts change out').toBe(true);
    const got = await runSlots(shape, path, inputs, stacks, 2, planPasses(next, ids, E, 2), shared);
    expectSameBits(got.out, want, `${path} T=${tokens} with shared experts out`);
    for (const x of [...Object.values(inputs), whole]) x.destroy();
    destroy();
  });

  it('leaves out a pair whose slot id is past the slots in every pass: its y unwritten, only its token changed', async () => {
    const c = CASES[0];
    const { hidden_size: d, n_routed_experts: E, num_experts_per_tok: K } = c;
    const tokens = path === 'decode' ? 3 : 9;
    const S = 2;
    const next = rng(testSeed(`moe_experts slots dropped ${path}`));
    const stacks = randomExperts(next, E, d, c.moe_intermediate_size);
    const whole = uploadExperts(gpu.device, stacks);
    const ids = routing(next, tokens, K, E);
    const inputs = randomInputs(next, tokens, d, K, ids);
    // the dropped pair chose HOT, which other tokens' pairs make resident: the skip is per pair
    const t = Math.floor(next() * tokens);
    const dropped = t * K + ids.subarray(t * K, (t + 1) * K).indexOf(HOT);
    const passes = planPasses(next, ids, E, S);
    for (const p of passes) p.slotIds[dropped] = S;
    const shape = { ...c, tokens };
    const want = await runResident(shape, path, inputs, whole);
    const got = await runSlots(shape, path, inputs, stacks, S, passes);
    for (let pair = 0; pair < tokens * K; pair++) {
      const y = got.y.subarray(pair * d, (pair + 1) * d);
      if (pair === dropped) expect(y.every(Number.isNaN), `y of the dropped pair ${pair} stays NaN`).toBe(true);
      else expect(y.every(Number.isFinite), `y of pair ${pair} is written`).toBe(true);
    }
    for (let u = 0; u < tokens; u++) {
      const row = (v: Float32Array) => v.subarray(u * d, (u + 1) * d);
      // finish sums every pair's y: the dropped one's NaN reaches its token only
      if (u === t) expect(row(got.out).every(Number.isNaN), `token ${u}, whose pair no pass ran`).toBe(true);
      else expectSameBits(row(got.out), row(want), `token ${u}`);
    }
    for (const x of [...Object.values(inputs), whole]) x.destroy();
  });
});

describe('moe_experts expert cache arguments', () => {
  const shape = { tokens: 2, hidden_size: 16, moe_intermediate_size: 8, num_experts_per_tok: 2 };
  const S = 3;
  let stacks: ExpertWeights;
  beforeAll(() => {
    stacks = randomExperts(rng(3), S, 16, 8);
  });
  const b = (n: number) => uploadBuffer(gpu.device, new Float32Array(n), 'b');

  it('checks slotIds and the cache buffers for the slots', () => {
    const cache = uploadExperts(gpu.device, stacks);
    const scratch = createMoeExpertsScratch(gpu.device, { ...shape, n_routed_experts: S }, 'grouped');
    const bufs = { x: b(32), topkWeights: b(4), out: b(32) };
    const slotIds = { ok: b(4), short: b(3) };
    const prepare = (a: { slotIds: GPUBuffer; slots?: number }) => kernels.fp8.prepareSlots({ ...shape, ...bufs, slots: S, weights: cache, scratch, ...a });
    const { pass, finish } = prepare({ slotIds: slotIds.ok });
    pass.destroy();
    finish.destroy();
    expect(() => prepare({ slotIds: slotIds.short })).toThrow(ArgumentError);
    expect(() => prepare({ slotIds: slotIds.short })).toThrow(/moe_experts: slotIds holds 12 bytes, needs 16/);
    // the cache holds 3 slots of 128 bytes: a fourth is past its buffers
    expect(() => prepare({ slotIds: slotIds.ok, slots: S + 1 })).toThrow(/slots\.gate_proj\.weight holds 384 bytes, needs 512/);
    for (const x of [cache, scratch, ...Object.values(bufs), ...Object.values(slotIds)]) x.destroy();
  });

  it('dispatches as one range: decode 2 + finish 1, grouped 3 + finish 1; the shared experts 2 in a call of their own', () => {
    const cache = uploadExperts(gpu.device, stacks);
    const dispatches = (call: PreparedCall) => {
      let n = 0;
      call.encode({ setPipeline() {}, setBindGroup() {}, dispatchWorkgroups: () => n++ } as unknown as GPUComputePassEncoder);
      call.destroy();
      return n;
    };
    const sh = randomShared(rng(4), shape.tokens, 16, 8);
    const bufs = { x: b(32), slotIds: b(4), topkWeights: b(4), out: b(32) };
    for (const [path, pass] of [['decode', 2], ['grouped', 3]] as const) {
      const scratch = createMoeExpertsScratch(gpu.device, { ...shape, n_routed_experts: S }, path, 'moe_experts', 2);
      for (const shared of [undefined, sh.shared]) {
        const calls = kernels.fp8.prepareSlots({ ...shape, ...bufs, path, slots: S, weights: cache, scratch, shared });
        expect(dispatches(calls.pass), `${path} pass`).toBe(pass);
        expect(dispatches(calls.finish), `${path} finish`).toBe(1);
        expect(calls.shared ? dispatches(calls.shared) : 0, `${path} shared experts`).toBe(shared ? 2 : 0);
      }
      scratch.destroy();
    }
    for (const x of [cache, sh, ...Object.values(bufs)]) x.destroy();
  });
});
