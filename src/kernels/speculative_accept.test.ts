// The acceptance kernel on the GPU (SwiftShader here) against its CPU reference: the same first
// output token for the same (seed, step) at odd vocabularies, drafts with q(d) > p(d) (rejections),
// q(d) < p(d) (always accepted), p(d) = 0 (a grammar-refused draft: never accepted), p and q cut by
// top-k / top-p, a draft vocabulary narrower than p's; and the frequencies of the whole rule
// (draft from q, accept or resample) against p by chi-square. Exact id equality is sound for the
// reason sample.test.ts gives: the GPU's f32 sums differ from the f64 reference by ~1e-7 relative.

import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { readU32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { keptDistribution, sampleUniform } from './sample.ref.ts';
import { NON_FINITE_ID } from './sample.ts';
import { createSpeculativeAccept, speculativeAcceptCost, type PreparedSpeculativeAccept } from './speculative_accept.ts';
import { draftSeed, speculativeAcceptRef } from './speculative_accept.ref.ts';

const POISON = 0xdeadbeef;

interface Draw {
  draft: number;
  y0: number;
  qRow: number;
  seed: number;
  step: number;
}

/** Runs one kernel call per draw, all in one submit (each with its own ids buffer), and reads every output id. */
async function runGpu(p: Float32Array, q: Float32Array, vocab: number, draftVocab: number, draws: Draw[], software = true): Promise<Uint32Array> {
  const { device } = await testGpu();
  const kernel = createSpeculativeAccept(await testKernelContext(), { software });
  const pBuf = uploadBuffer(device, p, 'p');
  const qBuf = uploadBuffer(device, q, 'q');
  const out = device.createBuffer({ size: 4 * draws.length, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  const idsBufs = draws.map((d) => uploadBuffer(device, new Uint32Array([d.y0, POISON]), 'ids'));
  device.pushErrorScope('validation');
  const calls: PreparedSpeculativeAccept[] = idsBufs.map((ids) => kernel.prepare({ vocab, draftVocab, qRows: q.length / draftVocab, p: pBuf, q: qBuf, ids }));
  draws.forEach((d, i) => calls[i].setDraft(d));
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  for (const call of calls) call.encode(pass);
  pass.end();
  idsBufs.forEach((ids, i) => encoder.copyBufferToBuffer(ids, 0, out, 4 * i, 4));
  device.queue.submit([encoder.finish()]);
  const got = await readU32(device, out, draws.length);
  // ids[1] is never written.
  expect((await readU32(device, idsBufs[0], 2))[1]).toBe(POISON);
  expect((await device.popErrorScope())?.message).toBeUndefined();
  for (const b of [pBuf, qBuf, out, ...idsBufs]) b.destroy();
  for (const c of calls) c.destroy();
  return got;
}

/** f32 kept distributions of random logits, as the sampler's probs variant writes them. */
function distribution(next: () => number, vocab: number, params: { temperature: number; topK: number; topP: number }): Float32Array {
  return Float32Array.from(keptDistribution(randn(next, vocab, 1), { ...params, seed: 0, step: 0 }));
}

/** Inverse-CDF draw in index order (the sampler's pick) with uniform u. */
function pick(dist: ArrayLike<number>, u: number): number {
  let total = 0;
  for (let j = 0; j < dist.length; j++) total += dist[j];
  let run = 0;
  let last = 0;
  for (let j = 0; j < dist.length; j++) {
    if (dist[j] <= 0) continue;
    run += dist[j];
    last = j;
    if (run > u * total) return j;
  }
  return last;
}

describe('speculative_accept kernel', () => {
  for (const software of [true, false]) {
    const variant = software ? 'software tuning' : 'GPU tuning';
    it(`gives the reference's first token for the same seed and step: drafts over and under p, p(d) = 0, top-k / top-p, narrower draft vocabularies (${variant})`, async () => {
      const seed = testSeed(`speculative_accept ref ${software}`);
      const next = rng(seed);
      const shapes = [
        { vocab: 37, draftVocab: 37, p: { temperature: 1, topK: 0, topP: 1 }, q: { temperature: 1, topK: 0, topP: 1 } },
        { vocab: 1000, draftVocab: 611, p: { temperature: 0.7, topK: 40, topP: 0.9 }, q: { temperature: 0.7, topK: 40, topP: 0.9 } },
        { vocab: 4099, draftVocab: 2048, p: { temperature: 1.2, topK: 0, topP: 0.8 }, q: { temperature: 0.5, topK: 7, topP: 1 } },
        { vocab: 301, draftVocab: 300, p: { temperature: 1, topK: 0, topP: 0.95 }, q: { temperature: 1, topK: 0, topP: 0.95 } },
      ];
      for (const [i, s] of shapes.entries()) {
        // Two rows of q; row 1 is the one drafted from (row 0 must not be read).
        const q = new Float32Array(2 * s.draftVocab).fill(1 / s.draftVocab);
        q.set(distribution(next, s.draftVocab, s.q), s.draftVocab);
        const q1 = q.subarray(s.draftVocab);
        // p near q, as a main model is near its draft, with one token of each kind: q's top token a
        // at half its q (q(a) > p(a) > 0: rejected at times), q's second b above its q (always
        // accepted), q's third c refused as by a grammar (p(c) = 0: never accepted); mixed with a
        // distribution of p's own (cut by its own top-k / top-p) that refuses a and c too.
        const order = Array.from(q1.keys()).sort((x, y) => q1[y] - q1[x]);
        const [ta, tb, tc] = order;
        const own = distribution(next, s.vocab, s.p);
        own[ta] = own[tc] = 0;
        const ownMass = own.reduce((x, y) => x + y, 0);
        const p = Float32Array.from({ length: s.vocab }, (_, j) => {
          const near = j === ta ? 0.5 * q1[ta] : j === tb ? q1[tb] + 0.5 * q1[ta] + q1[tc] : j === tc ? 0 : j < s.draftVocab ? q1[j] : 0;
          return 0.7 * near + (0.3 * own[j]) / ownMass;
        });
        const kinds = { over: 0, under: 0, refused: 0 };
        const draws: Draw[] = [];
        const drawSeed = (seed + i) >>> 0;
        for (let step = 0; step < 125; step++) {
          // 50 drafts sampled from q, then 25 each of a, b, c.
          const draft = step < 50 ? pick(q1, sampleUniform(draftSeed(drawSeed), step, 0)) : [ta, tb, tc][Math.floor((step - 50) / 25)];
          const y0 = pick(p, sampleUniform(drawSeed, step, 0));
          draws.push({ draft, y0, qRow: 1, seed: drawSeed, step: 1000 * i + step });
          if (p[draft] === 0) kinds.refused++;
          else if (q1[draft] > p[draft]) kinds.over++;
          else kinds.under++;
        }
        // Every kind of draft occurs (else the case would not test it).
        for (const n of Object.values(kinds)) expect(n, JSON.stringify(kinds)).toBeGreaterThan(0);
        const got = await runGpu(p, q, s.vocab, s.draftVocab, draws, software);
        let accepted = 0;
        draws.forEach((d, k) => {
          const want = speculativeAcceptRef({ p, q: q1, draft: d.draft, y0: d.y0, seed: d.seed, step: d.step });
          expect(got[k], `case ${i} draw ${k}: draft ${d.draft} p ${p[d.draft]} q ${q1[d.draft]}`).toBe(want);
          if (got[k] === d.draft) accepted++;
          if (p[d.draft] === 0) expect(got[k]).not.toBe(d.draft);
          if (q1[d.draft] <= p[d.draft]) expect(got[k]).toBe(d.draft);
          expect(p[got[k]], `case ${i}: output ${got[k]} has p = 0`).toBeGreaterThan(0);
        });
        expect(accepted).toBeGreaterThan(0);
        expect(accepted).toBeLessThan(draws.length);
      }
    });
  }

  it('outputs tokens distributed as p, drafts sampled from q (chi-square, 3000 draws, V = 13, draft vocab 9, top-p on q)', async () => {
    const seed = testSeed('speculative_accept chi-square');
    const next = rng(seed);
    const vocab = 13;
    const draftVocab = 9;
    const p = distribution(next, vocab, { temperature: 1, topK: 0, topP: 1 });
    p[4] = 0; // refused by a grammar: never output
    const z = p.reduce((a, b) => a + b, 0);
    for (let j = 0; j < vocab; j++) p[j] /= z;
    const q = distribution(next, draftVocab, { temperature: 0.6, topK: 0, topP: 0.9 });
    const N = 3000;
    const draws: Draw[] = Array.from({ length: N }, (_, step) => ({
      draft: pick(q, sampleUniform(draftSeed(seed), step, 0)),
      y0: pick(p, sampleUniform(seed, step, 0)),
      qRow: 0,
      seed,
      step,
    }));
    const got = await runGpu(p, q, vocab, draftVocab, draws);
    const counts = new Array(vocab).fill(0);
    for (const id of got) counts[id]++;
    expect(counts[4]).toBe(0);
    let chi2 = 0;
    let cells = 0;
    for (let j = 0; j < vocab; j++) {
      const e = N * p[j];
      if (e < 5) continue;
      chi2 += (counts[j] - e) ** 2 / e;
      cells++;
    }
    // 99.9% quantile of chi-square with <= 12 degrees of freedom is 32.9.
    expect(chi2, `counts ${counts} want ${Array.from(p, (x) => (N * x).toFixed(0))}`).toBeLessThan(32.9);
    expect(cells).toBeGreaterThan(4);
    // The acceptance is sum_j min(p_j, q_j).
    const want = Array.from(q, (qj, j) => Math.min(qj, p[j])).reduce((a, b) => a + b, 0);
    const accepted = got.filter((id, k) => id === draws[k].draft).length / N;
    expect(Math.abs(accepted - want)).toBeLessThan(4 * Math.sqrt(want / N) + 0.01);
  });

  it('keeps NON_FINITE_ID and y0 where the residual has no mass; rejects bad drafts, rows and buffers', async () => {
    const vocab = 5;
    const p = Float32Array.from([0.5, 0.5, 0, 0, 0]);
    const q = Float32Array.from([0.5, 0.5, 0, 0, 0]); // p = q: no residual anywhere
    const [nonFinite, same] = await runGpu(p, q, vocab, vocab, [
      { draft: 1, y0: NON_FINITE_ID, qRow: 0, seed: 1, step: 0 },
      { draft: 3, y0: 0, qRow: 0, seed: 1, step: 0 }, // q(d) = p(d) = 0: rejected, no residual: y0
    ]);
    expect(nonFinite).toBe(NON_FINITE_ID);
    expect(same).toBe(0);
    expect(speculativeAcceptRef({ p, q, draft: 3, y0: 0, seed: 1, step: 0 })).toBe(0);
    const { device } = await testGpu();
    const kernel = createSpeculativeAccept(await testKernelContext(), { software: true });
    const b = uploadBuffer(device, new Float32Array(8), 'b');
    const ids = uploadBuffer(device, new Uint32Array(1), 'ids');
    const args = { vocab: 8, draftVocab: 4, qRows: 2, p: b, q: b, ids };
    const call = kernel.prepare(args);
    expect(() => call.setDraft({ draft: 8, qRow: 0, seed: 0, step: 0 })).toThrow(ArgumentError);
    expect(() => call.setDraft({ draft: 0, qRow: 2, seed: 0, step: 0 })).toThrow(/q row 2/);
    expect(() => call.setDraft({ draft: 0, qRow: 0, seed: -1, step: 0 })).toThrow(/seed/);
    expect(() => kernel.prepare({ ...args, draftVocab: 9 })).toThrow(/exceeds vocab/);
    expect(() => kernel.prepare({ ...args, qRows: 3 })).toThrow(/q/);
    call.destroy();
    b.destroy();
    ids.destroy();
    expect(speculativeAcceptCost({ vocab: 10, draftVocab: 4 })).toEqual({ bytes: 8 * 14 + 4, flops: 40 });
  });
});
