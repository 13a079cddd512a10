// The GPU forward pass against DeepSeek's official code (dsv3-tiny-official, mode f32_dequant):
// prefill logits at every position, greedy continuations token for token through the decode plan;
// and against itself: chunked prefill and prefill-then-decode give the logits of one full prefill.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeDir } from '../io/node_source.ts';
import { testGpu } from '../gpu/testing.ts';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import { loadWeights, type LoadedWeights } from './load_weights.ts';

interface OfficialPrompt {
  prompt: number[];
  router: Record<string, { indices: number[][] }>;
  prefill_logits: number[][];
  greedy: { tokens: number[]; step_logits: number[][] };
}
const prompts = officialReference<{ modes: { f32_dequant: { prompts: OfficialPrompt[] } } }>().modes.f32_dequant.prompts;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };

let loaded: LoadedWeights;
let model: GpuModel;
beforeAll(async () => {
  const gpu = await testGpu();
  loaded = await loadWeights(gpu, nodeDir(officialFixture()));
  model = createGpuModel(gpu, loaded, { prefillChunk: 48 });
});
afterAll(() => {
  model?.destroy();
  loaded?.destroy();
});

function maxAbsError(actual: ArrayLike<number>[], expected: ArrayLike<number>[]): { err: number; where: string } {
  expect(actual.length).toBe(expected.length);
  let err = 0;
  let where = '';
  actual.forEach((row, r) => {
    expect(row.length).toBe(expected[r].length);
    for (let j = 0; j < row.length; j++) {
      const e = Math.abs(row[j] - expected[r][j]);
      if (!(e <= err)) [err, where] = [e, `row ${r} col ${j}: ${row[j]} vs ${expected[r][j]}`];
    }
  });
  return { err, where };
}

describe('GPU forward vs the official code (dsv3-tiny-official)', () => {
  // Prompt 3 (130 tokens) runs as chunks of 48, 48 and 34 rows.
  it.each(prompts.map((p, i) => [i, p.prompt.length, p] as const))('prompt %i (%i tokens): prefill logits at every position', async (_i, _n, official) => {
    const cache = model.createCache(official.prompt.length + 1);
    const plans = model.plans(cache);
    try {
      const { logits } = await model.forward(plans, official.prompt, 0, { logits: 'all' });
      const { err, where } = maxAbsError(logits!, official.prefill_logits);
      expect(err, where).toBeLessThan(1e-4);
    } finally {
      plans.destroy();
      cache.destroy();
    }
  });

  it.each(prompts.slice(0, 3).map((p, i) => [i, p] as const))('prompt %i: the same experts in every MoE layer for every token', async (_i, official) => {
    const cache = model.createCache(official.prompt.length);
    const plans = model.plans(cache, { captureRouting: true });
    try {
      await model.forward(plans, official.prompt, 0); // one chunk: the plan of prompt.length rows
      const routing = await plans.get(official.prompt.length, 'last').readRouting();
      const K = model.config.num_experts_per_tok;
      expect([...routing.keys()]).toEqual(Object.keys(official.router).map(Number));
      for (const [layer, choice] of Object.entries(official.router)) {
        const ours = routing.get(Number(layer))!;
        choice.indices.forEach((ids, t) => {
          const mine = [...ours.subarray(t * K, (t + 1) * K)].sort((a, b) => a - b);
          expect(mine, `layer ${layer} token ${t}`).toEqual([...ids].sort((a, b) => a - b));
        });
      }
    } finally {
      plans.destroy();
      cache.destroy();
    }
  });

  it.each(prompts.slice(0, 3).map((p, i) => [i, p] as const))('prompt %i: greedy decoding through the latent cache gives the official tokens', async (_i, official) => {
    const steps = official.greedy.tokens.length;
    const cache = model.createCache(official.prompt.length + steps);
    const plans = model.plans(cache);
    try {
      const tokens: number[] = [];
      let { id } = await model.forward(plans, official.prompt, 0, { sample: GREEDY });
      tokens.push(id!);
      for (let s = 1; s < steps; s++) {
        ({ id } = await model.forward(plans, [id!], official.prompt.length + s - 1, { sample: { ...GREEDY, step: s } }));
        tokens.push(id!);
      }
      expect(tokens).toEqual(official.greedy.tokens);
    } finally {
      plans.destroy();
      cache.destroy();
    }
  });

  it('prefill then decode rows give the logits of one full prefill (and of smaller chunks)', async () => {
    const ids = prompts[2].prompt; // 40 tokens
    const one = model.createCache(ids.length);
    const onePlans = model.plans(one);
    const split = model.createCache(ids.length);
    const splitPlans = model.plans(split);
    try {
      const full = (await model.forward(onePlans, ids, 0, { logits: 'all' })).logits!;
      const rows: Float32Array[] = [];
      rows.push(...(await model.forward(splitPlans, ids.slice(0, 31), 0, { logits: 'all' })).logits!);
      rows.push(...(await model.forward(splitPlans, ids.slice(31, 33), 31, { logits: 'all' })).logits!); // the 2-row (MTP verify) plan
      for (let t = 33; t < ids.length; t++) rows.push(...(await model.forward(splitPlans, [ids[t]], t, { logits: 'last' })).logits!);
      const { err, where } = maxAbsError(rows, full);
      expect(err, where).toBeLessThan(2e-5);
    } finally {
      onePlans.destroy();
      splitPlans.destroy();
      one.destroy();
      split.destroy();
    }
  });
});
