import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, ArgumentError } from '../errors.ts';
import { createStorageBuffer, readBuffer } from '../gpu/buffers.ts';
import { rng, testGpu, testSeed } from '../gpu/testing.ts';
import { nodeDir } from './node_source.ts';
import { readSafetensorsHeader, type TensorInfo } from './safetensors.ts';
import { writeSafetensors } from './safetensors_write.ts';
import type { ByteSource } from './sources.ts';
import { ProgressCounter, streamTensors, uploadTensor, uploadTensors, type LoadProgress } from './stream_to_gpu.ts';

// A file whose tensors have odd lengths and start at offsets that are not multiples of 4.
const next = rng(testSeed('stream_to_gpu'));
const random = (n: number) => new Uint8Array(n).map(() => Math.floor(next() * 256));
const data: Record<string, Uint8Array> = { odd7: random(7), f32: random(60), f8: random(13), bf16: random(10), big: random(1001), last: random(3) };
const file = writeSafetensors({
  odd7: { dtype: 'U8', shape: [7], data: data.odd7 },
  f32: { dtype: 'F32', shape: [3, 5], data: data.f32 },
  f8: { dtype: 'F8_E4M3', shape: [13], data: data.f8 },
  bf16: { dtype: 'BF16', shape: [5], data: data.bf16 },
  big: { dtype: 'U8', shape: [7, 11, 13], data: data.big },
  last: { dtype: 'U8', shape: [3], data: data.last },
});

let tmp: string;
let source: ByteSource;
let tensors: Map<string, TensorInfo>;
const reads: [number, number][] = [];
beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'webmoe-stream-'));
  writeFileSync(join(tmp, 'model.safetensors'), file);
  const inner = await nodeDir(tmp).open('model.safetensors');
  source = { name: inner.name, size: inner.size, read: (o, l, s) => (reads.push([o, l]), inner.read(o, l, s)) };
  tensors = new Map((await readSafetensorsHeader(source)).tensors);
  expect([...tensors.values()].some((t) => t.byteOffset % 4 !== 0)).toBe(true);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function gpuBytes(buffer: GPUBuffer, length: number, offset = 0): Promise<Uint8Array> {
  const { device } = await testGpu();
  return new Uint8Array(await readBuffer(device, buffer, length, offset));
}

describe('uploadTensor', () => {
  for (const chunkBytes of [4, 8, 12, 1 << 20]) {
    it(`uploads every tensor byte-exactly, odd lengths zero-padded (chunks of ${chunkBytes})`, async () => {
      const { device } = await testGpu();
      for (const [name, info] of tensors) {
        const buffer = await uploadTensor(device, source, info, { chunkBytes });
        const back = await gpuBytes(buffer, buffer.size);
        expect(Array.from(back.subarray(0, info.byteLength)), name).toEqual(Array.from(data[name]));
        expect(Array.from(back.subarray(info.byteLength)), `${name} padding`).toEqual(new Array(buffer.size - info.byteLength).fill(0));
        buffer.destroy();
      }
    });
  }

  it('uploads a real FP8 weight of the official fixture', async () => {
    const { device } = await testGpu();
    const dir = nodeDir(join(import.meta.dirname, '../../../shared/fixtures/dsv3-tiny-official/sharded'));
    const shard = await dir.open('model-00001-of-00002.safetensors');
    const info = (await readSafetensorsHeader(shard)).tensors.get('model.layers.0.self_attn.kv_a_proj_with_mqa.weight')!;
    const buffer = await uploadTensor(device, shard, info, { chunkBytes: 10_000 });
    expect(Buffer.compare(await gpuBytes(buffer, info.byteLength), await shard.read(info.byteOffset, info.byteLength))).toBe(0);
    buffer.destroy();
  });
});

describe('uploadTensors', () => {
  it('places several tensors in one buffer at 4-aligned offsets', async () => {
    const { device } = await testGpu();
    const list = [...tensors.values()];
    const offsets = new Map<TensorInfo, number>();
    let at = 0;
    for (const t of list) {
      offsets.set(t, at);
      at += Math.ceil(t.byteLength / 4) * 4;
    }
    const buffer = createStorageBuffer(device, at, 'packed');
    await uploadTensors(device, source, list, (t) => ({ buffer, offset: offsets.get(t)! }), { chunkBytes: 16 });
    for (const t of list) expect(Array.from(await gpuBytes(buffer, t.byteLength, offsets.get(t)))).toEqual(Array.from(data[t.name]));
    buffer.destroy();
  });

  it('refuses a misaligned offset, a buffer too small, and a tensor of another file', async () => {
    const { device } = await testGpu();
    const buffer = createStorageBuffer(device, 64, 'small');
    const f32 = tensors.get('f32')!;
    await expect(uploadTensor(device, source, f32, { buffer, bufferOffset: 2 })).rejects.toThrow(/offset 2 is not a multiple of 4/);
    await expect(uploadTensor(device, source, f32, { buffer, bufferOffset: 8 })).rejects.toThrow(/does not fit in buffer "small"/);
    await expect(uploadTensor(device, source, { ...f32, file: 'other.safetensors' }, { buffer })).rejects.toBeInstanceOf(ArgumentError);
    buffer.destroy();
  });
});

describe('streamTensors', () => {
  it('delivers bytes in order, coalescing neighbours into few reads, with progress', async () => {
    const list = [...tensors.values()];
    const got = new Map<string, number[]>();
    const events: LoadProgress[] = [];
    const total = list.reduce((a, t) => a + t.byteLength, 0);
    reads.length = 0;
    await streamTensors(source, list, (t, chunk, at) => {
      const sofar = got.get(t.name) ?? [];
      expect(at).toBe(sofar.length);
      got.set(t.name, [...sofar, ...chunk]);
    }, { chunkBytes: 256, progress: new ProgressCounter(total, (p) => events.push(p)) });
    for (const t of list) expect(got.get(t.name)).toEqual(Array.from(data[t.name]));
    // The tensors are contiguous: one run, read in 256-byte pieces.
    expect(reads.length).toBe(Math.ceil(total / 256));
    expect(events.at(-1)).toMatchObject({ bytesDone: total, bytesTotal: total, file: 'model.safetensors', tensor: 'last' });
    expect(events.every((e, i) => i === 0 || e.bytesDone > events[i - 1].bytesDone)).toBe(true);
  });

  it('skips a large gap between the tensors asked for', async () => {
    reads.length = 0;
    const odd7 = tensors.get('odd7')!;
    const last = tensors.get('last')!;
    await streamTensors(source, [last, odd7], () => {}, { maxGapBytes: 100 });
    expect(reads).toEqual([[odd7.byteOffset, 7], [last.byteOffset, 3]]);
  });

  it('stops between chunks when aborted', async () => {
    const controller = new AbortController();
    let calls = 0;
    const run = streamTensors(source, [tensors.get('big')!], () => {
      if (++calls === 2) controller.abort();
    }, { chunkBytes: 64, signal: controller.signal });
    await expect(run).rejects.toBeInstanceOf(AbortError);
    expect(calls).toBe(2);
  });
});
