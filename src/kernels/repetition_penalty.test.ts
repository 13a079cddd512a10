// repetition_penalty on the GPU (SwiftShader here) against repetitionPenaltyRef, bit for bit: odd
// vocab (1, 33, 1000, 8193), rows 1 and 2, repeated ids, ids 0 and vocab - 1, positive, negative,
// +-0 and huge logits (a product that overflows to -inf), penalties 1.3 and 0.8, penalty 1 leaving
// every bit (NaN payloads included) as it was, setPenalty, mask bits past vocab and logits past
// rows * vocab left alone, a 2-D grid of workgroups; and the argument errors.

import { beforeAll, describe, expect, it } from 'vitest';
import { readU32, uploadBuffer, writeBufferPadded } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { submitPass } from '../gpu/kernel.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import {
  createRepetitionPenalty,
  presenceMask,
  repetitionPenaltyCost,
  type RepetitionPenaltyOptions,
} from './repetition_penalty.ts';
import { repetitionPenaltyRef } from './repetition_penalty.ref.ts';

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

/** Logits past rows * vocab in the buffer: they must keep their bits. */
const TAIL = 5;
const bitsOf = (values: Float32Array) => new Uint32Array(values.buffer, values.byteOffset, values.length);

/** Random logits of both signs, with zeros, -0 and values near the f32 limits at the seen edge ids. */
function randomLogits(rows: number, vocab: number, next: () => number): Float32Array {
  const logits = randn(next, rows * vocab + TAIL, 5);
  for (let i = 0; i < logits.length; i += 7) logits[i] = 0;
  for (let i = 3; i < logits.length; i += 11) logits[i] = -0;
  logits[rows * vocab - 1] = -3e38; // * 1.3 overflows to -inf, as in torch
  logits[0] = 3e38;
  return logits;
}

/** Ids with repeats, 0 and vocab - 1, and about a third of the vocabulary seen. */
function seenIds(vocab: number, next: () => number): number[] {
  const ids = Array.from({ length: Math.ceil(vocab / 3) }, () => Math.floor(next() * vocab));
  return [0, ...ids, vocab - 1, ids[0], 0, vocab - 1];
}

interface Case {
  rows: number;
  vocab: number;
  penalty: number;
  logits: Float32Array;
  ids: number[];
  /** The mask uploaded instead of presenceMask(vocab, ids). */
  mask?: Uint32Array;
  options?: RepetitionPenaltyOptions;
}

async function runPenalty({ rows, vocab, penalty, logits, ids, mask, options }: Case): Promise<Uint32Array> {
  const { device } = gpu;
  const logitsBuf = uploadBuffer(device, logits, 'logits');
  const maskBuf = uploadBuffer(device, mask ?? presenceMask(vocab, ids), 'mask');
  const call = createRepetitionPenalty({ gpu, pipelines: cache }, options).prepare({ rows, vocab, logits: logitsBuf, mask: maskBuf, penalty });
  try {
    submitPass(device, call);
    return await readU32(device, logitsBuf, logits.length);
  } finally {
    call.destroy();
    logitsBuf.destroy();
    maskBuf.destroy();
  }
}

/** The reference over rows * vocab, the tail unchanged. */
function expected(rows: number, vocab: number, logits: Float32Array, ids: number[], penalty: number): Float32Array {
  const want = Float32Array.from(logits);
  want.set(repetitionPenaltyRef(logits.subarray(0, rows * vocab), rows, vocab, ids, penalty));
  return want;
}

function expectBits(got: Uint32Array, want: Float32Array, what: string): void {
  const wantBits = bitsOf(want);
  const first = got.findIndex((bits, i) => bits !== wantBits[i]);
  const show = (bits: number) => `${new Float32Array(new Uint32Array([bits]).buffer)[0]} (0x${bits.toString(16)})`;
  expect(first, first >= 0 ? `${what}: logits[${first}] = ${show(got[first])}, want ${show(wantBits[first])}` : '').toBe(-1);
}

