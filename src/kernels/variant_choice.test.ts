// chooseVariant with a fake timer (the fastest wins, a slow candidate is cut after one run, the
// choice is remembered, adapters do not share keys, a failing candidate drops out), the stores,
// gemv_fp8's race of its strategies (subgroup_per_row only where the device has 'subgroups'; a fake
// timer), one real measurement of gemv_fp8 on SwiftShader (which strategy wins is not asserted:
// tests do not assert times), and the races of rmsnorm's, mla_decode's and moe_route's reductions
// (subgroup only where the device has it; with a fake timer, then for real), and the race of the
// verify step's expert reads (per_pair first; its widths within a budget, its logits' overlap).

import { describe, expect, it } from 'vitest';
import type { AdapterReport, Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import type { Timing } from '../gpu/timing.ts';
import { GEMV_STRATEGIES, type GemvStrategy } from './gemv_fp8.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { RMSNORM_REDUCES, type RmsNormReduce } from './rmsnorm.ts';
import { MLA_DECODE_REDUCES } from './mla_decode.ts';
import { ROUTE_REDUCES, type RouterConfig } from './moe_route.ts';
import { moeRouteRef } from './moe_route.ref.ts';
import { EXPERT_READS } from './moe_experts.ts';
import {
  chooseGemvStrategy,
  chooseMlaDecodeReduce,
  chooseRmsNormReduce,
  chooseRouteReduce,
  chooseVerifyExperts,
  verifyLogits,
  verifyWidths,
  VERIFY_EXPERTS_CALLS_PER_PASS,
  MLA_DECODE_CALLS_PER_PASS,
  ROUTE_CALLS_PER_PASS,
  RMSNORM_CALLS_PER_PASS,
  chooseVariant,
  defaultVariantStore,
  memoryVariantStore,
  variantKey,
  webStorageStore,
  type ChooseVariantOptions,
  type StorageLike,
  type TimeFunction,
} from './variant_choice.ts';

/** A Gpu with an adapter identity and the error scopes chooseVariant uses; nothing runs on it. */
function fakeGpu(description: string, failing = false): Gpu {
  const adapter = { vendor: 'acme', architecture: 'arch', device: 'dev', description, isSoftware: false } as AdapterReport;
  const device = {
    pushErrorScope() {},
    popErrorScope: async () => (failing ? { message: 'shader failed to compile' } : null),
  };
  return { adapter, device } as unknown as Gpu;
}

/** A timer where each candidate's run takes a fixed time; it records every call. */
function fakeTimer(msPerRun: Record<string, number>) {
  const calls: { candidate: string; runs: number }[] = [];
  let current = '';
  const time: TimeFunction = async (_gpu, record, options) => {
    record({} as GPUComputePassEncoder);
    const runs = options.runs ?? 10;
    calls.push({ candidate: current, runs });
    const ms = msPerRun[current];
    return { medianMs: ms, wallMedianMs: ms, minMs: ms, runs, method: 'wall' } satisfies Timing;
  };
  const build = (candidate: string) => ({
    encode: () => {
      current = candidate;
    },
    destroy: () => {
      destroyed.push(candidate);
    },
  });
  const destroyed: string[] = [];
  return { time, build, calls, destroyed };
}

function options(gpu: Gpu, timer: ReturnType<typeof fakeTimer>, store = memoryVariantStore()): ChooseVariantOptions<'a' | 'b' | 'c'> {
  return { gpu, kernel: 'k', shapeClass: 'M=1', candidates: ['a', 'b', 'c'], store, build: timer.build, time: timer.time };
}

describe('chooseVariant', () => {
  it('picks the fastest candidate and frees every candidate it built', async () => {
    const timer = fakeTimer({ a: 2, b: 1, c: 1.5 });
    const choice = await chooseVariant(options(fakeGpu('x'), timer));
    expect(choice.variant).toBe('b');
    expect(choice.measured).toBe(true);
    expect(choice.times).toEqual({ a: 2, b: 1, c: 1.5 });
    expect(timer.destroyed).toEqual(['a', 'b', 'c']);
  });

  it('stops timing a candidate whose first run is over 3x the best so far', async () => {
    const timer = fakeTimer({ a: 1, b: 3.5, c: 2.9 });
    await chooseVariant(options(fakeGpu('x'), timer));
    const runsOf = (c: string) => timer.calls.filter((call) => call.candidate === c).reduce((n, call) => n + call.runs, 0);
    expect([runsOf('a'), runsOf('b'), runsOf('c')]).toEqual([3, 1, 3]);
  });

  it('keeps the first (default) candidate on a tie', async () => {
    const choice = await chooseVariant(options(fakeGpu('x'), fakeTimer({ a: 1, b: 1, c: 1 })));
    expect(choice.variant).toBe('a');
  });

  it('remembers the choice: the second call does not measure', async () => {
    const store = memoryVariantStore();
    const gpu = fakeGpu('x');
    const first = fakeTimer({ a: 3, b: 2, c: 1 });
    expect((await chooseVariant(options(gpu, first, store))).variant).toBe('c');
    const second = fakeTimer({ a: 1, b: 2, c: 3 });
    const again = await chooseVariant(options(gpu, second, store));
    expect(again).toMatchObject({ variant: 'c', measured: false });
    expect(second.calls).toEqual([]);
  });

  it('keys by adapter, kernel, shape class and candidates', async () => {
    const store = memoryVariantStore();
    const one = await chooseVariant(options(fakeGpu('GPU one'), fakeTimer({ a: 1, b: 2, c: 3 }), store));
    const two = await chooseVariant(options(fakeGpu('GPU two'), fakeTimer({ a: 3, b: 2, c: 1 }), store));
    expect(one.key).not.toBe(two.key);
    expect([one.variant, two.variant, two.measured]).toEqual(['a', 'c', true]);
    const gpu = fakeGpu('GPU one');
    const keys = new Set([variantKey(gpu, 'k', 'M=1', ['a', 'b']), variantKey(gpu, 'k2', 'M=1', ['a', 'b']), variantKey(gpu, 'k', 'M=64', ['a', 'b']), variantKey(gpu, 'k', 'M=1', ['a', 'b', 'c']), variantKey(gpu, 'k', 'M=1', ['a', 'b'], 2)]);
    expect(keys.size).toBe(5);
    expect(variantKey(gpu, 'k', 'M=1', ['a', 'b'], 1)).toBe(variantKey(gpu, 'k', 'M=1', ['a', 'b']));
  });

  it('measures again when the remembered variant is no longer a candidate', async () => {
    const store = memoryVariantStore();
    const gpu = fakeGpu('x');
    const base = options(gpu, fakeTimer({ a: 1, b: 2, c: 3 }), store);
    store.set(variantKey(gpu, 'k', 'M=1', base.candidates), 'gone');
    expect(await chooseVariant(base)).toMatchObject({ variant: 'a', measured: true });
  });

  it('drops a candidate that fails to build, and throws when all fail', async () => {
    const timer = fakeTimer({ a: 1, b: 2, c: 3 });
    const build = (c: 'a' | 'b' | 'c') => {
      if (c === 'a') throw new Error('not on this adapter');
      return timer.build(c);
    };
    expect((await chooseVariant({ ...options(fakeGpu('x'), timer), build })).variant).toBe('b');
    await expect(chooseVariant(options(fakeGpu('x', true), fakeTimer({ a: 1, b: 2, c: 3 })))).rejects.toThrow(/every variant failed.*shader failed to compile/);
  });
});

describe('variant stores', () => {
  it('web storage: reads back what it wrote, and survives a write that throws', () => {
    const items = new Map<string, string>();
    const storage: StorageLike = { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => void items.set(k, v) };
    const store = webStorageStore(storage);
    expect(store.get('k')).toBeUndefined();
    store.set('k', 'v');
    expect([store.get('k'), items.get('k')]).toEqual(['v', 'v']);
    const full = webStorageStore({ getItem: () => null, setItem: () => { throw new Error('QuotaExceededError'); } });
    expect(() => full.set('k', 'v')).not.toThrow();
  });

  it('default: a working store in Node', () => {
    const store = defaultVariantStore();
    store.set('webmoe.test', 'x');
    expect(store.get('webmoe.test')).toBe('x');
  });
});

describe('chooseGemvStrategy on this adapter', () => {
  /** A timer that tells the candidates apart by their bind group's label ("gemv_fp8 <strategy>"). */
  function gemvTimer(ms: Partial<Record<GemvStrategy, number>>) {
    const timed: string[] = [];
    const time: TimeFunction = async (_gpu, record, options) => {
      let label = '';
      const pass = { setPipeline() {}, setBindGroup: (_i: number, group: GPUBindGroup) => void (label = group.label), dispatchWorkgroups() {} };
      record(pass as unknown as GPUComputePassEncoder);
      const strategy = label.replace(/^gemv_fp8 /, '') as GemvStrategy;
      timed.push(strategy);
      const t = ms[strategy] ?? 1;
      return { medianMs: t, wallMedianMs: t, minMs: t, runs: options.runs ?? 1, method: 'wall' } satisfies Timing;
    };
    return { time, timed };
  }

  it('races every strategy the device has (subgroup_per_row only with subgroups), the adapter default first, and keeps the fastest', async () => {
    const gpu = await testGpu();
    const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
    const fallback = gpu.adapter.isSoftware ? 'thread_per_4_rows' : 'workgroup_per_row';
    const available = GEMV_STRATEGIES.filter((s) => s !== 'subgroup_per_row' || gpu.device.features.has('subgroups'));
    const tie = gemvTimer({});
    expect(await chooseGemvStrategy(ctx, memoryVariantStore(), { time: tie.time })).toBe(fallback);
    expect(tie.timed[0]).toBe(fallback);
    expect(new Set(tie.timed)).toEqual(new Set(available));
    for (const other of available.filter((s) => s !== fallback)) {
      expect(await chooseGemvStrategy(ctx, memoryVariantStore(), { time: gemvTimer({ [other]: 0.5 }).time })).toBe(other);
    }
  });

  it('measures once, returns a strategy, and remembers it', async () => {
    const gpu = await testGpu();
    const cache = new PipelineCache(gpu.device);
    const store = memoryVariantStore();
    const strategy = await chooseGemvStrategy({ gpu, pipelines: cache }, store);
    expect(GEMV_STRATEGIES).toContain(strategy);
    let timed = 0;
    const counting: TimeFunction = async () => {
      timed++;
      throw new Error('should not measure');
    };
    expect(await chooseGemvStrategy({ gpu, pipelines: cache }, store, { time: counting })).toBe(strategy);
    expect(timed).toBe(0);
  });
});

describe('chooseRmsNormReduce on this adapter', () => {
  /** A timer that tells the candidates apart by their bind group's label ("rmsnorm <reduce>"). */
  function rmsnormTimer(ms: Partial<Record<RmsNormReduce, number>>) {
    const timed: string[] = [];
    const time: TimeFunction = async (_gpu, record, options) => {
      let label = '';
      let dispatches = 0;
      const pass = {
        setPipeline() {},
        setBindGroup: (_i: number, group: GPUBindGroup) => void (label = group.label),
        dispatchWorkgroups: () => void dispatches++,
      };
      record(pass as unknown as GPUComputePassEncoder);
      const reduce = label.replace(/^rmsnorm /, '') as RmsNormReduce;
      timed.push(reduce);
      expect(dispatches).toBe(RMSNORM_CALLS_PER_PASS);
      const t = ms[reduce] ?? 1;
      return { medianMs: t, wallMedianMs: t, minMs: t, runs: options.runs ?? 1, method: 'wall' } satisfies Timing;
    };
    return { time, timed };
  }

  it('races every reduction the device has, the adapter default first, and keeps the fastest', async () => {
    const gpu = await testGpu();
    const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
    const fallback = gpu.adapter.isSoftware ? 'thread' : 'workgroup';
    const available = RMSNORM_REDUCES.filter((r) => r !== 'subgroup' || gpu.device.features.has('subgroups'));
    const tie = rmsnormTimer({});
    expect(await chooseRmsNormReduce(ctx, memoryVariantStore(), { time: tie.time })).toBe(fallback);
    expect(tie.timed[0]).toBe(fallback);
    expect(new Set(tie.timed)).toEqual(new Set(available));
    const other = available.find((r) => r !== fallback)!;
    expect(await chooseRmsNormReduce(ctx, memoryVariantStore(), { time: rmsnormTimer({ [other]: 0.5 }).time })).toBe(other);
  });

  it('measures once for real, returns an available reduction, and remembers it', async () => {
    const gpu = await testGpu();
    const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
    const store = memoryVariantStore();
    const reduce = await chooseRmsNormReduce(ctx, store);
    expect(RMSNORM_REDUCES).toContain(reduce);
    if (reduce === 'subgroup') expect(gpu.device.features.has('subgroups')).toBe(true);
    const counting = rmsnormTimer({});
    expect(await chooseRmsNormReduce(ctx, store, { time: counting.time })).toBe(reduce);
    expect(counting.timed).toEqual([]);
  });
});

/** A timer that tells candidates apart by their bind group's label ("<kernel> <reduction>") and counts a pass's dispatches. */
function labelTimer(kernel: string, ms: Record<string, number>, dispatchesPerPass: number) {
  const timed: string[] = [];
  const time: TimeFunction = async (_gpu, record, options) => {
    let label = '';
    let dispatches = 0;
    const pass = {
      setPipeline() {},
      setBindGroup: (_i: number, group: GPUBindGroup) => void (label = group.label),
      dispatchWorkgroups: () => void dispatches++,
    };
    record(pass as unknown as GPUComputePassEncoder);
    const reduction = label.replace(new RegExp(`^${kernel} `), '').replace(/\..*$/, ''); // "<kernel> <variant>[.<pass>]"
    timed.push(reduction);
    expect(dispatches).toBe(dispatchesPerPass);
    const t = ms[reduction] ?? 1;
    return { medianMs: t, wallMedianMs: t, minMs: t, runs: options.runs ?? 1, method: 'wall' } satisfies Timing;
  };
  return { time, timed };
}

// The shipped checkpoint's attention and router shapes are near these; odd widths on purpose.
const MLA_SHAPE = { heads: 3, kvLoraRank: 72, ropeDim: 8, qkNopeHeadDim: 7, vHeadDim: 5 };
const ROUTER: RouterConfig = { n_routed_experts: 12, n_group: 4, topk_group: 3, num_experts_per_tok: 6, norm_topk_prob: true, routed_scaling_factor: 2.5 };

describe('chooseMlaDecodeReduce, chooseRouteReduce and chooseVerifyExperts on this adapter', () => {
  const races = [
    {
      kernel: 'mla_decode',
      all: MLA_DECODE_REDUCES as readonly string[],
      fallback: (gpu: Gpu) => (gpu.adapter.isSoftware ? 'thread' : 'workgroup'),
      perPass: MLA_DECODE_CALLS_PER_PASS, // one split: one dispatch per call
      choose: (ctx: { gpu: Gpu; pipelines: PipelineCache }, store: ReturnType<typeof memoryVariantStore>, time?: TimeFunction) => chooseMlaDecodeReduce(ctx, store, MLA_SHAPE, { positions: 37, time }),
    },
    {
      kernel: 'moe_route',
      all: ROUTE_REDUCES as readonly string[],
      fallback: () => 'thread',
      perPass: ROUTE_CALLS_PER_PASS,
      choose: (ctx: { gpu: Gpu; pipelines: PipelineCache }, store: ReturnType<typeof memoryVariantStore>, time?: TimeFunction) => chooseRouteReduce(ctx, store, ROUTER, { time }),
    },
    {
      kernel: 'moe_experts_verify',
      all: EXPERT_READS as readonly string[],
      fallback: () => 'per_pair',
      perPass: 2 * VERIFY_EXPERTS_CALLS_PER_PASS, // gate_up and down, the shared experts fused
      choose: (ctx: { gpu: Gpu; pipelines: PipelineCache }, store: ReturnType<typeof memoryVariantStore>, time?: TimeFunction) =>
        chooseVerifyExperts(ctx, store, { hidden_size: 136, moe_intermediate_size: 40, shared_intermediate_size: 40, router: ROUTER }, { time }),
    },
  ];
  for (const race of races) {
    it(`${race.kernel}: races every reduction the device has, the default first, and keeps the fastest`, async () => {
      const gpu = await testGpu();
      const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
      const fallback = race.fallback(gpu);
      const available = race.all.filter((r) => r !== 'subgroup' || gpu.device.features.has('subgroups'));
      const tie = labelTimer(race.kernel, {}, race.perPass);
      expect(await race.choose(ctx, memoryVariantStore(), tie.time)).toBe(fallback);
      expect(tie.timed[0]).toBe(fallback);
      expect(new Set(tie.timed)).toEqual(new Set(available));
      const other = available.find((r) => r !== fallback)!;
      expect(await race.choose(ctx, memoryVariantStore(), labelTimer(race.kernel, { [other]: 0.5 }, race.perPass).time)).toBe(other);
    });

    it(`${race.kernel}: measures once for real, returns an available reduction, and remembers it`, async () => {
      const gpu = await testGpu();
      const ctx = { gpu, pipelines: new PipelineCache(gpu.device) };
      const store = memoryVariantStore();
      const reduction = await race.choose(ctx, store);
      expect(race.all).toContain(reduction);
      if (reduction === 'subgroup') expect(gpu.device.features.has('subgroups')).toBe(true);
      const counting = labelTimer(race.kernel, {}, race.perPass);
      expect(await race.choose(ctx, store, counting.time)).toBe(reduction);
      expect(counting.timed).toEqual([]);
    });
  }
});

describe('chooseVerifyExperts: its shape', () => {
  const v3: RouterConfig = { n_routed_experts: 256, n_group: 8, topk_group: 4, num_experts_per_tok: 8, norm_topk_prob: true, routed_scaling_factor: 2.5 };
  const shipped: RouterConfig = { n_routed_experts: 16, n_group: 4, topk_group: 2, num_experts_per_tok: 4, norm_topk_prob: true, routed_scaling_factor: 2.5 };

  it("measures at the model's widths while its experts fit the budget, else at widths scaled alike", () => {
    const small = { hidden_size: 256, moe_intermediate_size: 96, shared_intermediate_size: 96, router: shipped };
    expect(verifyWidths(small, 64 * 2 ** 20)).toEqual({ d: 256, I: 96, sharedI: 96 });
    const big = { hidden_size: 7168, moe_intermediate_size: 2048, shared_intermediate_size: 2048, router: v3 };
    const w = verifyWidths(big, 64 * 2 ** 20);
    expect(3 * w.d * (256 * w.I + w.sharedI)).toBeLessThanOrEqual(64 * 2 ** 20);
    expect(3 * w.d * (256 * w.I + w.sharedI)).toBeGreaterThan(0.8 * 64 * 2 ** 20 * ((w.d - 4) / w.d) * ((w.I - 4) / w.I));
    for (const n of [w.d, w.I]) expect(n % 4).toBe(0);
    expect(w.sharedI).toBe(w.I); // fused into the passes as in the model
    expect(w.d / w.I).toBeCloseTo(7168 / 2048, 0);
    expect(verifyWidths({ ...big, shared_intermediate_size: 0 }, 64 * 2 ** 20).sharedI).toBe(0);
  });

  it('gives two tokens that choose about half their experts alike, without ties', () => {
    for (const config of [shipped, v3, ROUTER]) {
      const K = config.num_experts_per_tok;
      const logits = verifyLogits(config);
      for (const t of [0, 1]) expect(new Set(logits.subarray(t * config.n_routed_experts, (t + 1) * config.n_routed_experts)).size).toBe(config.n_routed_experts);
      const { ids } = moeRouteRef(logits, new Float32Array(config.n_routed_experts), 2, config);
      const first = new Set(ids.subarray(0, K));
      const shared = ids.subarray(K, 2 * K).filter((e) => first.has(e)).length;
      expect(shared, `E=${config.n_routed_experts} K=${K}`).toBe(Math.floor(K / 2));
    }
  });
});
