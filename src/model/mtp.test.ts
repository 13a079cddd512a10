// The MTP module on the GPU against the official fixture's MTP logits (vLLM / SGLang convention:
// row i from h_i after model.norm and the embedding of seq[i+1]), the speculative verify step
// against plain greedy decoding, and with sampled drafts the verify step's first token against the
// main model's distribution.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { nodeDir } from '../io/node_source.ts';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { keptDistribution } from '../kernels/sample.ref.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import { loadWeights, type LoadedWeights } from './load_weights.ts';

interface OfficialPrompt {
  prompt: number[];
  greedy: { tokens: number[] };
  mtp: { logits: number[][]; argmax: number[] };
}
const prompts = officialReference<{ modes: { f32_dequant: { prompts: OfficialPrompt[] } } }>().modes.f32_dequant.prompts;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };

let loaded: LoadedWeights;
let model: GpuModel;
let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
  loaded = await loadWeights(gpu, nodeDir(officialFixture()));
  model = createGpuModel(gpu, loaded, { prefillChunk: 12 });
});
afterAll(() => {
  model?.destroy();
  loaded?.destroy();
});

describe('MTP module (dsv3-tiny-official)', () => {
  it.each([0, 1])('prompt %i: MTP logits of every row match the official ones', async (i) => {
    const p = prompts[i];
    const seq = [...p.prompt, ...p.greedy.tokens];
    const rows = seq.length - 1;
    const cache = model.createCache(seq.length);
    const plans = model.plans(cache);
    try {
      const out = await plans.get(rows, 'all', 'shifted').run({ ids: seq.slice(0, rows), startPos: 0, nextId: seq[rows], sample: GREEDY, readLogits: true });
      const V = model.config.vocab_size;
      let worst = 0;
      for (let r = 0; r < rows; r++) for (let j = 0; j < V; j++) worst = Math.max(worst, Math.abs(out.mtpLogits![r * V + j] - p.mtp.logits[r][j]));
      expect(worst).toBeLessThan(1e-4);
      expect([...out.drafts!]).toEqual(p.mtp.argmax);
    } finally {
      plans.destroy();
      cache.destroy();
    }
  });

  it('chunked prefill with MTP gives the official first draft; verify steps reproduce greedy decoding', async () => {
    const p = prompts[2]; // 40 tokens: chunks of 12, 12, 12, 4
    const seq = [...p.prompt, ...p.greedy.tokens];
    const cache = model.createCache(seq.length + 2);
    const plans = model.plans(cache);
    try {
      const first = await model.forward(plans, p.prompt, 0, { sample: GREEDY, mtp: true });
      expect(first.id).toBe(p.greedy.tokens[0]);
      // Row T-1 of the official MTP logits drafts the token after greedy[0].
      expect(first.draft).toBe(p.mtp.argmax[p.prompt.length - 1]);

      // Speculative greedy decoding: accepted drafts give two tokens per step.
      const out = [first.id!];
      let current = first.id!;
      let draft = first.draft!;
      let pos = p.prompt.length;
      let accepted = 0;
      while (out.length < p.greedy.tokens.length) {
        const v = await model.verify(plans, current, draft, pos, GREEDY);
        if (v.ids[0] === draft) {
          accepted++;
          out.push(v.ids[0], v.ids[1]);
          current = v.ids[1];
          draft = v.drafts[1]!;
          pos += 2;
        } else {
          out.push(v.ids[0]);
          current = v.ids[0];
          draft = v.drafts[0]!;
          pos += 1;
        }
      }
      expect(out.slice(0, p.greedy.tokens.length)).toEqual(p.greedy.tokens);
      expect(accepted).toBeGreaterThan(0);
    } finally {
      plans.destroy();
      cache.destroy();
    }
  });

  it('sampled drafts: the verify step outputs the main model\'s distribution, accepts Σ min(p, q) of the drafts (chi-square, 100 seeds)', async () => {
    const p0 = prompts[0];
    const current = p0.greedy.tokens[0];
    const pos = p0.prompt.length;
    const V = model.config.vocab_size;
    const sampling = { temperature: 1, topK: 4, topP: 1, seed: 0, step: 1 };
    const cache = model.createCache(pos + 2);
    const plans = model.plans(cache);
    try {
      await model.forward(plans, p0.prompt.slice(0, -1), 0);
      // p: the main model after `current`; q: the MTP module's draft distribution after it.
      const shifted = plans.get(1, 'last', 'shifted');
      const first = await shifted.run({ ids: [p0.prompt[pos - 1]], startPos: pos - 1, nextId: current, sample: { ...sampling, step: 0 }, drafts: 'sampled', readLogits: true });
      const q = keptDistribution(first.mtpLogits!, sampling);
      const probe = await plans.get(2, 'all', 'sampled').run({ ids: [current, 0], startPos: pos, sample: { ...sampling, temperature: 0 }, readLogits: true });
      const p = keptDistribution(probe.logits!.subarray(0, V), sampling);
      const N = 100;
      const counts = new Array(V).fill(0);
      let accepted = 0;
      for (let seed = 1; seed <= N; seed++) {
        // The prompt's last row again: the MTP module samples a draft after `current` with the seed's draft stream, and leaves its q.
        const out = await shifted.run({ ids: [p0.prompt[pos - 1]], startPos: pos - 1, nextId: current, sample: { ...sampling, seed, step: 0 }, drafts: 'sampled' });
        const draft = out.drafts![0];
        expect(q[draft], `draft ${draft} outside q`).toBeGreaterThan(0);
        const v = await model.verify(plans, current, draft, pos, { ...sampling, seed }, { drafts: 'sampled', draftRow: 1 });
        counts[v.ids[0]]++;
        if (v.ids[0] === draft) accepted++;
        expect(p[v.ids[0]], `output ${v.ids[0]} outside p`).toBeGreaterThan(0);
      }
      let chi2 = 0;
      for (let j = 0; j < V; j++) if (p[j] > 0) chi2 += (counts[j] - N * p[j]) ** 2 / (N * p[j]);
      // 99.9% quantile of chi-square with 3 degrees of freedom (top-k 4) is 16.3.
      expect(chi2, `counts ${counts.filter((c) => c > 0)} want ${Array.from(p).filter((x) => x > 0).map((x) => (N * x).toFixed(0))}`).toBeLessThan(16.3);
      const overlap = Array.from(q, (qj, j) => Math.min(qj, p[j])).reduce((a, b) => a + b, 0);
      console.log(`[figures] sampled drafts on the fixture, T = 1 top-k 4: ${accepted}/${N} accepted, Σ min(p, q) = ${overlap.toFixed(3)}`);
      expect(Math.abs(accepted / N - overlap)).toBeLessThan(4 * Math.sqrt(overlap / N) + 0.02);
    } finally {
      plans.destroy();
      cache.destroy();
    }
  }, 120_000);

  it('draftVocab N: the draft head gives the first N of the full MTP logits bit for bit and drafts their argmax; the main model is unchanged', async () => {
    const p = prompts[0];
    const seq = [...p.prompt, ...p.greedy.tokens];
    const rows = seq.length - 1;
    const V = model.config.vocab_size;
    const N = 131; // not a multiple of anything: the head's pieces are clipped by rows
    const run = async (m: GpuModel) => {
      const cache = m.createCache(seq.length);
      const plans = m.plans(cache);
      try {
        return await plans.get(rows, 'all', 'shifted').run({ ids: seq.slice(0, rows), startPos: 0, nextId: seq[rows], sample: GREEDY, readLogits: true });
      } finally {
        plans.destroy();
        cache.destroy();
      }
    };
    const full = await run(model);
    const subset = createGpuModel(gpu, loaded, { prefillChunk: 12, draftVocab: N });
    try {
      const got = await run(subset);
      expect(got.mtpLogits!.length).toBe(rows * N);
      const fullBits = new Uint32Array(full.mtpLogits!.buffer);
      const gotBits = new Uint32Array(got.mtpLogits!.buffer);
      for (let r = 0; r < rows; r++) expect(Array.from(gotBits.subarray(r * N, (r + 1) * N)), `row ${r}`).toEqual(Array.from(fullBits.subarray(r * V, r * V + N)));
      const argmaxOfFirst = Array.from({ length: rows }, (_, r) => {
        const row = full.mtpLogits!.subarray(r * V, r * V + N);
        return row.indexOf(Math.max(...row));
      });
      expect([...got.drafts!]).toEqual(argmaxOfFirst);
      expect(argmaxOfFirst.some((id, r) => id !== p.mtp.argmax[r])).toBe(true); // the subset changes some drafts here
      expect([...got.ids!]).toEqual([...full.ids!]);
      expect(new Uint32Array(got.logits!.buffer)).toEqual(new Uint32Array(full.logits!.buffer));
    } finally {
      subset.destroy();
    }
    expect(() => createGpuModel(gpu, loaded, { draftVocab: V + 1 })).toThrow(ArgumentError);
  });
});
