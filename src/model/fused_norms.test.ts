// Decode plans without norm dispatches (deepseek_v3.ts, layer.ts: each RMSNorm in the GEMV after
// it, each residual add in the kernel before it) against the official code and against the plans
// that keep the dispatches (fuseNorms: false), on dsv3-tiny-official: decode logits at every
// position, the MTP verify step's logits and drafts, and the dispatches a step records.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeDir } from '../io/node_source.ts';
import { testGpu } from '../gpu/testing.ts';
import type { Gpu } from '../gpu/device.ts';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import { loadWeights, type LoadedWeights } from './load_weights.ts';

const { prompt, prefill_logits: official } = officialReference<{ modes: { f32_dequant: { prompts: { prompt: number[]; prefill_logits: number[][] }[] } } }>().modes.f32_dequant.prompts[2];
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };
const PREFILL = 30; // then decode rows 30 .. 39 one by one

let gpu: Gpu;
let loaded: LoadedWeights;
let fused: GpuModel;
let unfused: GpuModel;
beforeAll(async () => {
  gpu = await testGpu();
  loaded = await loadWeights(gpu, nodeDir(officialFixture()));
  fused = createGpuModel(gpu, loaded);
  unfused = createGpuModel(gpu, loaded, { fuseNorms: false });
});
afterAll(() => {
  fused?.destroy();
  unfused?.destroy();
  loaded?.destroy();
});

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0;
  for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
  return Number.isNaN(err) ? Infinity : err;
}

/** Prefill PREFILL ids, then the rest one decode row at a time: each decode row's logits. */
async function decodeLogits(model: GpuModel): Promise<Float32Array[]> {
  const cache = model.createCache(prompt.length);
  const plans = model.plans(cache);
  try {
    await model.forward(plans, prompt.slice(0, PREFILL), 0);
    const rows: Float32Array[] = [];
    for (let t = PREFILL; t < prompt.length; t++) rows.push(...(await model.forward(plans, [prompt[t]], t, { logits: 'last' })).logits!);
    return rows;
  } finally {
    plans.destroy();
    cache.destroy();
  }
}

/** The compute dispatches plan.encode records for one step (a counting encoder, nothing submitted). */
function countDispatches(model: GpuModel, rows: number): number {
  const cache = model.createCache(8);
  const plans = model.plans(cache);
  try {
    let dispatches = 0;
    const pass = { setPipeline() {}, setBindGroup() {}, dispatchWorkgroups: () => void dispatches++, end() {} };
    const encoder = { beginComputePass: () => pass, copyBufferToBuffer() {} } as unknown as GPUCommandEncoder;
    plans.get(rows, rows === 1 ? 'last' : 'all').encode(encoder, { ids: new Array(rows).fill(1), startPos: 0, sample: GREEDY });
    return dispatches;
  } finally {
    plans.destroy();
    cache.destroy();
  }
}

describe('decode plans with the norms inside the GEMVs (dsv3-tiny-official)', () => {
  it('give the official logits at every decode position, and the separate dispatches\' logits to rounding', async () => {
    const [a, b] = [await decodeLogits(fused), await decodeLogits(unfused)];
    a.forEach((row, i) => {
      expect(maxAbs(row, official[PREFILL + i]), `position ${PREFILL + i} vs official`).toBeLessThan(1e-4);
      expect(maxAbs(row, b[i]), `position ${PREFILL + i} vs fuseNorms: false`).toBeLessThan(2e-5);
    });
  });

  it('the MTP verify step (2 rows) gives the same ids and drafts as with the dispatches', async () => {
    const runs = await Promise.all(
      [fused, unfused].map(async (model) => {
        const cache = model.createCache(prompt.length + 2);
        const plans = model.plans(cache);
        try {
          const first = await model.forward(plans, prompt.slice(0, PREFILL), 0, { sample: GREEDY, mtp: true });
          const v = await model.verify(plans, prompt[PREFILL], prompt[PREFILL + 1], PREFILL, { ...GREEDY, step: 1 });
          return { first, ids: [...v.ids], drafts: [...v.drafts] };
        } finally {
          plans.destroy();
          cache.destroy();
        }
      }),
    );
    expect(runs[0].first.id).toBe(runs[1].first.id);
    expect(runs[0].first.draft).toBe(runs[1].first.draft);
    expect(runs[0].ids).toEqual(runs[1].ids);
    expect(runs[0].drafts).toEqual(runs[1].drafts);
  });

  // Each layer loses its post-attention norm; a MoE layer whose down pass writes routed + shared in
  // one store (shared experts of the routed width, an adapter binding 12 storage buffers) also its
  // next norm, a dense layer always. The fixture's shared experts are twice the routed width: they
  // run as an MLP adding into ffnOut, which the layer then adds to h (one dispatch kept).
  it('a decode step records one dispatch fewer for the first norm and one or two per layer', () => {
    const c = fused.config;
    const layers = fused.weights.layers;
    const moe = layers.filter((l) => l.moe).length;
    const joins = c.n_shared_experts * c.moe_intermediate_size === c.moe_intermediate_size && gpu.device.limits.maxStorageBuffersPerShaderStage >= 12;
    const saved = 1 + (layers.length - moe) + moe * (joins ? 2 : 1);
    expect(saved).toBe(5); // 2 dense + 2 MoE layers
    for (const rows of [1, 2]) expect(countDispatches(unfused, rows) - countDispatches(fused, rows), `${rows} rows`).toBe(saved);
  });

  it('the shipped checkpoint (shared experts of the routed width): 48 dispatches a decode step instead of 58', async () => {
    const shipped = await loadWeights(gpu, nodeDir('public/models/webmoe-kjv-12m'));
    const [a, b] = [createGpuModel(gpu, shipped), createGpuModel(gpu, shipped, { fuseNorms: false })];
    try {
      const layers = a.weights.layers;
      const moe = layers.filter((l) => l.moe).length;
      const canJoin = gpu.device.limits.maxStorageBuffersPerShaderStage >= 12;
      expect(countDispatches(b, 1) - countDispatches(a, 1)).toBe(1 + (layers.length - moe) + moe * (canJoin ? 2 : 1));
      if (canJoin) expect([countDispatches(a, 1), countDispatches(b, 1)]).toEqual([48, 58]);
    } finally {
      a.destroy();
      b.destroy();
      shipped.destroy();
    }
  });
});
