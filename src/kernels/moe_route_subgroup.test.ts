// The router's subgroup selection (route_reduce subgroup, moe_route_common.wgsl) on the GPU
// (SwiftShader here, subgroups of 4): the same ids and the same weight bits as the thread
// selection, and within the bounds of moe_route.test.ts of moeRouteRef, in moe_route and inside
// the decode experts' passes (decode_route, which run the selection themselves). Odd expert,
// group, top-k and token counts, DeepSeek-V2's softmax routing, ties, NaN logits and scores, and
// workgroups of 1 (one lane), 3, 6 and 100 invocations (partial subgroups after full ones) as
// well as the default (one subgroup) and 64 (many). Skipped, saying so, on a device without
// 'subgroups'; the WGSL of the thread variant enables nothing.

import { beforeAll, describe, expect, it } from 'vitest';
import moeRouteSource from '../../shaders/moe_route.wgsl?raw';
import type { Gpu } from '../gpu/device.ts';
import { readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { submitPass, type KernelContext } from '../gpu/kernel.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { composeShader } from '../gpu/shader_compose.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { createMoeExperts, createMoeExpertsScratch } from './moe_experts.ts';
import { createMoeRoute, ROUTE_REDUCES, ROUTE_SNIPPET, ROUTINGS, type MoeRouteOptions } from './moe_route.ts';
import { moeRouteRef, type RouterConfig, type Routing } from './moe_route.ref.ts';
import { randomExperts, uploadExperts } from '../testing/moe_experts_testing.ts';

const hasSubgroups = (await testGpu()).device.features.has('subgroups');
const NEEDS_SUBGROUPS = "needs the device's 'subgroups' feature";
const WEIGHT_TOL = 1e-6; // against the float64 reference, as moe_route.test.ts

let gpu: Gpu;
let ctx: KernelContext;
beforeAll(async () => {
  gpu = await testGpu();
  ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
});

const v3 = (E: number, G: number, KG: number, K: number, norm_topk_prob = true): RouterConfig => ({ n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K, norm_topk_prob, routed_scaling_factor: 2.5 });
const v2 = (E: number, G: number, KG: number, K: number, topk_method: 'greedy' | 'group_limited_greedy', norm_topk_prob: boolean): RouterConfig => ({
  ...v3(E, G, KG, K, norm_topk_prob), routed_scaling_factor: 16, scoring_func: 'softmax', topk_method,
});

// Experts per group below, at and above a subgroup of 4; groups of 2 (a lane per expert or none).
const CONFIGS: [string, RouterConfig][] = [
  ['fixture E=12 G=4 KG=3 K=6', v3(12, 4, 3, 6)],
  ['V3 E=256 G=8 KG=4 K=8', v3(256, 8, 4, 8)],
  ['E=14 G=7 KG=3 K=5, groups of 2', v3(14, 7, 3, 5)],
  ['E=13 G=1 K=3, not normalised', v3(13, 1, 1, 3, false)],
  ['E=45 G=5 KG=2 K=7', v3(45, 5, 2, 7)],
  ['V2 group_limited_greedy E=160 G=8 KG=3 K=6', v2(160, 8, 3, 6, 'group_limited_greedy', false)],
  ['V2-Lite-like greedy E=19 K=4, normalised', v2(19, 1, 1, 4, 'greedy', true)],
];

// Invocations per token: the default (one subgroup), then 1, 3, 6, 64, 100.
const WORKGROUPS: (number | undefined)[] = [undefined, 1, 3, 6, 64, 100];

interface Inputs {
  logits: Float32Array;
  bias: Float32Array | null;
}

function randomInputs(seed: number, tokens: number, config: RouterConfig): Inputs {
  const next = rng(seed);
  const E = config.n_routed_experts;
  const softmax = config.scoring_func === 'softmax';
  return {
    logits: randn(next, tokens * E, 1.5),
    bias: softmax ? null : Float32Array.from({ length: E }, () => (next() * 2 - 1) * 0.12),
  };
}

async function routeOnGpu(options: MoeRouteOptions, { logits, bias }: Inputs, tokens: number, config: RouterConfig): Promise<Routing> {
  const { device } = gpu;
  const K = config.num_experts_per_tok;
  const logitsBuf = uploadBuffer(device, logits, 'logits');
  const biasBuf = bias ? uploadBuffer(device, bias, 'bias') : undefined;
  const idsBuf = uploadBuffer(device, new Uint32Array(tokens * K).fill(0xdeadbeef), 'topk_ids');
  const weightsBuf = uploadBuffer(device, new Float32Array(tokens * K).fill(Number.NaN), 'topk_weights');
  device.pushErrorScope('validation');
  const op = createMoeRoute(ctx, options).prepare({ tokens, config, logits: logitsBuf, bias: biasBuf, topkIds: idsBuf, topkWeights: weightsBuf });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const ids = await readU32(device, idsBuf, tokens * K);
  const weights = await readF32(device, weightsBuf, tokens * K);
  for (const b of [logitsBuf, biasBuf, idsBuf, weightsBuf]) b?.destroy();
  op.destroy();
  return { ids, weights };
}

const bits = (w: Float32Array) => Array.from(new Uint32Array(w.buffer, w.byteOffset, w.length));

function expectSame(got: Routing, want: Routing, what: string): void {
  expect(Array.from(got.ids), `${what}: ids`).toEqual(Array.from(want.ids));
  expect(bits(got.weights), `${what}: weight bits`).toEqual(bits(want.weights));
}

/** Ids exact, weights within WEIGHT_TOL, on the tokens the thread selection also matches (moe_route.test.ts bounds its gaps). */
function expectNearReference(got: Routing, thread: Routing, ref: Routing, tokens: number, K: number, what: string): void {
  let compared = 0;
  for (let t = 0; t < tokens; t++) {
    const row = (r: Routing) => Array.from(r.ids.subarray(t * K, (t + 1) * K));
    if (row(thread).join() !== row(ref).join()) continue; // a near tie the GPU's exp decides otherwise (moe_route.test.ts: MARGIN)
    compared++;
    expect(row(got), `${what}: ids of token ${t}`).toEqual(row(ref));
    for (let k = 0; k < K; k++) {
      const i = t * K + k;
      expect(Math.abs(got.weights[i] - ref.weights[i]), `${what}: weight ${k} of token ${t}: got ${got.weights[i]} want ${ref.weights[i]}`).toBeLessThanOrEqual(WEIGHT_TOL * Math.max(1, Math.abs(ref.weights[i])));
    }
  }
  expect(compared, `${what}: tokens compared with the reference`).toBeGreaterThanOrEqual(Math.floor(tokens * 0.9));
}

describe('moe_route, subgroup selection', () => {
  for (const [name, config] of CONFIGS) {
    it.skipIf(!hasSubgroups)(`gives the thread selection's ids and weight bits, near the reference (${name}; ${NEEDS_SUBGROUPS})`, async () => {
      const seed = testSeed(`moe_route subgroup ${name}`);
      const K = config.num_experts_per_tok;
      for (const [i, tokens] of [1, 7, 33].entries()) {
        const inputs = randomInputs(seed + i, tokens, config);
        const thread = await routeOnGpu({ reduce: 'thread' }, inputs, tokens, config);
        const ref = moeRouteRef(inputs.logits, inputs.bias, tokens, config);
        for (const subgroupWorkgroupSize of WORKGROUPS) {
          const what = `${name} T=${tokens} workgroup ${subgroupWorkgroupSize ?? 'default'}`;
          const got = await routeOnGpu({ reduce: 'subgroup', subgroupWorkgroupSize }, inputs, tokens, config);
          expectSame(got, thread, what);
          expectNearReference(got, thread, ref, tokens, K, what);
        }
      }
    });
  }

  it.skipIf(!hasSubgroups)(`breaks ties and treats NaN logits and NaN scores as the thread selection does (${NEEDS_SUBGROUPS})`, async () => {
    const config = v3(16, 4, 2, 4);
    const E = 16;
    const tokens = 5;
    const logits = new Float32Array(tokens * E).fill(0.25); // token 0: all tied
    logits.fill(Number.NaN, E, 2 * E); // token 1: all NaN
    for (let e = 0; e < E; e++) logits[2 * E + e] = e % 3; // token 2: ties inside and across groups
    logits.fill(-1, 3 * E, 4 * E); // token 3: one NaN among ties, in a kept group, after its first expert
    logits[3 * E + 5] = Number.NaN;
    logits[4 * E + 6] = Number.NaN; // token 4: one NaN among random logits
    const next = rng(testSeed('moe_route subgroup ties'));
    for (let e = 0; e < E; e++) if (e !== 6) logits[4 * E + e] = next();
    const inputs = { logits, bias: new Float32Array(E) };
    const thread = await routeOnGpu({ reduce: 'thread' }, inputs, tokens, config);
    const ref = moeRouteRef(logits, inputs.bias, tokens, config);
    expect(Array.from(thread.ids.subarray(0, 4))).toEqual(Array.from(ref.ids.subarray(0, 4)));
    // SwiftShader's exp does not carry a NaN logit into a NaN score; a NaN bias does (c = s + bias):
    // NaN scores first in their group (expert 0: the scan's first candidate) and after it (expert 5).
    const nanBias = new Float32Array(E);
    nanBias[0] = Number.NaN;
    nanBias[5] = Number.NaN;
    const nanInputs = { logits, bias: nanBias };
    const nanThread = await routeOnGpu({ reduce: 'thread' }, nanInputs, tokens, config);
    for (const subgroupWorkgroupSize of WORKGROUPS) {
      const what = `workgroup ${subgroupWorkgroupSize ?? 'default'}`;
      expectSame(await routeOnGpu({ reduce: 'subgroup', subgroupWorkgroupSize }, inputs, tokens, config), thread, `ties, ${what}`);
      expectSame(await routeOnGpu({ reduce: 'subgroup', subgroupWorkgroupSize }, nanInputs, tokens, config), nanThread, `NaN bias, ${what}`);
    }
  });

  it.skipIf(!hasSubgroups)(`routes more tokens than one grid row of workgroups holds apart from none (T=131; ${NEEDS_SUBGROUPS})`, async () => {
    const config = v3(12, 4, 3, 6);
    const tokens = 131;
    const inputs = randomInputs(testSeed('moe_route subgroup many'), tokens, config);
    expectSame(await routeOnGpu({ reduce: 'subgroup' }, inputs, tokens, config), await routeOnGpu({ reduce: 'thread' }, inputs, tokens, config), 'T=131');
  });

  it("enables subgroups in the subgroup variant's WGSL only (an adapter without them compiles the other)", () => {
    for (const route_reduce of ROUTE_REDUCES) {
      for (const routing of ROUTINGS) {
        const code = composeShader({ kernel: { name: 'moe_route.wgsl', code: moeRouteSource }, snippets: [ROUTE_SNIPPET], axes: { routing: ROUTINGS, route_reduce: ROUTE_REDUCES }, variant: { routing, route_reduce } })
          .replace(/\/\/.*$/gm, '');
        expect(/^enable subgroups;$/m.test(code), route_reduce).toBe(route_reduce === 'subgroup');
        expect(/subgroup(Add|Max|Min|ExclusiveAdd)/.test(code), route_reduce).toBe(route_reduce === 'subgroup');
      }
    }
  });

  it("refuses the subgroup selection on a device without 'subgroups', and bad options", async () => {
    const device = new Proxy(gpu.device, { get: (target, key) => (key === 'features' ? new Set<string>() : Reflect.get(target, key)) });
    const without: KernelContext = { gpu: { ...gpu, device } as Gpu, pipelines: new PipelineCache(gpu.device) };
    expect(() => createMoeRoute(without, { reduce: 'subgroup' })).toThrow(/'subgroups' feature/);
    expect(() => createMoeExperts(without, { routeReduce: 'subgroup' })).toThrow(/'subgroups' feature/);
    expect(createMoeRoute(without).reduce).toBe('thread');
    expect(() => createMoeRoute(ctx, { reduce: 'tree' as 'thread' })).toThrow(/not a route reduction/);
    expect(() => createMoeRoute(ctx, { subgroupWorkgroupSize: 4 })).toThrow(/subgroup reduction only/);
    if (hasSubgroups) for (const size of [0, 2.5, 100000]) expect(() => createMoeRoute(ctx, { reduce: 'subgroup', subgroupWorkgroupSize: size })).toThrow(/subgroupWorkgroupSize/);
  });
});

// The decode experts' passes with the router inside: each gate_up and down workgroup selects
// for its token with its lanes together. Workgroups of 64 (16 subgroups of 4 here), 6 (a
// partial subgroup) and 1; I and d leave columns past n in the last workgroup (they select, then
// skip their sums).
describe('moe_experts decode passes, subgroup selection', () => {
  const cases: { format: 'fp8' | 'bf16'; d: number; I: number; router: RouterConfig; softmax?: boolean }[] = [
    { format: 'fp8', d: 200, I: 72, router: v3(12, 4, 2, 3) },
    { format: 'bf16', d: 97, I: 21, router: v3(45, 5, 2, 7) },
    { format: 'fp8', d: 136, I: 40, router: { ...v3(8, 2, 1, 2), scoring_func: 'softmax', topk_method: 'group_limited_greedy' } },
  ];
  for (const c of cases) {
    const E = c.router.n_routed_experts;
    const K = c.router.num_experts_per_tok;
    it.skipIf(!hasSubgroups)(`gives the thread passes' ids, weights and out bit for bit (${c.format} d=${c.d} I=${c.I} E=${E} K=${K}; ${NEEDS_SUBGROUPS})`, async () => {
      const { device } = gpu;
      const next = rng(testSeed(`moe_experts subgroup route ${c.format} ${c.d}`));
      const softmax = c.router.scoring_func === 'softmax';
      for (const T of [1, 3]) {
        const routed = randomExperts(next, E, c.d, c.I, c.format);
        const shared = randomExperts(next, 1, c.d, c.I, c.format);
        const logits = Float32Array.from(randn(next, T * E), (v) => 2 * v);
        if (T === 3) logits.fill(0.5, E, 2 * E); // token 1: all tied
        const stack = uploadExperts(device, routed);
        const sharedStack = uploadExperts(device, shared);
        const x = uploadBuffer(device, randn(next, T * c.d), 'x');
        const logitsBuf = uploadBuffer(device, logits, 'logits');
        const bias = softmax ? undefined : uploadBuffer(device, Float32Array.from(randn(next, E), (v) => 0.1 * v), 'bias');
        const shape = { tokens: T, hidden_size: c.d, moe_intermediate_size: c.I, n_routed_experts: E, num_experts_per_tok: K };
        const run = async (routeReduce: 'thread' | 'subgroup', workgroupSize?: number) => {
          const scratch = createMoeExpertsScratch(device, shape, 'decode', 'scratch', 1);
          device.queue.writeBuffer(scratch.h, 0, new Float32Array(scratch.h.size / 4).fill(Number.NaN));
          const ids = uploadBuffer(device, new Uint32Array(T * K).fill(0xdeadbeef), 'topk_ids');
          const weights = uploadBuffer(device, new Float32Array(T * K).fill(Number.NaN), 'topk_weights');
          const out = uploadBuffer(device, new Float32Array(T * c.d).fill(Number.NaN), 'out');
          const sharedH = uploadBuffer(device, new Float32Array(T * c.I), 'shared_h');
          device.pushErrorScope('validation');
          const call = createMoeExperts(ctx, { weights: c.format, routeReduce, workgroupSize }).prepare({
            ...shape, x, topkIds: ids, topkWeights: weights, weights: stack, scratch, out,
            router: { config: c.router, logits: logitsBuf, bias },
            shared: { intermediate_size: c.I, weights: sharedStack, h: sharedH },
          });
          submitPass(device, call);
          expect((await device.popErrorScope())?.message).toBeUndefined();
          const result = { ids: await readU32(device, ids, T * K), weights: await readF32(device, weights, T * K), out: await readF32(device, out, T * c.d) };
          call.destroy();
          for (const b of [ids, weights, out, sharedH]) b.destroy();
          scratch.destroy();
          return result;
        };
        // The thread passes against moe_route and the references: moe_experts_fused.test.ts.
        const thread = await run('thread');
        for (const workgroupSize of [64, 6, 1]) {
          const what = `T=${T} workgroup ${workgroupSize}`;
          const got = await run('subgroup', workgroupSize);
          expectSame(got, thread, what);
          expect(bits(got.out), `${what}: out bits`).toEqual(bits(thread.out));
        }
        for (const b of [x, logitsBuf, bias]) b?.destroy();
        stack.destroy();
        sharedStack.destroy();
      }
    });
  }
});
