// The experts call with its router and shared experts (src/model/ffn.ts's one MoE call) on the GPU
// (SwiftShader here), against the separate kernels it replaces, at odd shapes and both weight
// formats: moe_route's ids and weights bit for bit (the decode gate_up runs the same selection:
// random logits, ties, a token of NaN logits, DeepSeek-V2's softmax routing), and out bit for bit
// the f32 sum routed + shared of the experts call without them and the MLP (what the `add` pass
// computed), plus within 1e-5 of the float64 references. Decode (T = 1, 3: the shared experts as
// more rows of the two routed passes, or, at another inter width, as an MLP adding into out),
// grouped (T = 7) and a split expert stack (moe_route and the MLP as separate passes), and an
// adapter that binds only 8 storage buffers (the shared experts apart). The dispatches are
// counted: the fusions must happen. The passes that read each distinct expert once (expertReads
// per_expert, the MTP verify step's T = 2 and up to 4) against the same and against the per_pair
// passes, ids, weights and out bit for bit: random logits, rows that choose the same experts,
// disjoint ones, partly overlapping ones, ties and a token of NaN logits; with accumulate, bf16,
// W8A8's rounding of h, softmax routing and the subgroup selection; fewer bytes by the cost model.

import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { submitPass, type Encodable, type KernelContext } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { mlpRef, moeExpertsRef } from './moe_experts.ref.ts';
import { createMlp, createMoeExperts, createMoeExpertsScratch, MAX_UNION_PAIRS, moeExpertsCost, type ExpertWeightFormat, type MoeExperts, type MoeExpertsArgs, type MoePath } from './moe_experts.ts';
import { createMoeRoute } from './moe_route.ts';
import type { RouterConfig } from './moe_route.ref.ts';
import { randomExperts, uploadExpertRanges, uploadExperts } from '../testing/moe_experts_testing.ts';

let gpu: Gpu;
let ctx: KernelContext;
beforeAll(async () => {
  gpu = await testGpu();
  ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
});

interface Case {
  format: ExpertWeightFormat;
  d: number;
  I: number;
  router: RouterConfig;
}

const v3 = (E: number, G: number, KG: number, K: number): RouterConfig => ({ n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K, norm_topk_prob: true, routed_scaling_factor: 2.5 });

const CASES: Case[] = [
  { format: 'fp8', d: 200, I: 72, router: v3(12, 4, 2, 3) },
  { format: 'fp8', d: 203, I: 37, router: v3(10, 5, 3, 2) }, // rows inside words
  { format: 'bf16', d: 130, I: 66, router: v3(6, 1, 1, 3) }, // k % 4 == 2
  { format: 'fp8', d: 136, I: 40, router: { ...v3(8, 2, 1, 2), scoring_func: 'softmax', topk_method: 'group_limited_greedy' } }, // DeepSeek-V2
  { format: 'bf16', d: 97, I: 21, router: { ...v3(5, 1, 1, 2), scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: false } }, // V2-Lite, odd k
];

const nan = (n: number) => new Float32Array(n).fill(Number.NaN);

/** Counts the dispatches a call records, on a pass that records nothing. */
function dispatches(call: Encodable): number {
  return grids(call).length;
}

/** The workgroup grids of the dispatches a call records, in order. */
function grids(call: Encodable): number[][] {
  const seen: number[][] = [];
  const pass = { setPipeline() {}, setBindGroup() {}, dispatchWorkgroups: (...grid: number[]) => seen.push(grid) } as unknown as GPUComputePassEncoder;
  call.encode(pass);
  return seen;
}

