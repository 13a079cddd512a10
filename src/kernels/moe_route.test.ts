// The router on the GPU (SwiftShader here) against moeRouteRef: random logits at odd token counts
// for three shapes, and the edge cases (ties, a group limit that drops the best expert,
// norm_topk_prob false).
//
// Bounds: ids exact; weights within 1e-6 absolute (they are at most routed_scaling_factor; the
// GPU's exp is not the CPU's, which moves s by a few float32 ulps). With random logits the GPU may
// legitimately order two biased scores differently when they are within its exp error of each
// other, so ids are compared on tokens whose deciding gaps exceed MARGIN (nearly all of them).

import { describe, expect, it } from 'vitest';
import { ConfigError, UnsupportedConfigError } from '../errors.ts';
import { readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { checkRouterConfig, createMoeRoute, moeRouteCost } from './moe_route.ts';
import { moeRouteRef, type RouterConfig, type Routing } from './moe_route.ref.ts';
import { submitPass } from '../gpu/kernel.ts';

const MARGIN = 1e-6;
const WEIGHT_TOL = 1e-6; // relative above 1: weights scaled by routed_scaling_factor (16 for V2) carry its rounding

function router(E: number, G: number, KG: number, K: number, norm_topk_prob = true): RouterConfig {
  return { n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K, norm_topk_prob, routed_scaling_factor: 2.5 };
}

async function routeOnGpu(logits: Float32Array, bias: Float32Array | null, tokens: number, config: RouterConfig): Promise<Routing> {
  const { device } = await testGpu();
  const K = config.num_experts_per_tok;
  const logitsBuf = uploadBuffer(device, logits, 'logits');
  const biasBuf = bias ? uploadBuffer(device, bias, 'bias') : undefined;
  // Poisoned outputs: every slot must be written.
  const idsBuf = uploadBuffer(device, new Uint32Array(tokens * K).fill(0xdeadbeef), 'topk_ids');
  const weightsBuf = uploadBuffer(device, new Float32Array(tokens * K).fill(Number.NaN), 'topk_weights');
  device.pushErrorScope('validation');
  const op = createMoeRoute(await testKernelContext()).prepare({
    tokens, config, logits: logitsBuf, bias: biasBuf, topkIds: idsBuf, topkWeights: weightsBuf,
  });
  submitPass(device, op);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  const ids = await readU32(device, idsBuf, tokens * K);
  const weights = await readF32(device, weightsBuf, tokens * K);
  for (const b of [logitsBuf, biasBuf, idsBuf, weightsBuf]) b?.destroy();
  op.destroy();
  return { ids, weights };
}

/**
 * The smallest gap that decides token t's routing, in the reference's float32 scores: between
 * the last kept and the first dropped group, and between consecutive experts of the top K + 1.
 */
function decidingGap(logits: Float32Array, bias: Float32Array, t: number, config: RouterConfig): number {
  const { n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K } = config;
  const per = E / G;
  const c = Array.from({ length: E }, (_, e) => Math.fround(Math.fround(1 / (1 + Math.exp(-logits[t * E + e]))) + bias[e]));
  const groups = Array.from({ length: G }, (_, g) => {
    const [a, b] = c.slice(g * per, (g + 1) * per).sort((x, y) => y - x);
    return { g, score: Math.fround(a + b) };
  }).sort((x, y) => y.score - x.score);
  let gap = KG < G ? groups[KG - 1].score - groups[KG].score : Infinity;
  const kept = new Set(groups.slice(0, KG).map((x) => x.g));
  const top = c.filter((_, e) => kept.has(Math.floor(e / per))).sort((x, y) => y - x).slice(0, K + 1);
  for (let k = 0; k + 1 < top.length; k++) gap = Math.min(gap, top[k] - top[k + 1]);
  return gap;
}

/** Compares the tokens `compare` accepts; returns how many it compared. */
function expectRouting(
  got: Routing,
  want: Routing,
  tokens: number,
  config: RouterConfig,
  compare: (t: number) => boolean,
  what: string,
): number {
  const K = config.num_experts_per_tok;
  let compared = 0;
  for (let t = 0; t < tokens; t++) {
    if (!compare(t)) continue;
    compared++;
    const g = Array.from(got.ids.subarray(t * K, (t + 1) * K));
    const w = Array.from(want.ids.subarray(t * K, (t + 1) * K));
    expect(g, `${what}: ids of token ${t}`).toEqual(w);
    for (let k = 0; k < K; k++) {
      const i = t * K + k;
      const sideBySide = `got ${got.weights[i]} want ${want.weights[i]}`;
      expect(Math.abs(got.weights[i] - want.weights[i]), `${what}: weight ${k} of token ${t}: ${sideBySide}`).toBeLessThanOrEqual(WEIGHT_TOL * Math.max(1, Math.abs(want.weights[i])));
    }
  }
  return compared;
}

/** The smallest gap between consecutive softmax scores that decides token t (V2 routing), with group maxima. */
function softmaxGap(logits: Float32Array, t: number, config: RouterConfig): number {
  const { n_routed_experts: E, num_experts_per_tok: K } = config;
  const G = config.topk_method === 'group_limited_greedy' ? config.n_group : 1;
  const KG = G === 1 ? 1 : config.topk_group;
  const per = E / G;
  const row = Array.from(logits.subarray(t * E, (t + 1) * E));
  const max = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  const p = exps.map((v) => v / total);
  const groups = Array.from({ length: G }, (_, g) => ({ g, score: Math.max(...p.slice(g * per, (g + 1) * per)) })).sort((x, y) => y.score - x.score);
  let gap = KG < G ? groups[KG - 1].score - groups[KG].score : Infinity;
  const kept = new Set(groups.slice(0, KG).map((x) => x.g));
  const top = p.filter((_, e) => kept.has(Math.floor(e / per))).sort((x, y) => y - x).slice(0, K + 1);
  for (let k = 0; k + 1 < top.length; k++) gap = Math.min(gap, top[k] - top[k + 1]);
  return gap;
}

describe('moe_route kernel, DeepSeek-V2 softmax routing', () => {
  const v2 = (E: number, G: number, KG: number, K: number, topk_method: 'greedy' | 'group_limited_greedy', norm_topk_prob: boolean, routed_scaling_factor: number): RouterConfig => ({
    n_routed_experts: E, n_group: G, topk_group: KG, num_experts_per_tok: K, norm_topk_prob, routed_scaling_factor, scoring_func: 'softmax', topk_method,
  });
  const shapes: [string, RouterConfig][] = [
    ['V2-Lite greedy E=64 K=6, weights x 1.0', v2(64, 1, 1, 6, 'greedy', false, 1)],
    ['V2 group_limited_greedy E=160 G=8 KG=3 K=6, weights x 16', v2(160, 8, 3, 6, 'group_limited_greedy', false, 16)],
    ['greedy E=13 K=3, normalised', v2(13, 1, 1, 3, 'greedy', true, 2.5)],
    ['group_limited_greedy E=15 G=5 KG=2 K=1, normalised (K=1: scaled)', v2(15, 5, 2, 1, 'group_limited_greedy', true, 3)],
  ];
  for (const [name, config] of shapes) {
    it(`matches the reference on random logits (${name})`, async () => {
      const next = rng(testSeed(`moe_route v2 ${name}`));
      const E = config.n_routed_experts;
      for (const tokens of [1, 7, 33]) {
        const logits = randn(next, tokens * E, 1.5);
        const want = moeRouteRef(logits, null, tokens, config);
        const got = await routeOnGpu(logits, null, tokens, config);
        const compared = expectRouting(got, want, tokens, config, (t) => softmaxGap(logits, t, config) > MARGIN, `${name} T=${tokens}`);
        expect(compared).toBeGreaterThanOrEqual(Math.floor(tokens * 0.9));
      }
      // The weights follow the rule of the config: normalised to 1, or scaled softmax probabilities.
      const K = config.num_experts_per_tok;
      const one = moeRouteRef(randn(next, E, 1.5), null, 1, config).weights;
      const sum = one.reduce((a, b) => a + b, 0);
      if (config.norm_topk_prob && K > 1) expect(sum).toBeCloseTo(1, 5);
      else expect(sum).toBeLessThan(config.routed_scaling_factor * (1 + 1e-6));
    });
  }

  it('refuses a bias with softmax routing, none with noaux_tc, and scoring that does not fit the method', async () => {
    const ctx = await testKernelContext();
    const b = ctx.gpu.device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE });
    const route = createMoeRoute(ctx);
    const args = { tokens: 1, logits: b, topkIds: b, topkWeights: b };
    try {
      expect(() => route.prepare({ ...args, bias: b, config: v2(16, 1, 1, 2, 'greedy', false, 1) })).toThrow(/has no bias/);
      expect(() => route.prepare({ ...args, config: router(16, 4, 2, 4) })).toThrow(/needs e_score_correction_bias/);
      expect(() => route.prepare({ ...args, config: { ...router(16, 4, 2, 4), scoring_func: 'softmax' } })).toThrow(/noaux_tc goes with sigmoid/);
    } finally {
      b.destroy();
    }
  });
});

