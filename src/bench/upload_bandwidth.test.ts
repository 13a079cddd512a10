// The upload bandwidth of an expert miss, on a tiny size: a positive, finite figure; every chunk
// lands where it belongs (the last one shorter); sizes writeBuffer cannot take are refused.

import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { readBuffer } from '../gpu/buffers.ts';
import { rng, testGpu, testSeed } from '../gpu/testing.ts';
import { measureUploadBandwidth, uploadInChunks } from './upload_bandwidth.ts';

describe('measureUploadBandwidth', () => {
  it('gives a positive, finite GB/s for a size the chunks do not divide', async () => {
    const { device } = await testGpu();
    const r = await measureUploadBandwidth(device, { bytes: 64 * 1024 + 12, chunkBytes: 4096, runs: 2 });
    expect(r.bytes).toBe(64 * 1024 + 12);
    expect(r.runs).toBe(2);
    expect(r.bestMs).toBeGreaterThan(0);
    expect(Number.isFinite(r.gbps)).toBe(true);
    expect(r.gbps).toBeGreaterThan(0);
    expect(r.gbps).toBeCloseTo(r.bytes / (r.bestMs * 1e6), 9);
  });

  it('uploads every chunk to its offset, the short last one included', async () => {
    const { device } = await testGpu();
    const random = rng(testSeed('uploadInChunks'));
    const chunk = 4 * (1 + Math.floor(random() * 64));
    const bytes = chunk * (2 + Math.floor(random() * 5)) + 4 * Math.floor(random() * (chunk / 4)); // a remainder of 0 .. chunk - 4
    const host = Uint8Array.from({ length: bytes }, () => Math.floor(random() * 256));
    const target = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    try {
      uploadInChunks(device, target, host, chunk);
      expect(new Uint8Array(await readBuffer(device, target))).toEqual(host);
    } finally {
      target.destroy();
    }
  });

  it('refuses a size of zero, one that is not a multiple of 4, and one over maxBufferSize', async () => {
    const { device } = await testGpu();
    await expect(measureUploadBandwidth(device, { bytes: 0, chunkBytes: 4096 })).rejects.toThrow(ArgumentError);
    await expect(measureUploadBandwidth(device, { bytes: 4096, chunkBytes: 0 })).rejects.toThrow(ArgumentError);
    await expect(measureUploadBandwidth(device, { bytes: 4098, chunkBytes: 4096 })).rejects.toThrow(/multiple of 4/);
    await expect(measureUploadBandwidth(device, { bytes: 4096, chunkBytes: 1026 })).rejects.toThrow(/chunkBytes must be a positive multiple of 4/);
    const over = 4 * (Math.floor(device.limits.maxBufferSize / 4) + 1);
    await expect(measureUploadBandwidth(device, { bytes: over, chunkBytes: 4096 })).rejects.toThrow(/maxBufferSize/);
    await expect(measureUploadBandwidth(device, { bytes: 4096, chunkBytes: 4096, runs: 0 })).rejects.toThrow(ArgumentError);
  });
});
