// The sampling kernel on the GPU (SwiftShader here) against the sorting reference: argmax exactly
// (ties included), sampled ids equal to the reference's for the same (seed, step, row) over many
// draws and settings, and the frequencies of 4000 draws against the kept distribution.
// Exact id equality is sound because the logits are well separated: the GPU's f32 masses differ
// from the f64 reference by ~1e-7 relative, so a uniform or a top-p target landing that close
// to a boundary is ~1e-6 likely per draw.

import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { readF32, readU32, uploadBuffer } from '../gpu/buffers.ts';
import { randn, rng, testGpu, testKernelContext, testSeed } from '../gpu/testing.ts';
import { createSample, NON_FINITE_ID, sampleCost, tokenMaskWords, type Sample, type SamplingParams } from './sample.ts';
import { keptDistribution, maskLogitsRef, pcgHash, sampleProbsRef, sampleRef, sampleUniform } from './sample.ref.ts';
import { submitPass } from '../gpu/kernel.ts';

const POISON = 0xdeadbeef;
const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0, step: 0 };

const kernels = new Map<boolean, Sample>();
async function pipelineFor(software: boolean): Promise<Sample> {
  let p = kernels.get(software);
  if (!p) {
    p = createSample(await testKernelContext(), { software });
    kernels.set(software, p);
  }
  return p;
}

/** Runs the kernel once per entry of `steps` (setSampling between), returns the ids of each. */
async function runGpu(
  logits: Float32Array,
  rows: number,
  vocab: number,
  sampling: SamplingParams,
  isSoftware: boolean,
  steps: number[] = [sampling.step],
  tokenMask?: Uint32Array,
): Promise<Uint32Array[]> {
  const { device } = await testGpu();
  const kernel = await pipelineFor(isSoftware);
  const logitsBuf = uploadBuffer(device, logits, 'logits');
  const idsBuf = uploadBuffer(device, new Uint32Array(rows).fill(POISON), 'ids');
  const maskBuf = tokenMask ? uploadBuffer(device, tokenMask, 'token_mask') : undefined;
  device.pushErrorScope('validation');
  const op = kernel.prepare({ rows, vocab, logits: logitsBuf, ids: idsBuf, sampling, tokenMask: maskBuf });
  const out: Uint32Array[] = [];
  for (const step of steps) {
    op.setSampling({ ...sampling, step });
    submitPass(device, op);
    out.push(await readU32(device, idsBuf, rows));
    // Poison again, so that a run that writes nothing cannot pass on the previous ids.
    device.queue.writeBuffer(idsBuf, 0, new Uint32Array(rows).fill(POISON));
  }
  expect((await device.popErrorScope())?.message).toBeUndefined();
  op.destroy();
  logitsBuf.destroy();
  idsBuf.destroy();
  maskBuf?.destroy();
  return out;
}

function expectIds(got: Uint32Array, want: Uint32Array, what: string): void {
  const bad = Array.from(want.keys()).filter((r) => got[r] !== want[r]);
  const first = bad[0];
  expect(bad.length, `${what}: ${bad.length} rows differ, first row ${first}: got ${got[first]} want ${want[first]}`).toBe(0);
}

/** Logits with the row maximum repeated at a few random places (argmax ties). */
function logitsWithTies(next: () => number, rows: number, vocab: number): Float32Array {
  const x = randn(next, rows * vocab, 2);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * vocab, (r + 1) * vocab);
    const top = Math.max(...row.subarray(0, Math.min(vocab, 4096))) + 1;
    for (let t = 0; t < 3; t++) row[Math.floor(next() * vocab)] = top;
  }
  return x;
}