describe('repetitionPenaltyRef', () => {
  it('divides positive logits, multiplies the others, once per distinct id, on every row', () => {
    const logits = new Float32Array([2, -2, 0, 3, 4, -1, -0, 5]);
    const got = repetitionPenaltyRef(logits, 2, 4, [0, 1, 2, 0, 2], 2);
    expect(Array.from(got)).toEqual([1, -4, 0, 3, 2, -2, -0, 5]);
    expect(Object.is(got[6], -0)).toBe(true);
    expect(Array.from(logits)).toEqual([2, -2, 0, 3, 4, -1, -0, 5]); // input untouched
  });

  it('computes in f32: the penalty and each result rounded to f32', () => {
    const got = repetitionPenaltyRef(new Float32Array([1, -1]), 1, 2, [0, 1], 1.3);
    expect(got[0]).toBe(Math.fround(1 / Math.fround(1.3)));
    expect(got[1]).toBe(Math.fround(-Math.fround(1.3)));
  });
});

describe('presenceMask', () => {
  it('sets bit id % 32 of word id / 32, once for repeats', () => {
    expect(Array.from(presenceMask(33, [0, 31, 32, 0, 31]))).toEqual([0x80000001, 1]);
    expect(Array.from(presenceMask(64, []))).toEqual([0, 0]);
    expect(Array.from(presenceMask(1, new Set([0])))).toEqual([1]);
  });

  it('refuses ids outside the vocabulary', () => {
    for (const id of [-1, 33, 1.5, Number.NaN]) {
      expect(() => presenceMask(33, [2, id])).toThrow(ArgumentError);
    }
    expect(() => presenceMask(33, [33])).toThrow(/token id 33 is outside the vocabulary \[0, 33\)/);
    expect(() => presenceMask(0, [])).toThrow(/vocab must be a positive integer, got 0/);
  });
});