/** The test GPU's context as an adapter that binds at most `max` storage buffers per stage sees it. */
function withStorageLimit(max: number): KernelContext {
  const { device } = gpu;
  const limits = {} as Record<string, number>;
  for (const key in device.limits) limits[key] = device.limits[key as keyof GPUSupportedLimits] as number;
  limits.maxStorageBuffersPerShaderStage = max;
  const limited = new Proxy(device, {
    get(target, prop) {
      if (prop === 'limits') return limits;
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { gpu: { ...gpu, device: limited }, pipelines: ctx.pipelines };
}

interface Run {
  kernel: MoeExperts;
  c: Case;
  tokens: number;
  /** The shared experts' inter width (default I: the down pass adds them). */
  sharedI?: number;
  /** Split the routed stack into expert ranges of these counts. */
  ranges?: number[];
  /** Logits to use (default random). */
  logits?: Float32Array;
  /** e_score_correction_bias to use (default random; zero with given logits). */
  bias?: Float32Array;
  /** The dispatches the call must record. */
  expectDispatches: number;
  /** out += the sum (out holds a residual stream first): the call must write the whole sum in one store. */
  accumulate?: boolean;
  /** A kernel whose call on the same inputs must give the same ids, weights and out bits (another variant of the passes). */
  twin?: MoeExperts;
  /** The separate kernels' numerics (default weight_only). */
  roundHidden?: boolean;
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

async function check({ kernel, c, tokens: T, sharedI = c.I, ranges, logits: given, bias: givenBias, expectDispatches, accumulate = false, twin, roundHidden = false }: Run): Promise<void> {
  const { device } = gpu;
  const { d, I, router } = c;
  const E = router.n_routed_experts;
  const K = router.num_experts_per_tok;
  const softmax = router.scoring_func === 'softmax';
  const what = `${c.format} T=${T} d=${d} I=${I} shared I=${sharedI} E=${E} K=${K}${softmax ? ' softmax' : ''}${ranges ? ` ranges ${ranges}` : ''}`;
  const next = rng(testSeed(`moe_experts fused ${what}`));
  const routedW = randomExperts(next, E, d, I, c.format);
  const sharedW = randomExperts(next, 1, d, sharedI, c.format);
  const x = randn(next, T * d);
  const residual = accumulate ? randn(next, T * d) : undefined;
  const logits = given ?? Float32Array.from(randn(next, T * E), (v) => 2 * v);
  const bias = softmax ? undefined : givenBias ?? (given ? new Float32Array(E) : Float32Array.from(randn(next, E), (v) => 0.1 * v)); // given logits: no bias, their ties stay ties
  const path: MoePath = T <= 4 ? 'decode' : 'grouped';
  const shape = { tokens: T, hidden_size: d, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: K };
  const scratch = createMoeExpertsScratch(device, shape, path, 'scratch', ranges?.length ?? 1);
  for (const b of [scratch.h, scratch.y]) if (b) device.queue.writeBuffer(b, 0, nan(b.size / 4));
  const stack = ranges ? uploadExpertRanges(device, routedW, ranges) : uploadExperts(device, routedW);
  const weights = 'ranges' in stack ? { ranges: stack.ranges } : { weights: stack };
  const shared = uploadExperts(device, sharedW);
  const bufs = {
    x: uploadBuffer(device, x, 'x'),
    logits: uploadBuffer(device, logits, 'logits'),
    bias: bias && uploadBuffer(device, bias, 'bias'),
    ids: uploadBuffer(device, new Uint32Array(T * K).fill(0xdeadbeef), 'topk_ids'),
    w: uploadBuffer(device, nan(T * K), 'topk_weights'),
    out: uploadBuffer(device, residual ?? nan(T * d), 'out'),
    sharedH: uploadBuffer(device, nan(T * sharedI), 'shared_h'),
    // the separate passes' buffers
    ids0: uploadBuffer(device, new Uint32Array(T * K), 'topk_ids0'),
    w0: uploadBuffer(device, new Float32Array(T * K), 'topk_weights0'),
    routedOut: uploadBuffer(device, nan(T * d), 'routed_out'),
    sharedOut: uploadBuffer(device, nan(T * d), 'shared_out'),
  };
  const args: MoeExpertsArgs = {
    ...shape, x: bufs.x, topkIds: bufs.ids, topkWeights: bufs.w, ...weights, scratch, out: bufs.out,
    router: { config: router, logits: bufs.logits, bias: bufs.bias },
    shared: { intermediate_size: sharedI, weights: shared, h: bufs.sharedH },
  };
  // accumulate (the residual stream as out) only where the down pass writes routed + shared in one store
  const onePass = expectDispatches === 2;
  expect(kernel.sumsInOnePass(args), `${what}: sums in one pass`).toBe(onePass);
  if (!onePass) expect(() => kernel.prepare({ ...args, accumulate: true }), what).toThrow(/accumulate needs the down pass/);
  const fused = kernel.prepare({ ...args, accumulate });
  expect(dispatches(fused), `${what}: dispatches`).toBe(expectDispatches);
  const route = createMoeRoute(ctx).prepare({ tokens: T, config: router, logits: bufs.logits, bias: bufs.bias, topkIds: bufs.ids0, topkWeights: bufs.w0 });
  const routed = createMoeExperts(ctx, { weights: c.format, roundHidden }).prepare({ ...shape, x: bufs.x, topkIds: bufs.ids0, topkWeights: bufs.w0, ...weights, scratch, out: bufs.routedOut });
  const mlp = createMlp(ctx, { weights: c.format, roundHidden }).prepare({ tokens: T, hidden_size: d, intermediate_size: sharedI, x: bufs.x, weights: shared, h: bufs.sharedH, out: bufs.sharedOut });
  // the twin on buffers of its own (its h poisoned alike: a NaN token's pairs read rows no pass writes)
  const twinScratch = twin && createMoeExpertsScratch(device, shape, path, 'twin_scratch', ranges?.length ?? 1);
  for (const b of [twinScratch?.h, twinScratch?.y]) if (b) device.queue.writeBuffer(b, 0, nan(b.size / 4));
  const twinBufs = twin && {
    ids: uploadBuffer(device, new Uint32Array(T * K).fill(0xdeadbeef), 'twin_topk_ids'),
    w: uploadBuffer(device, nan(T * K), 'twin_topk_weights'),
    out: uploadBuffer(device, residual ?? nan(T * d), 'twin_out'),
    sharedH: uploadBuffer(device, nan(T * sharedI), 'twin_shared_h'),
  };
  const twinCall = twin && twin.prepare({ ...args, topkIds: twinBufs!.ids, topkWeights: twinBufs!.w, out: twinBufs!.out, scratch: twinScratch!, shared: { ...args.shared!, h: twinBufs!.sharedH }, accumulate });
  device.pushErrorScope('validation');
  submitPass(device, fused);
  submitPass(device, route, routed, mlp);
  if (twinCall) submitPass(device, twinCall);
  expect((await device.popErrorScope())?.message, what).toBeUndefined();

  const ids = await readU32(device, bufs.ids, T * K);
  const ids0 = await readU32(device, bufs.ids0, T * K);
  expect(Array.from(ids), `${what}: topk_ids`).toEqual(Array.from(ids0));
  const w = await readF32(device, bufs.w, T * K);
  const w0 = await readF32(device, bufs.w0, T * K);
  expect(Array.from(new Uint32Array(w.buffer)), `${what}: topk_weights bits`).toEqual(Array.from(new Uint32Array(w0.buffer)));
  if (twinBufs) {
    expect(Array.from(await readU32(device, twinBufs.ids, T * K)), `${what}: the twin's topk_ids`).toEqual(Array.from(ids));
    expect(bits(await readF32(device, twinBufs.w, T * K)), `${what}: the twin's topk_weights bits`).toEqual(bits(w));
    const got = bits(await readF32(device, bufs.out, T * d));
    const other = bits(await readF32(device, twinBufs.out, T * d));
    const bad = got.findIndex((v, i) => v !== other[i]);
    expect(bad, `${what}: out[${bad}] bits ${got[bad]?.toString(16)}, the twin's ${other[bad]?.toString(16)}`).toBe(-1);
  }
  if (logits.every(Number.isFinite) && (bias ?? []).every(Number.isFinite)) {
    const got = await readF32(device, bufs.out, T * d);
    const routedOut = await readF32(device, bufs.routedOut, T * d);
    const sharedOut = await readF32(device, bufs.sharedOut, T * d);
    // official order: y + z, then (accumulate) added to the residual in one addition
    const sum = routedOut.map((y, i) => Math.fround(y + sharedOut[i])).map((v, i) => (residual ? Math.fround(residual[i] + v) : v));
    const bad = got.findIndex((v, i) => !Object.is(v, sum[i]));
    expect(bad, `${what}: out[${bad}] = ${got[bad]}, ${residual ? 'h + ' : ''}(routed + shared) = ${sum[bad]}`).toBe(-1);
    // W8A8: the separate kernels round h alike, the reference does not (moe_experts.test.ts checks the rounding)
    const routedRef = moeExpertsRef({ ...shape, topk: K, x, topkIds: ids0, topkWeights: w0, weights: routedW });
    const sharedRef = mlpRef({ tokens: T, hidden_size: d, moe_intermediate_size: sharedI, x, weights: sharedW });
    const err = relError(got, routedRef.map((y, i) => y + sharedRef[i] + (residual?.[i] ?? 0)));
    if (!roundHidden) expect(err.rel, `${what}: rel ${err.rel} at out[${err.worst}]`).toBeLessThan(1e-5);
  }
  for (const call of [fused, route, routed, mlp, twinCall]) call?.destroy();
  for (const b of [...Object.values(bufs), ...Object.values(twinBufs ?? {})]) b?.destroy();
  scratch.destroy();
  twinScratch?.destroy();
  stack.destroy();
  shared.destroy();
}

describe.each(CASES)('moe_experts with router and shared experts, $format, d=$d I=$I', (c) => {
  let kernel: MoeExperts;
  beforeAll(() => {
    kernel = createMoeExperts(ctx, { weights: c.format });
  });

  it('decode: routes in both passes, the shared experts as more rows of them (2 dispatches)', async () => {
    for (const tokens of [1, 3]) await check({ kernel, c, tokens, expectDispatches: 2 });
  });

  it('decode, accumulate: h += routed + shared in the down pass\'s one store (the residual stream as out)', async () => {
    for (const tokens of [1, 3]) await check({ kernel, c, tokens, expectDispatches: 2, accumulate: true });
  });

  it('decode: shared experts of another inter width run as an MLP adding into out', async () => {
    await check({ kernel, c, tokens: 2, sharedI: 2 * c.I, expectDispatches: 4 }); // routed gate_up, down; shared gate_up, down
  });

  it('grouped (prefill) and a split expert stack: moe_route first, the shared MLP adding into out', async () => {
    // route, group, gate_up, down, combine, shared gate_up, shared down
    await check({ kernel, c, tokens: 7, expectDispatches: 7 });
    // decode over 2 ranges: route, gate_up x 2, down x 2, combine, shared gate_up, shared down
    const E = c.router.n_routed_experts;
    await check({ kernel, c, tokens: 2, ranges: [E - 3, 3], expectDispatches: 8 });
  });
});

describe('moe_experts routing in the gate_up: edge cases', () => {
  const c = CASES[0];
  const E = c.router.n_routed_experts;

  it('breaks ties as moe_route does and marks a token of NaN logits the same way', async () => {
    const kernel = createMoeExperts(ctx);
    const logits = new Float32Array(3 * E); // token 0: all tied
    logits.fill(Number.NaN, E, 2 * E); // token 1: NaN
    for (let e = 0; e < E; e++) logits[2 * E + e] = e % 3; // token 2: ties in groups
    await check({ kernel, c, tokens: 3, logits, expectDispatches: 2 });
  });

  it('runs the shared experts apart on an adapter that binds 8 storage buffers (fp8 and a bias need 12)', async () => {
    const limited = withStorageLimit(8);
    await check({ kernel: createMoeExperts(limited), c, tokens: 2, expectDispatches: 4 });
    // bf16 weights need 8: all in two passes still
    await check({ kernel: createMoeExperts(limited, { weights: 'bf16' }), c: CASES[2], tokens: 2, expectDispatches: 2 });
  });

  it("refuses a router whose config is not the call's, and noaux_tc routing without its bias", () => {
    const { device } = gpu;
    const b = () => uploadBuffer(device, new Float32Array(4096), 'b');
    const shape = { tokens: 1, hidden_size: 16, moe_intermediate_size: 8, n_routed_experts: 4, num_experts_per_tok: 2 };
    const weights = uploadExperts(device, randomExperts(rng(3), 4, 16, 8));
    const scratch = createMoeExpertsScratch(device, shape, 'decode');
    const bufs = { x: b(), topkIds: b(), topkWeights: b(), out: b(), logits: b() };
    const kernel = createMoeExperts(ctx);
    const call = (router: RouterConfig, bias?: GPUBuffer) => () =>
      kernel.prepare({ ...shape, ...bufs, weights, scratch, router: { config: router, logits: bufs.logits, bias } });
    expect(call(v3(8, 2, 1, 2), bufs.x)).toThrow(ArgumentError);
    expect(call(v3(8, 2, 1, 2), bufs.x)).toThrow(/the router's config has 8 experts, 2 per token; the call has 4, 2/);
    expect(call(v3(4, 2, 1, 2))).toThrow(/noaux_tc routing needs e_score_correction_bias/);
    for (const x of [...Object.values(bufs), weights, scratch]) x.destroy();
  });
});

// The verify step's passes (expertReads per_expert): each expert the T tokens chose read once.
describe.each(CASES)('moe_experts decode reading each expert once (per_expert), $format, d=$d I=$I', (c) => {
  let kernel: MoeExperts;
  let perPair: MoeExperts;
  beforeAll(() => {
    kernel = createMoeExperts(ctx, { weights: c.format, expertReads: 'per_expert' });
    perPair = createMoeExperts(ctx, { weights: c.format });
  });

  it('gives the separate kernels\' and the per_pair passes\' ids, weights and out bits at T = 2, 3, 4 (2 dispatches)', async () => {
    for (const tokens of [2, 3, 4]) await check({ kernel, c, tokens, expectDispatches: 2, twin: perPair });
  });

  it('accumulate: h += routed + shared in one store, as the per_pair passes', async () => {
    for (const tokens of [2, 4]) await check({ kernel, c, tokens, expectDispatches: 2, accumulate: true, twin: perPair });
  });

  it('shared experts of another inter width as an MLP after the routed passes', async () => {
    await check({ kernel, c, tokens: 3, sharedI: 2 * c.I, expectDispatches: 4, twin: perPair });
  });
});

describe('moe_experts per_expert: which experts the tokens share, ties, NaN', () => {
  const c = CASES[0]; // E = 12 in 4 groups of 3, 2 groups kept, K = 3
  const E = c.router.n_routed_experts;
  const row = (f: (e: number) => number) => Float32Array.from({ length: E }, (_, e) => f(e));
  const rows = (...r: Float32Array[]) => {
    const out = new Float32Array(r.length * E);
    r.forEach((v, t) => out.set(v, t * E));
    return out;
  };
  const next = rng(testSeed('moe_experts per_expert logits'));
  const random = () => row(() => 2 * (next() - 0.5));
  let kernel: MoeExperts;
  let perPair: MoeExperts;
  beforeAll(() => {
    kernel = createMoeExperts(ctx, { expertReads: 'per_expert' });
    perPair = createMoeExperts(ctx);
  });

  it('rows that choose exactly the same experts (the whole union read once)', async () => {
    const a = random();
    for (const logits of [rows(a, a), rows(a, a, a, a)]) await check({ kernel, c, tokens: logits.length / E, logits, expectDispatches: 2, twin: perPair });
  });

  it('rows that choose disjoint experts', async () => {
    // token 0 prefers groups 0 and 1 (experts 0-5), token 1 groups 2 and 3, token 2 again 0 and 1 but other experts
    const low = row((e) => (e < 6 ? 1 + e / 10 : -1));
    const high = row((e) => (e >= 6 ? 1 + e / 10 : -1));
    const lowOther = row((e) => (e < 6 ? 1 - e / 10 : -1));
    await check({ kernel, c, tokens: 2, logits: rows(low, high), expectDispatches: 2, twin: perPair });
    await check({ kernel, c, tokens: 3, logits: rows(low, high, lowOther), expectDispatches: 2, twin: perPair });
  });

  it('rows that share some experts, in different k order', async () => {
    // both keep groups 0 and 1; token 1 ranks them in reverse and swaps one expert for another
    const a = row((e) => (e < 6 ? 1 + e / 10 : -1));
    const b = row((e) => (e < 6 ? 2 - e / 10 : -1));
    const partial = row((e) => (e === 5 ? 3 : e === 1 ? 2.5 : e === 9 ? 2.7 : e === 10 ? 2.6 : -1));
    await check({ kernel, c, tokens: 2, logits: rows(a, b), expectDispatches: 2, twin: perPair });
    await check({ kernel, c, tokens: 4, logits: rows(a, b, partial, a), expectDispatches: 2, twin: perPair });
  });

  it('ties and a token of NaN logits (its NONE picks read as the per_pair passes read them)', async () => {
    const logits = rows(new Float32Array(E), row(() => Number.NaN), row((e) => e % 3), new Float32Array(E));
    await check({ kernel, c, tokens: 4, logits, expectDispatches: 2, twin: perPair });
    await check({ kernel, c, tokens: 2, logits: logits.slice(E, 3 * E), expectDispatches: 2, twin: perPair, accumulate: true });
  });

  it('NaN scores (a NaN bias): as the first expert of a kept group, and after it', async () => {
    // SwiftShader's exp does not carry a NaN logit into a NaN score; a NaN bias does (c = s + bias)
    const bias = new Float32Array(E);
    bias[0] = Number.NaN; // expert 0: first of group 0; a token keeping group 0 picks it alone
    bias[4] = Number.NaN; // expert 4: inside group 1
    const keeps0 = row((e) => (e < 6 ? 1 + e / 10 : -1)); // groups 0 and 1
    const keeps1 = row((e) => (e >= 3 && e < 9 ? 1 + e / 10 : -1)); // groups 1 and 2
    for (const logits of [rows(keeps0, keeps1), rows(keeps1, keeps0, random(), keeps0), rows(keeps0, keeps0)]) {
      await check({ kernel, c, tokens: logits.length / E, logits, bias, expectDispatches: 2, twin: perPair });
    }
    // expert 3 NaN, first of group 1: the token keeping groups 1, 2 picks it alone, the one keeping 0, 1 never
    const bias3 = new Float32Array(E);
    bias3[3] = Number.NaN;
    await check({ kernel, c, tokens: 2, logits: rows(keeps1, keeps0), bias: bias3, expectDispatches: 2, twin: perPair });
  });

  it("W8A8's rounding of h (the shared experts apart) and the bf16 path", async () => {
    const w8a8 = { ...c, I: 128 }; // act_quant's groups of 128
    const round = (expertReads: 'per_pair' | 'per_expert') => createMoeExperts(ctx, { roundHidden: true, expertReads });
    // routed gate_up, act_quant, down; shared gate_up, act_quant, down
    for (const tokens of [2, 3]) await check({ kernel: round('per_expert'), c: w8a8, tokens, expectDispatches: 6, twin: round('per_pair'), roundHidden: true });
    const bf16 = CASES[2];
    await check({ kernel: createMoeExperts(ctx, { weights: 'bf16', expertReads: 'per_expert' }), c: bf16, tokens: 2, logits: rows(...[0, 1].map(() => Float32Array.from({ length: bf16.router.n_routed_experts }, () => next()))), expectDispatches: 2 });
  });

  /** One fp8 expert's weight bytes by the cost model: a 1-token, 1-expert call less its activations. */
  const expertBytes = (d: number, I: number) => moeExpertsCost({ tokens: 1, hidden_size: d, moe_intermediate_size: I, n_routed_experts: 1, num_experts_per_tok: 1 }, 'decode').bytes - 4 * (2 * d + 2 + 2 * I);

  it('reads fewer bytes by the cost model, in the same 2 dispatches; one token, and more pairs than it holds, read per pair', () => {
    const { device } = gpu;
    const b = () => uploadBuffer(device, new Float32Array(1 << 14), 'b');
    const K = c.router.num_experts_per_tok;
    const bufs = { x: b(), topkIds: b(), topkWeights: b(), out: b(), logits: b(), bias: b(), h: b() };
    const weights = uploadExperts(device, randomExperts(rng(5), E, c.d, c.I));
    const sharedW = uploadExperts(device, randomExperts(rng(6), 1, c.d, c.I));
    const bytes = (k: MoeExperts, tokens: number) => {
      const shape = { tokens, hidden_size: c.d, moe_intermediate_size: c.I, n_routed_experts: E, num_experts_per_tok: K };
      const scratch = createMoeExpertsScratch(device, shape, 'decode');
      const call = k.prepare({
        ...shape, ...bufs, weights, scratch, router: { config: c.router, logits: bufs.logits, bias: bufs.bias },
        shared: { intermediate_size: c.I, weights: sharedW, h: bufs.h },
      });
      const result = { bytes: call.bytes, dispatches: dispatches(call), rows: grids(call).map((g) => g[1] ?? 1) };
      call.destroy();
      scratch.destroy();
      return result;
    };
    for (const tokens of [2, 3, 4]) {
      const once = bytes(kernel, tokens);
      const twice = bytes(perPair, tokens);
      expect(once.dispatches, `T=${tokens}`).toBe(2);
      expect(twice.dispatches, `T=${tokens}`).toBe(2);
      // gate_up: a row per pair and one shared row (per_pair: T); down: one row for all tokens (per_pair: T)
      expect(once.rows, `T=${tokens}`).toEqual([tokens * K + 1, 1]);
      expect(twice.rows, `T=${tokens}`).toEqual([tokens * K + tokens, tokens]);
      // the shared experts once, not T times (the routed ones: T * K <= E, the bound without overlap)
      expect(twice.bytes - once.bytes, `T=${tokens}`).toBe((tokens - 1) * expertBytes(c.d, c.I));
    }
    expect(bytes(kernel, 1)).toEqual(bytes(perPair, 1));
    expect(kernel.reads({ tokens: 1, hidden_size: c.d, moe_intermediate_size: c.I, n_routed_experts: E, num_experts_per_tok: K })).toBe('per_pair');
    expect(kernel.reads({ tokens: 2, hidden_size: c.d, moe_intermediate_size: c.I, n_routed_experts: E, num_experts_per_tok: K })).toBe('per_expert');
    expect(kernel.reads({ tokens: 4, hidden_size: c.d, moe_intermediate_size: c.I, n_routed_experts: 64, num_experts_per_tok: MAX_UNION_PAIRS / 4 + 1 })).toBe('per_pair');
    expect(perPair.reads({ tokens: 2, hidden_size: c.d, moe_intermediate_size: c.I, n_routed_experts: E, num_experts_per_tok: K })).toBe('per_pair');
    // the model: K (1 + (T - 1)(1 - o)) distinct experts of the T tokens' T * K pairs
    const v3 = { tokens: 2, hidden_size: 7168, moe_intermediate_size: 2048, n_routed_experts: 256, num_experts_per_tok: 8 };
    const expert = expertBytes(7168, 2048);
    const at = (overlap: number, reads: 'per_pair' | 'per_expert' = 'per_expert') => moeExpertsCost(v3, 'decode', 'fp8', { reads, overlap }).bytes;
    expect(at(0)).toBe(at(0, 'per_pair'));
    expect(at(0.4, 'per_pair')).toBe(at(0, 'per_pair'));
    expect(at(0) - at(0.4)).toBeCloseTo(0.4 * 8 * expert, -1);
    expect(at(0) - at(1)).toBeCloseTo(8 * expert, -1);
    for (const x of [...Object.values(bufs), weights, sharedW]) x.destroy();
  });

  it('refuses an unknown expertReads', () => {
    expect(() => createMoeExperts(ctx, { expertReads: 'twice' as 'per_pair' })).toThrow(ArgumentError);
    expect(() => createMoeExperts(ctx, { expertReads: 'twice' as 'per_pair' })).toThrow(/"twice" is not a way to read the experts; use one of per_pair, per_expert/);
  });
});

const hasSubgroups = (await testGpu()).device.features.has('subgroups');
describe('moe_experts per_expert with the subgroup selection', () => {
  for (const c of [CASES[0], CASES[3], CASES[4]]) {
    it.skipIf(!hasSubgroups)(`gives the thread per_pair passes' bits (${c.format} d=${c.d} E=${c.router.n_routed_experts}; needs the device's 'subgroups' feature)`, async () => {
      const perPair = createMoeExperts(ctx, { weights: c.format });
      for (const workgroupSize of [64, 6]) {
        const kernel = createMoeExperts(ctx, { weights: c.format, expertReads: 'per_expert', routeReduce: 'subgroup', workgroupSize });
        for (const tokens of [2, 4]) await check({ kernel, c, tokens, expectDispatches: 2, twin: perPair });
      }
    });
  }
});