describe('sample kernel', () => {
  for (const isSoftware of [true, false]) {
    const variant = isSoftware ? 'software tuning' : 'GPU tuning';

    it(`argmax at temperature 0, ties to the lowest index (${variant})`, async () => {
      const next = rng(testSeed(`sample argmax ${isSoftware}`));
      for (const [rows, vocab] of [[1, 1], [2, 7], [3, 301], [4, 1000], [4, 129280]]) {
        const logits = logitsWithTies(next, rows, vocab);
        const [got] = await runGpu(logits, rows, vocab, GREEDY, isSoftware);
        expectIds(got, sampleRef({ rows, vocab, logits, params: GREEDY }), `argmax ${rows}x${vocab}`);
      }
    });

    it(`marks a row with a NaN or +inf logit, or only -inf ones, with NON_FINITE_ID; -inf beside finite logits is fine (${variant})`, async () => {
      const vocab = 301;
      const next = rng(testSeed(`sample non-finite ${isSoftware}`));
      const rows = 5;
      const logits = randn(next, rows * vocab, 2);
      logits[0 * vocab + 17] = Number.NaN; // row 0: one NaN, deep in the row
      logits[1 * vocab + 300] = Number.POSITIVE_INFINITY; // row 1: +inf at the last index
      logits.fill(Number.NEGATIVE_INFINITY, 2 * vocab, 3 * vocab); // row 2: all -inf
      for (let j = 0; j < vocab; j += 2) logits[3 * vocab + j] = Number.NEGATIVE_INFINITY; // row 3: masked half, fine
      // row 4: untouched
      for (const sampling of [GREEDY, { temperature: 0.8, topK: 50, topP: 0.9, seed: 3, step: 1 }]) {
        const [got] = await runGpu(logits, rows, vocab, sampling, isSoftware);
        expect(Array.from(got.subarray(0, 3)), `temperature ${sampling.temperature}`).toEqual([NON_FINITE_ID, NON_FINITE_ID, NON_FINITE_ID]);
        for (const r of [3, 4]) expect(got[r], `row ${r}`).toBeLessThan(vocab);
      }
      const [masked] = await runGpu(logits.subarray(3 * vocab, 4 * vocab), 1, vocab, GREEDY, isSoftware);
      expect(masked[0] % 2).toBe(1); // the argmax of the finite (odd) tokens
    });

    it(`samples the reference's ids for the same seed and step (${variant})`, async () => {
      const seed = testSeed(`sample ids ${isSoftware}`);
      const next = rng(seed);
      const settings: Partial<SamplingParams>[] = [
        { temperature: 1, topK: 0, topP: 1 },
        { temperature: 0.7, topK: 17, topP: 1 },
        { temperature: 1.3, topK: 0, topP: 0.8 },
        { temperature: 0.8, topK: 40, topP: 0.9 },
        { temperature: 1, topK: 1, topP: 1 },
        { temperature: 1, topK: 0, topP: 0 },
      ];
      for (const [i, s] of settings.entries()) {
        for (const [rows, vocab] of [[1 + (i % 4), 301], [6, 1000], [3, 7]]) {
          const sampling = { seed: (seed + i) >>> 0, step: 0, topK: 0, topP: 1, temperature: 1, ...s };
          const logits = randn(next, rows * vocab, 3);
          const steps = [0, 1000 + i];
          const got = await runGpu(logits, rows, vocab, sampling, isSoftware, steps);
          for (const [k, step] of steps.entries()) {
            const want = sampleRef({ rows, vocab, logits, params: { ...sampling, step } });
            expectIds(got[k], want, `${JSON.stringify(sampling)} step ${step} ${rows}x${vocab}`);
          }
        }
      }
    });

    it(`never picks a token its row's mask refuses, and otherwise picks what the reference does (${variant})`, async () => {
      const seed = testSeed(`sample mask ${isSoftware}`);
      const next = rng(seed);
      // Odd vocabularies (a partial last mask word), a few allowed tokens per row or most of them,
      // and the row's unmasked argmax always refused, so that ignoring the mask cannot pass.
      for (const [rows, vocab, density] of [[3, 301, 0.05], [2, 1000, 0.6], [4, 37, 0.2], [1, 129280, 0.01]] as const) {
        const logits = randn(next, rows * vocab, 3);
        const words = tokenMaskWords(vocab);
        const mask = new Uint32Array(rows * words);
        for (let r = 0; r < rows; r++) {
          const row = logits.subarray(r * vocab, (r + 1) * vocab);
          let top = 0;
          for (let j = 1; j < vocab; j++) if (row[j] > row[top]) top = j;
          for (let j = 0; j < vocab; j++) if (j !== top && (next() < density || j === (top + 1) % vocab)) mask[r * words + (j >>> 5)] |= 1 << (j & 31);
        }
        const allowed = (r: number, id: number) => ((mask[r * words + (id >>> 5)] >>> (id & 31)) & 1) === 1;
        for (const s of [GREEDY, { temperature: 1, topK: 0, topP: 1 }, { temperature: 0.8, topK: 40, topP: 0.9 }, { temperature: 1.2, topK: 0, topP: 0.7 }]) {
          const sampling = { seed: seed >>> 0, step: 3, ...s };
          const [got] = await runGpu(logits, rows, vocab, sampling, isSoftware, [3], mask);
          const want = sampleRef({ rows, vocab, logits, params: sampling, tokenMask: mask });
          expectIds(got, want, `masked ${JSON.stringify(s)} ${rows}x${vocab}`);
          for (let r = 0; r < rows; r++) expect(allowed(r, got[r]), `row ${r} picked refused token ${got[r]}`).toBe(true);
        }
      }
      // The reference's mask: the refused logits at -inf, the rest untouched.
      expect(Array.from(maskLogitsRef(Float32Array.from([1, 2, 3]), 1, 3, Uint32Array.from([0b101])))).toEqual([1, -Infinity, 3]);
    });

    it(`keeps the lowest indices among logits tied at the top-k and top-p cuts (${variant})`, async () => {
      const next = rng(testSeed(`sample ties ${isSoftware}`));
      const rows = 8;
      const vocab = 64;
      // Logits from 9 levels: many exact ties at every cut.
      const logits = Float32Array.from({ length: rows * vocab }, () => Math.floor(next() * 9) - 4);
      for (const s of [{ topK: 10, topP: 1 }, { topK: 0, topP: 0.5 }, { topK: 13, topP: 0.7 }]) {
        const sampling = { temperature: 1, seed: 7, step: 0, ...s };
        const got = await runGpu(logits, rows, vocab, sampling, isSoftware, [0, 1]);
        for (let step = 0; step < 2; step++) {
          const want = sampleRef({ rows, vocab, logits, params: { ...sampling, step } });
          expectIds(got[step], want, `ties ${JSON.stringify(s)} step ${step}`);
        }
      }
    });
  }

  it('writes the kept distribution beside the ids (probs variant: sampled drafts), masked or not, at odd shapes', async () => {
    const seed = testSeed('sample probs');
    const next = rng(seed);
    const { device } = await testGpu();
    for (const software of [true, false]) {
      const kernel = await pipelineFor(software);
      for (const [rows, vocab] of [[2, 301], [1, 2048], [3, 37]] as const) {
        const logits = randn(next, rows * vocab, 2);
        if (rows === 3) logits[2 * vocab + 5] = Number.NaN; // a row without a finite maximum: all 0
        const words = tokenMaskWords(vocab);
        const mask = Uint32Array.from({ length: rows * words }, () => (next() * 2 ** 32) >>> 0);
        for (const s of [GREEDY, { temperature: 1, topK: 0, topP: 1 }, { temperature: 0.7, topK: 13, topP: 0.9 }, { temperature: 1.3, topK: 0, topP: 0.6 }]) {
          for (const tokenMask of [undefined, mask]) {
            const sampling = { seed: seed >>> 0, step: 4, ...s };
            const what = `${JSON.stringify(s)} ${rows}x${vocab}${tokenMask ? ' masked' : ''} ${software ? 'software' : 'GPU'}`;
            const logitsBuf = uploadBuffer(device, logits, 'logits');
            const idsBuf = uploadBuffer(device, new Uint32Array(rows).fill(POISON), 'ids');
            const probsBuf = uploadBuffer(device, new Float32Array(rows * vocab).fill(-1), 'probs');
            const maskBuf = tokenMask ? uploadBuffer(device, tokenMask, 'mask') : undefined;
            device.pushErrorScope('validation');
            const op = kernel.prepare({ rows, vocab, logits: logitsBuf, ids: idsBuf, probs: probsBuf, tokenMask: maskBuf, sampling });
            submitPass(device, op);
            const ids = await readU32(device, idsBuf, rows);
            const probs = await readF32(device, probsBuf, rows * vocab);
            expect((await device.popErrorScope())?.message).toBeUndefined();
            op.destroy();
            for (const b of [logitsBuf, idsBuf, probsBuf, maskBuf]) b?.destroy();
            // The ids are the plain variant's.
            const [plainIds] = await runGpu(logits, rows, vocab, sampling, software, [sampling.step], tokenMask);
            expectIds(ids, plainIds, `${what}: ids`);
            for (let r = 0; r < rows; r++) {
              const row = probs.subarray(r * vocab, (r + 1) * vocab);
              if (ids[r] === NON_FINITE_ID) {
                expect(row.every((x) => x === 0), `${what}: row ${r} without a finite maximum`).toBe(true);
                continue;
              }
              const want = sampleProbsRef({ rows: 1, vocab, logits: logits.subarray(r * vocab, (r + 1) * vocab), params: sampling, tokenMask: tokenMask?.subarray(r * words, (r + 1) * words) });
              let worst = 0;
              for (let j = 0; j < vocab; j++) {
                // The kept set exactly (0 outside), the values to f32 rounding.
                expect(row[j] === 0, `${what}: row ${r} token ${j}: got ${row[j]} want ${want[j]}`).toBe(want[j] === 0);
                worst = Math.max(worst, Math.abs(row[j] - want[j]));
              }
              expect(worst, `${what}: row ${r}`).toBeLessThan(1e-6);
              expect(row[ids[r]], `${what}: row ${r} picked a token outside its distribution`).toBeGreaterThan(0);
            }
          }
        }
      }
    }
  });

  it('draws with the kept distribution (4000 draws, V = 7, T = 0.8, top-k 5, top-p 0.9)', async () => {
    const vocab = 7;
    const rows = 1000;
    const row = Float32Array.from([0.3, 1.2, -0.5, 0.9, 1.5, -1.0, 0.1]);
    const logits = new Float32Array(rows * vocab);
    for (let r = 0; r < rows; r++) logits.set(row, r * vocab);
    const sampling = { temperature: 0.8, topK: 5, topP: 0.9, seed: 12345, step: 0 };
    const expected = keptDistribution(row, sampling);
    // Top-k 5 drops tokens 5 and 2; top-p 0.9 then drops token 6 (the 5th), as computed by hand.
    expect(Array.from(expected, (p) => p > 0)).toEqual([true, true, false, true, true, false, false]);
    // 4 steps of 1000 rows, each row a distinct token index step + row (its own uniform)
    const draws = await runGpu(logits, rows, vocab, sampling, true, [0, rows, 2 * rows, 3 * rows]);
    const freq = new Float64Array(vocab);
    for (const ids of draws) for (const id of ids) freq[id] += 1 / (rows * draws.length);
    const err = Math.max(...Array.from(freq, (f, j) => Math.abs(f - expected[j])));
    expect(err, `freq ${Array.from(freq)} want ${Array.from(expected)}`).toBeLessThan(0.03);
  });

  it('samples a 129280-token row (timed, checked against the reference)', async () => {
    const vocab = 129280;
    const next = rng(testSeed('sample full vocab'));
    const logits = randn(next, vocab, 3);
    const sampling = { temperature: 0.8, topK: 50, topP: 0.9, seed: 99, step: 5 };
    await runGpu(logits, 1, vocab, GREEDY, true); // compile and upload outside the timing
    const t0 = performance.now();
    const [got] = await runGpu(logits, 1, vocab, sampling, true);
    console.log(`[time] sample 1x${vocab} top-k 50 top-p 0.9 (software variant): ${(performance.now() - t0).toFixed(0)} ms`);
    expectIds(got, sampleRef({ rows: 1, vocab, logits, params: sampling }), 'full vocab');
    // The same with a token mask (every other token allowed): the mask's cost in the sampler, upload included.
    const mask = new Uint32Array(tokenMaskWords(vocab)).fill(0x55555555);
    await runGpu(logits, 1, vocab, GREEDY, true, [0], mask);
    const t1 = performance.now();
    const [masked] = await runGpu(logits, 1, vocab, sampling, true, [sampling.step], mask);
    console.log(`[time] the same with a token mask (${4 * mask.length} B): ${(performance.now() - t1).toFixed(0)} ms`);
    expectIds(masked, sampleRef({ rows: 1, vocab, logits, params: sampling, tokenMask: mask }), 'full vocab, masked');
  });

  it('hashes in u32 arithmetic like a BigInt PCG', () => {
    const big = (v: number): number => {
      const M = 0xffffffffn;
      const state = (BigInt(v) * 747796405n + 2891336453n) & M;
      const word = (((state >> ((state >> 28n) + 4n)) ^ state) * 277803737n) & M;
      return Number((word >> 22n) ^ word);
    };
    for (const v of [0, 1, 12345, 0x7fffffff, 0x80000000, 0xffffffff]) expect(pcgHash(v)).toBe(big(v));
    const u = sampleUniform(1, 2, 3);
    expect(u).toBeGreaterThanOrEqual(0);
    expect(u).toBeLessThan(1);
    expect(sampleUniform(1, 3, 3)).not.toBe(u);
    // keyed by the token index step + row; row 0 is hash(hash(hash(seed) + step))
    expect(sampleUniform(1, 2, 3)).toBe(sampleUniform(1, 5, 0));
    expect(sampleUniform(7, 4, 0)).toBe((pcgHash(pcgHash((pcgHash(7) + 4) >>> 0)) >>> 8) / 16777216);
  });

  it('rejects bad settings and too-small buffers', async () => {
    const { device } = await testGpu();
    const kernel = await pipelineFor(true);
    const b = uploadBuffer(device, new Float32Array(8), 'b');
    const args = { rows: 2, vocab: 4, logits: b, ids: b, sampling: GREEDY };
    expect(() => kernel.prepare({ ...args, sampling: { ...GREEDY, topP: 1.5 } })).toThrow(ArgumentError);
    expect(() => kernel.prepare({ ...args, sampling: { ...GREEDY, temperature: -1 } })).toThrow(/temperature/);
    expect(() => kernel.prepare({ ...args, sampling: { ...GREEDY, topK: 2.5 } })).toThrow(/top_k/);
    expect(() => kernel.prepare({ ...args, rows: 3 })).toThrow(/needs 48/);
    const short = uploadBuffer(device, new Uint32Array(1), 'short mask'); // 2 rows need 2 words
    expect(() => kernel.prepare({ ...args, tokenMask: short })).toThrow(/tokenMask/);
    short.destroy();
    b.destroy();
  });

  it('counts bytes and FLOPs', () => {
    expect(sampleCost({ rows: 2, vocab: 10, sampling: GREEDY, radixBits: 2 })).toEqual({ bytes: 4 * 20 + 8, flops: 20 });
    const sampling = { temperature: 1, topK: 5, topP: 0.9, seed: 0, step: 0 };
    // 1 max + 1 pick + 2 searches of 32 / 4 digit passes + 3 passes each
    expect(sampleCost({ rows: 1, vocab: 10, sampling, radixBits: 4 })).toEqual({ bytes: 4 * 10 * 24 + 4, flops: 10 * (1 + 4 * 23) });
    // The probs variant: 2 more passes (total, write) and the row written.
    expect(sampleCost({ rows: 1, vocab: 10, sampling, radixBits: 4, withProbs: true })).toEqual({ bytes: 4 * 10 * 26 + 4 + 40, flops: 10 * (1 + 4 * 25) });
  });
});
