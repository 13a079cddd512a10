// The engine with its routed experts in CPU memory (expertSlots, or a gpuBudgetMib too small for
// every expert) against the all-resident engine, on the shipped checkpoint: the same greedy ids
// with and without MTP speculation, the same sampled ids for a seed, at one expert per layer and
// at the slots a budget holds; stats().offload counts what moved. The budget refuses, before
// anything is allocated, a model that does not fit even with one expert per layer.

import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, GpuOutOfMemoryError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { nodeDir } from '../io/node_source.ts';
import { DEFAULT_PREFILL_CHUNK } from '../model/gpu_model.ts';
import { plannedBindingLimit } from '../model/load_weights.ts';
import { planMemory } from '../model/memory_plan.ts';
import { parseConfig } from '../config.ts';
import { REPO_ROOT } from '../testing/fixtures.ts';
import { trackingDevice } from '../testing/tracking_device.ts';
import { createLocalEngine, DEFAULT_CACHE_BUDGET_BYTES } from './engine.ts';
import type { Engine, GenerateOptions } from './types.ts';

const MODEL = resolve(REPO_ROOT, 'public/models/webmoe-kjv-12m');
const MAX_CONTEXT = 128;
const PROMPT = 'And God said, Let there be light';

let gpu: Gpu;
let resident: Engine;
beforeAll(async () => {
  gpu = await testGpu();
  resident = await createLocalEngine({ gpu, dir: nodeDir(MODEL), maxContext: MAX_CONTEXT });
});
afterAll(async () => {
  await resident?.unload();
});

async function ids(engine: Engine, options: GenerateOptions): Promise<number[]> {
  const out: number[] = [];
  for await (const chunk of engine.generate(PROMPT, { maxTokens: 12, ignoreEos: true, ...options })) out.push(...chunk.ids);
  return out;
}

const RUNS: GenerateOptions[] = [
  { temperature: 0, speculative: false },
  { temperature: 0, speculative: true },
  { temperature: 0.8, topP: 0.9, seed: 7, speculative: false },
];

/** What the memory plan says the shipped checkpoint needs at `expertSlots` (all resident when undefined). */
async function planned(expertSlots?: number): Promise<number> {
  const checkpoint = await openCheckpoint(nodeDir(MODEL));
  const config = parseConfig(checkpoint.configText, 'config.json');
  return planMemory({
    config, tensors: [...checkpoint.tensors.values()], weights: 'fp8', maxContext: MAX_CONTEXT, prefillChunk: DEFAULT_PREFILL_CHUNK, cacheBudgetBytes: DEFAULT_CACHE_BUDGET_BYTES,
    bindingLimit: plannedBindingLimit(gpu.device.limits), maxBufferSize: gpu.device.limits.maxBufferSize, expertSlots,
  }).oneSessionBytes;
}

describe('experts offloaded to CPU memory, the shipped checkpoint', () => {
  it('at one expert per layer: the resident greedy ids with and without MTP, the same sampled ids; stats().offload counts the uploads', async () => {
    const want = [];
    for (const run of RUNS) want.push(await ids(resident, run));
    // MTP drafting from the first 2048 of 8192 ids (defaultDraftVocab) changes nothing in the output
    expect(want[1]).toEqual(want[0]);
    expect((await resident.stats()).offload).toBeNull();
    const engine = await createLocalEngine({ gpu, dir: nodeDir(MODEL), maxContext: MAX_CONTEXT, expertSlots: 1 });
    try {
      for (const [i, run] of RUNS.entries()) expect(await ids(engine, run), JSON.stringify(run)).toEqual(want[i]);
      const stats = await engine.stats();
      const offload = stats.offload!;
      expect(offload.expertSlots).toBe(1);
      expect(offload.budgetBytes).toBeNull();
      expect(offload.layers.map((l) => l.layer)).toEqual([1, 2, 3, 4, 5]); // the MoE layers and the MTP layer
      expect(offload.expertMisses).toBeGreaterThan(0);
      expect(offload.uploadedBytes).toBeGreaterThan(offload.expertMisses * 3 * 96 * 256); // an fp8 expert's codes, scales besides
      expect(offload.residentBytes).toBeLessThan((await resident.stats()).weightBytes);
      expect(offload.residentBytes).toBe(stats.weightBytes);
    } finally {
      await engine.unload();
    }
  });

  it('an abort mid-generation ends in AbortError and leaves no GPU buffer behind', async () => {
    const engine = await createLocalEngine({ gpu, dir: nodeDir(MODEL), maxContext: MAX_CONTEXT, expertSlots: 2 });
    try {
      const before = await engine.stats();
      const controller = new AbortController();
      const error = await (async () => {
        for await (const chunk of engine.generate(PROMPT, { maxTokens: 50, ignoreEos: true, temperature: 0, signal: controller.signal })) if (chunk.ids.length > 0) controller.abort();
      })().catch((e) => e);
      expect(error).toBeInstanceOf(AbortError);
      const after = await engine.stats();
      expect(after.sessions).toBe(0);
      expect([after.gpuBuffers, after.gpuBytes]).toEqual([before.gpuBuffers, before.gpuBytes]);
      // and the cache still serves the next request
      expect(await ids(engine, RUNS[0])).toEqual(await ids(resident, RUNS[0]));
    } finally {
      await engine.unload();
    }
  });

  it('gpuBudgetMib under the all-resident plan takes the most slots that fit, the same ids', async () => {
    const all = await planned();
    const half = await planned(8);
    const budget = Math.floor((half + (await planned(9))) / 2); // 8 slots fit, 9 do not
    expect(budget).toBeLessThan(all);
    const engine = await createLocalEngine({ gpu, dir: nodeDir(MODEL), maxContext: MAX_CONTEXT, gpuBudgetMib: budget / 2 ** 20 });
    try {
      const offload = (await engine.stats()).offload!;
      expect(offload.expertSlots).toBe(8);
      expect(offload.budgetBytes).toBeCloseTo(budget, 0);
      expect(await ids(engine, RUNS[0])).toEqual(await ids(resident, RUNS[0]));
      expect((await engine.stats()).offload!.expertHits).toBeGreaterThan(0);
    } finally {
      await engine.unload();
    }
  });

  it('refuses a budget that one expert per layer does not fit, before allocating, saying what it needs', async () => {
    const one = await planned(1);
    const { device, made } = trackingDevice(gpu.device);
    const error = await createLocalEngine({ gpu: { ...gpu, device }, dir: nodeDir(MODEL), maxContext: MAX_CONTEXT, gpuBudgetMib: (one - 1024) / 2 ** 20 }).catch((e) => e);
    expect(error).toBeInstanceOf(GpuOutOfMemoryError);
    expect(error.message).toContain(`even with the routed experts in CPU memory and one per layer on the GPU it needs ${(one / 2 ** 20).toFixed(1)} MiB`);
    expect(made).toHaveLength(0);
  });
});