describe('repetition_penalty', () => {
  const shapes = [1, 33, 1000, 8193].flatMap((vocab) => [1, 2].map((rows) => ({ rows, vocab })));

  it.each(shapes)('rows=$rows vocab=$vocab, penalties 1.3 and 0.8', async ({ rows, vocab }) => {
    const next = rng(testSeed(`repetition_penalty rows=${rows} vocab=${vocab}`));
    const logits = randomLogits(rows, vocab, next);
    const ids = seenIds(vocab, next);
    for (const penalty of [1.3, 0.8]) {
      const got = await runPenalty({ rows, vocab, penalty, logits, ids });
      expectBits(got, expected(rows, vocab, logits, ids, penalty), `rows=${rows} vocab=${vocab} penalty=${penalty}`);
    }
  });

  it('penalty 1 leaves every bit as it was, NaN payloads included', async () => {
    const [rows, vocab] = [2, 1000];
    const logits = randomLogits(rows, vocab, rng(testSeed('repetition_penalty penalty=1')));
    const bits = bitsOf(logits);
    bits[5] = 0x7fc01234; // quiet NaN with a payload
    bits[rows * vocab - 2] = 0xffc00001;
    const ids = Array.from({ length: vocab }, (_, j) => j); // every id seen
    const got = await runPenalty({ rows, vocab, penalty: 1, logits, ids });
    expectBits(got, logits, 'penalty=1');
  });

  it('setPenalty changes the penalty of a prepared call', async () => {
    const { device } = gpu;
    const [rows, vocab] = [2, 33];
    const logits = randomLogits(rows, vocab, rng(testSeed('repetition_penalty setPenalty')));
    const ids = [0, 5, 32, 5];
    const logitsBuf = uploadBuffer(device, logits, 'logits');
    const maskBuf = uploadBuffer(device, presenceMask(vocab, ids), 'mask');
    const call = createRepetitionPenalty({ gpu, pipelines: cache }).prepare({ rows, vocab, logits: logitsBuf, mask: maskBuf, penalty: 1 });
    try {
      for (const penalty of [1.3, 0.8, 1]) {
        call.setPenalty(penalty);
        writeBufferPadded(device, logitsBuf, 0, logits);
        submitPass(device, call);
        expectBits(await readU32(device, logitsBuf, logits.length), expected(rows, vocab, logits, ids, penalty), `setPenalty(${penalty})`);
      }
    } finally {
      call.destroy();
      logitsBuf.destroy();
      maskBuf.destroy();
    }
  });

  it('ignores mask bits past vocab', async () => {
    const [rows, vocab] = [2, 33];
    const logits = randomLogits(rows, vocab, rng(testSeed('repetition_penalty mask garbage')));
    const ids = [1, 32];
    const mask = presenceMask(vocab, ids);
    mask[1] |= 0xfffffffe; // ids 33..63 do not exist: they would land on row 1 and past the rows
    const got = await runPenalty({ rows, vocab, penalty: 1.3, logits, ids, mask });
    expectBits(got, expected(rows, vocab, logits, ids, 1.3), 'garbage mask bits');
  });

  it('spreads more workgroups than one dimension allows over two', async () => {
    const vocab = 32 * 70001 - 3;
    const words = Math.ceil(vocab / 32);
    expect(words).toBeGreaterThan(gpu.device.limits.maxComputeWorkgroupsPerDimension);
    const next = rng(testSeed('repetition_penalty 2-D grid'));
    const logits = randomLogits(1, vocab, next);
    const ids = [0, 12345, vocab - 1, ...Array.from({ length: 2000 }, () => Math.floor(next() * vocab))];
    const got = await runPenalty({ rows: 1, vocab, penalty: 1.3, logits, ids, options: { workgroupSize: 1 } });
    expectBits(got, expected(1, vocab, logits, ids, 1.3), '2-D grid');
  });

  it('counts the mask bytes', () => {
    expect(repetitionPenaltyCost({ rows: 2, vocab: 129280 })).toEqual({ bytes: 2 * 4 * 4040, flops: 0 });
  });

  it('refuses what it cannot compute with typed errors', () => {
    const buffer = (bytes: number) => gpu.device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
    const [logits, mask, smallMask] = [buffer(2 * 4 * 33), buffer(8), buffer(4)];
    const penalty = createRepetitionPenalty({ gpu, pipelines: cache });
    const args = { rows: 2, vocab: 33, logits, mask, penalty: 1.3 };
    expect(() => penalty.prepare({ ...args, rows: 3 })).toThrow(ArgumentError);
    expect(() => penalty.prepare({ ...args, rows: 3 })).toThrow(/logits holds 264 bytes, rows=3 vocab=33 needs 396/);
    expect(() => penalty.prepare({ ...args, mask: smallMask })).toThrow(/mask holds 4 bytes, rows=2 vocab=33 needs 8/);
    expect(() => penalty.prepare({ ...args, mask: logits, label: 'penalty.decode' })).toThrow(
      /penalty.decode: logits and mask must be different buffers/,
    );
    expect(() => penalty.prepare({ ...args, rows: 0 })).toThrow(/rows must be a positive integer, got 0/);
    expect(() => penalty.prepare({ ...args, vocab: 2.5 })).toThrow(/vocab must be a positive integer, got 2.5/);
    // 1e-50 and 1e39 are finite and positive as doubles but 0 and Infinity in the f32 uniform.
    for (const bad of [0, -1.3, Number.NaN, Infinity, 1e-50, 1e39]) {
      expect(() => penalty.prepare({ ...args, penalty: bad })).toThrow(ArgumentError);
    }
    expect(() => penalty.prepare({ ...args, penalty: -2 })).toThrow(/penalty must be a finite number > 0 \(1 = no penalty\), got -2/);
    const call = penalty.prepare(args);
    expect(() => call.setPenalty(0)).toThrow(/penalty must be a finite number > 0/);
    call.destroy();
    expect(() => createRepetitionPenalty({ gpu, pipelines: cache }, { workgroupSize: 0 })).toThrow(/workgroupSize must be a positive integer, got 0/);
    for (const b of [logits, mask, smallMask]) b.destroy();
  });
});
