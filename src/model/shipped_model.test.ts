// The shipped checkpoint (public/models/webmoe-kjv-12m) on the GPU against its trainer's torch
// model, a second implementation written independently (tools/train/model.py), fed the exported
// FP8/BF16 weights: logits on fixed ids, the held-out per-token loss, greedy continuations and MTP
// drafts, from the fixture tools/train/fixtures.py wrote (tools/train/fixtures/webmoe-kjv-12m.json).

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testGpu } from '../gpu/testing.ts';
import { nodeDir } from '../io/node_source.ts';
import { REPO_ROOT } from '../testing/fixtures.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import { loadWeights, type LoadedWeights } from './load_weights.ts';

interface TorchFixture {
  ids: number[];
  logits_last_positions: number[];
  logits_last_rows: number[][];
  logits_all_positions_argmax: number[];
  logits_all_positions_margin: number[];
  heldout: { ids: number[]; per_token_nll: number[]; mean_nll: number };
  greedy: { prompt: number[]; tokens: number[]; margins: number[] };
  mtp: { positions: number[]; argmax: number[]; margins: number[] };
}

const MODEL = resolve(REPO_ROOT, 'public/models/webmoe-kjv-12m');
const torch = JSON.parse(readFileSync(resolve(REPO_ROOT, 'tools/train/fixtures/webmoe-kjv-12m.json'), 'utf8')) as TorchFixture;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };
// The torch model runs naive MLA without a cache in float32; the engine absorbed MLA in float32.
const LOGIT_TOL = 5e-4;

let loaded: LoadedWeights;
let model: GpuModel;
beforeAll(async () => {
  const gpu = await testGpu();
  loaded = await loadWeights(gpu, nodeDir(MODEL));
  model = createGpuModel(gpu, loaded, { prefillChunk: 64 });
});
afterAll(() => {
  model?.destroy();
  loaded?.destroy();
});

async function allLogits(ids: number[]): Promise<Float32Array[]> {
  const cache = model.createCache(ids.length);
  const plans = model.plans(cache);
  try {
    return (await model.forward(plans, ids, 0, { logits: 'all' })).logits!;
  } finally {
    plans.destroy();
    cache.destroy();
  }
}

/** -log softmax(row)[target] in float64. */
function nll(row: Float32Array, target: number): number {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return Math.log(sum) + max - row[target];
}

describe('shipped checkpoint vs its torch model (exported weights)', () => {
  it('logits on fixed ids: the last rows within tolerance, the argmax of every row where torch has a margin', async () => {
    const rows = await allLogits(torch.ids);
    let worst = 0;
    torch.logits_last_positions.forEach((pos, r) => {
      torch.logits_last_rows[r].forEach((v, j) => (worst = Math.max(worst, Math.abs(rows[pos][j] - v))));
    });
    console.log(`shipped model: max |logit - torch| over the last rows ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(LOGIT_TOL);
    rows.forEach((row, t) => {
      if (torch.logits_all_positions_margin[t] <= 2 * LOGIT_TOL) return;
      let best = 0;
      for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
      expect(best, `position ${t}`).toBe(torch.logits_all_positions_argmax[t]);
    });
  });

  it('held-out per-token loss equals torch', async () => {
    const { ids, per_token_nll, mean_nll } = torch.heldout;
    const rows = await allLogits(ids);
    const ours = per_token_nll.map((_, t) => nll(rows[t], ids[t + 1]));
    let worst = 0;
    ours.forEach((v, t) => (worst = Math.max(worst, Math.abs(v - per_token_nll[t]))));
    console.log(`shipped model: max |nll - torch| ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(LOGIT_TOL);
    expect(Math.abs(ours.reduce((a, b) => a + b, 0) / ours.length - mean_nll)).toBeLessThan(1e-4);
  });

  it('greedy continuation and MTP drafts equal torch where it is not a near tie', async () => {
    const { prompt, tokens, margins } = torch.greedy;
    const cache = model.createCache(prompt.length + tokens.length);
    const plans = model.plans(cache);
    try {
      let { id } = await model.forward(plans, prompt, 0, { sample: GREEDY });
      const ours = [id!];
      for (let s = 1; s < tokens.length; s++) {
        ({ id } = await model.forward(plans, [id!], prompt.length + s - 1, { sample: GREEDY }));
        ours.push(id!);
      }
      // Compare up to the first near tie (after it the two sequences may part legitimately).
      const firstTie = margins.findIndex((m) => m <= 2 * LOGIT_TOL);
      const upTo = firstTie < 0 ? tokens.length : firstTie + 1;
      expect(ours.slice(0, upTo)).toEqual(tokens.slice(0, upTo));
      expect(upTo).toBeGreaterThan(8);

      // MTP: row i from h_i and ids[i + 1], over the fixed ids.
      const mtpCache = model.createCache(torch.ids.length);
      const mtpPlans = model.plans(mtpCache);
      try {
        const n = torch.mtp.positions.length;
        const out = await mtpPlans.get(n, 'all', 'shifted').run({ ids: torch.ids.slice(0, n), startPos: 0, nextId: torch.ids[n], sample: GREEDY });
        torch.mtp.positions.forEach((pos, r) => {
          if (torch.mtp.margins[r] > 2 * LOGIT_TOL) expect(out.drafts![pos], `MTP row ${pos}`).toBe(torch.mtp.argmax[r]);
        });
      } finally {
        mtpPlans.destroy();
        mtpCache.destroy();
      }
    } finally {
      plans.destroy();
      cache.destroy();
    }
  });
});