describe('moe_route kernel', () => {
  const shapes: [string, RouterConfig][] = [
    ['fixture E=12 G=4 KG=3 K=6', router(12, 4, 3, 6)],
    ['V3 E=256 G=8 KG=4 K=8', router(256, 8, 4, 8)],
    ['E=16 G=4 KG=2 K=4', router(16, 4, 2, 4)],
  ];
  for (const [name, config] of shapes) {
    it(`matches the reference on random logits (${name})`, async () => {
      const seed = testSeed(`moe_route ${name}`);
      const next = rng(seed);
      const E = config.n_routed_experts;
      for (const tokens of [1, 7, 33]) {
        // As in the fixture: logits about N(0, 1.5^2), bias uniform in +-0.12.
        const logits = randn(next, tokens * E, 1.5);
        const bias = Float32Array.from({ length: E }, () => (next() * 2 - 1) * 0.12);
        const want = moeRouteRef(logits, bias, tokens, config);
        const got = await routeOnGpu(logits, bias, tokens, config);
        const clear = (t: number) => decidingGap(logits, bias, t, config) > MARGIN;
        const compared = expectRouting(got, want, tokens, config, clear, `${name} T=${tokens}`);
        expect(compared, `tokens with a deciding gap above ${MARGIN}`).toBeGreaterThanOrEqual(Math.floor(tokens * 0.9));
      }
    });
  }

  it('breaks ties toward the lower expert id and the lower group', async () => {
    const config = router(16, 4, 2, 4);
    // Every score equal: groups 0 and 1 are kept, experts 0..3 chosen in order.
    const tokens = 3;
    const logits = new Float32Array(tokens * 16).fill(0.25);
    // Token 1: group 2 (experts 9, 10) ranks first, group 1 (experts 5, 6) second; experts 5 and 9
    // tie for the top: 5 comes first although its group ranks lower.
    logits.fill(-2, 16, 32);
    logits[16 + 5] = 1;
    logits[16 + 9] = 1;
    logits[16 + 10] = 0.5;
    logits[16 + 6] = 0.3;
    // Token 2: group 0 is best, groups 1 and 2 tie on score for the second place: group 1 is kept.
    logits.fill(-3, 32, 48);
    for (const e of [0, 1]) logits[32 + e] = 2;
    for (const e of [4, 5, 8, 9]) logits[32 + e] = 0.5;
    const bias = new Float32Array(16);
    const got = await routeOnGpu(logits, bias, tokens, config);
    const want = moeRouteRef(logits, bias, tokens, config);
    expect(Array.from(want.ids)).toEqual([0, 1, 2, 3, 5, 9, 10, 6, 0, 1, 4, 5]);
    expectRouting(got, want, tokens, config, () => true, 'ties');
  });

  it('drops the best expert when its group loses on the sum of its top two', async () => {
    const config = router(16, 4, 2, 4);
    const logits = new Float32Array(16).fill(0.5); // s = 0.62, group score 1.24
    logits.fill(-6, 0, 4); // group 0: s = 0.0025 ...
    logits[2] = 6; // ... except expert 2, the best of all (s = 0.9975), group score 1.0
    const bias = new Float32Array(16);
    bias[7] = 0.05; // one clear winner among the rest
    const got = await routeOnGpu(logits, bias, 1, config);
    const want = moeRouteRef(logits, bias, 1, config);
    expect(Array.from(want.ids)).toEqual([7, 4, 5, 6]);
    expectRouting(got, want, 1, config, () => true, 'group limit');
    // The bias chose expert 7 but does not weigh it: all four weights are equal.
    for (const w of got.weights) expect(w).toBeCloseTo(2.5 / 4, 6);
  });

  it('scales the unnormalised scores when norm_topk_prob is false', async () => {
    const seed = testSeed('moe_route no norm');
    const next = rng(seed);
    const config = router(12, 4, 3, 6, false);
    const tokens = 5;
    const logits = randn(next, tokens * 12, 1.5);
    const bias = Float32Array.from({ length: 12 }, () => (next() * 2 - 1) * 0.12);
    const got = await routeOnGpu(logits, bias, tokens, config);
    const want = moeRouteRef(logits, bias, tokens, config);
    expectRouting(got, want, tokens, config, (t) => decidingGap(logits, bias, t, config) > MARGIN, 'norm_topk_prob false');
    for (let i = 0; i < got.ids.length; i++) {
      const t = Math.floor(i / 6);
      const s = 1 / (1 + Math.exp(-logits[t * 12 + got.ids[i]]));
      expect(got.weights[i]).toBeCloseTo(2.5 * s, 6);
    }
  });

  it('routes more tokens than one workgroup holds', async () => {
    const seed = testSeed('moe_route many');
    const next = rng(seed);
    const config = router(12, 4, 3, 6);
    const tokens = 131;
    const logits = randn(next, tokens * 12, 1.5);
    const bias = Float32Array.from({ length: 12 }, () => (next() * 2 - 1) * 0.12);
    const got = await routeOnGpu(logits, bias, tokens, config);
    const want = moeRouteRef(logits, bias, tokens, config);
    const compared = expectRouting(got, want, tokens, config, (t) => decidingGap(logits, bias, t, config) > MARGIN, 'T=131');
    expect(compared).toBeGreaterThanOrEqual(Math.floor(tokens * 0.9));
  });

  it('rejects router configs it cannot run, with typed errors naming the key', () => {
    expect(() => checkRouterConfig(router(12, 5, 3, 6))).toThrow(ConfigError);
    expect(() => checkRouterConfig(router(128, 64, 4, 8))).toThrow(UnsupportedConfigError);
    expect(() => checkRouterConfig(router(8, 8, 4, 2))).toThrow(/fewer than 2 experts/);
    expect(() => checkRouterConfig(router(12, 4, 5, 6))).toThrow(/topk_group/);
    expect(() => checkRouterConfig(router(12, 4, 1, 6))).toThrow(/num_experts_per_tok/);
    expect(() => checkRouterConfig(router(384, 1, 1, 8))).not.toThrow(); // one group: no group limit
  });

  it('counts bytes and FLOPs', () => {
    expect(moeRouteCost(2, router(12, 4, 3, 6))).toEqual({ bytes: 4 * (24 + 12 + 24), flops: 2 * 7 * 12 * 5 });
  });
});
