// add on the GPU (SwiftShader here): a += b equals the f32 sum Math.fround(a + b) exactly, for odd
// n, over a 2-D grid of workgroups, leaving a past n untouched; and its argument errors.

import { beforeAll, describe, expect, it } from 'vitest';
import { readF32, uploadBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { submitPass } from '../gpu/kernel.ts';
import { randn, rng, testGpu, testSeed } from '../gpu/testing.ts';
import { ArgumentError } from '../errors.ts';
import { addCost, createAdd, type AddOptions } from './add.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';

let gpu: Gpu;
let cache: PipelineCache;
beforeAll(async () => {
  gpu = await testGpu();
  cache = new PipelineCache(gpu.device);
});

/** Elements of a past n: they must keep their values. */
const TAIL = 3;

async function checkAdd(n: number, options: AddOptions = {}): Promise<void> {
  const { device } = gpu;
  const next = rng(testSeed(`add n=${n}`));
  const a = randn(next, n + TAIL, 100);
  const b = randn(next, n, 0.01);
  const aBuf = uploadBuffer(device, a, 'a');
  const bBuf = uploadBuffer(device, b, 'b');
  const call = createAdd({ gpu, pipelines: cache }, options).prepare({ n, a: aBuf, b: bBuf });
  try {
    submitPass(device, call);
    const got = await readF32(device, aBuf, n + TAIL);
    const want = a.map((v, i) => (i < n ? Math.fround(v + b[i]) : v));
    const first = got.findIndex((v, i) => v !== want[i]);
    expect(first, first >= 0 ? `n=${n}: a[${first}] = ${got[first]}, want ${want[first]}` : '').toBe(-1);
  } finally {
    call.destroy();
    aBuf.destroy();
    bBuf.destroy();
  }
}

describe('add', () => {
  it.each([1, 1000, 70001])('n = %i', async (n) => checkAdd(n));

  it('spreads more workgroups than one dimension allows over two', async () => {
    const n = 70001;
    expect(n).toBeGreaterThan(gpu.device.limits.maxComputeWorkgroupsPerDimension);
    await checkAdd(n, { workgroupSize: 1 });
  });

  it('counts bytes and FLOPs', () => {
    expect(addCost(1000)).toEqual({ bytes: 12000, flops: 1000 });
  });

  it('refuses what it cannot compute with typed errors', () => {
    const buffer = (bytes: number) => gpu.device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
    const [a, b] = [buffer(40), buffer(36)];
    const add = createAdd({ gpu, pipelines: cache });
    expect(() => add.prepare({ n: 10, a, b })).toThrow(ArgumentError);
    expect(() => add.prepare({ n: 10, a, b })).toThrow(/b holds 36 bytes, n=10 needs 40/);
    expect(() => add.prepare({ n: 11, a, b: a, label: 'moe_out.3' })).toThrow(/moe_out.3: a and b must be different buffers/);
    expect(() => add.prepare({ n: 0, a, b })).toThrow(/n must be a positive integer, got 0/);
    expect(() => createAdd({ gpu, pipelines: cache }, { workgroupSize: 0 })).toThrow(/workgroupSize must be a positive integer, got 0/);
    a.destroy();
    b.destroy();
  });
});
