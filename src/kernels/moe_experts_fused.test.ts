// The experts call with its router and shared experts (src/model/ffn.ts's one MoE call) on the GPU
// (SwiftShader here), against the separate kernels it replaces, at odd shapes and both weight
// formats: moe_route's ids and weights bit for bit (the decode gate_up runs the same selection:
// random logits, ties, a token of NaN logits, DeepSeek-V2's softmax routing), and out bit for bit
// the f32 sum routed + shared of the experts call without them and the MLP (what the `add` pass
// computed), plus within 1e-5 of the float64 references. Decode (T = 1, 3: the shared experts as
// more rows of the two routed passes, or, at another inter width, as an MLP adding into out),
// grouped (T = 7) and a split expert stack (moe_route and the MLP as separate passes), and an
// adapter that binds only 8 storage buffers (the shared experts apart). The dispatches are
// counted: the fusions must happen.

import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, relError, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { submitPass, type Encodable, type KernelContext } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { mlpRef, moeExpertsRef } from './moe_experts.ref.ts';
import { createMlp, createMoeExperts, createMoeExpertsScratch, type ExpertWeightFormat, type MoeExperts, type MoeExpertsArgs, type MoePath } from './moe_experts.ts';
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
  let n = 0;
  const pass = { setPipeline() {}, setBindGroup() {}, dispatchWorkgroups: () => n++ } as unknown as GPUComputePassEncoder;
  call.encode(pass);
  return n;
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
  /** The dispatches the call must record. */
  expectDispatches: number;
  /** out += the sum (out holds a residual stream first): the call must write the whole sum in one store. */
  accumulate?: boolean;
}

async function check({ kernel, c, tokens: T, sharedI = c.I, ranges, logits: given, expectDispatches, accumulate = false }: Run): Promise<void> {
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
  const bias = softmax ? undefined : given ? new Float32Array(E) : Float32Array.from(randn(next, E), (v) => 0.1 * v); // given logits: no bias, their ties stay ties
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
  const routed = createMoeExperts(ctx, { weights: c.format }).prepare({ ...shape, x: bufs.x, topkIds: bufs.ids0, topkWeights: bufs.w0, ...weights, scratch, out: bufs.routedOut });
  const mlp = createMlp(ctx, { weights: c.format }).prepare({ tokens: T, hidden_size: d, intermediate_size: sharedI, x: bufs.x, weights: shared, h: bufs.sharedH, out: bufs.sharedOut });
  device.pushErrorScope('validation');
  submitPass(device, fused);
  submitPass(device, route, routed, mlp);
  expect((await device.popErrorScope())?.message, what).toBeUndefined();

  const ids = await readU32(device, bufs.ids, T * K);
  const ids0 = await readU32(device, bufs.ids0, T * K);
  expect(Array.from(ids), `${what}: topk_ids`).toEqual(Array.from(ids0));
  const w = await readF32(device, bufs.w, T * K);
  const w0 = await readF32(device, bufs.w0, T * K);
  expect(Array.from(new Uint32Array(w.buffer)), `${what}: topk_weights bits`).toEqual(Array.from(new Uint32Array(w0.buffer)));
  if (given === undefined) {
    const got = await readF32(device, bufs.out, T * d);
    const routedOut = await readF32(device, bufs.routedOut, T * d);
    const sharedOut = await readF32(device, bufs.sharedOut, T * d);
    // official order: y + z, then (accumulate) added to the residual in one addition
    const sum = routedOut.map((y, i) => Math.fround(y + sharedOut[i])).map((v, i) => (residual ? Math.fround(residual[i] + v) : v));
    const bad = got.findIndex((v, i) => !Object.is(v, sum[i]));
    expect(bad, `${what}: out[${bad}] = ${got[bad]}, ${residual ? 'h + ' : ''}(routed + shared) = ${sum[bad]}`).toBe(-1);
    const routedRef = moeExpertsRef({ ...shape, topk: K, x, topkIds: ids0, topkWeights: w0, weights: routedW });
    const sharedRef = mlpRef({ tokens: T, hidden_size: d, moe_intermediate_size: sharedI, x, weights: sharedW });
    const err = relError(got, routedRef.map((y, i) => y + sharedRef[i] + (residual?.[i] ?? 0)));
    expect(err.rel, `${what}: rel ${err.rel} at out[${err.worst}]`).toBeLessThan(1e-5);
  }
  for (const call of [fused, route, routed, mlp]) call.destroy();
  for (const b of Object.values(bufs)) b?.destroy();
  scratch.destroy();
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
