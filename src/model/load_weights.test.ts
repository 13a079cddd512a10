import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CheckpointError, AbortError, GpuLimitError } from '../errors.ts';
import { readBuffer } from '../gpu/buffers.ts';
import { testGpu } from '../gpu/testing.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { nodeDir } from '../io/node_source.ts';
import { memoryDir, type CheckpointDir } from '../io/sources.ts';
import { writeSafetensors } from '../io/safetensors_write.ts';
import { officialFixture } from '../testing/fixtures.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { loadWeights } from './load_weights.ts';
import { trackingDevice } from '../testing/tracking_device.ts';


describe('loadWeights', () => {
  it.each(['', 'sharded'])('puts every tensor of the official fixture (%s) on the GPU byte for byte, experts stacked', async (sub) => {
    const gpu = await testGpu();
    const { device } = gpu;
    const dir = nodeDir(officialFixture(sub));
    let last = { bytesDone: 0, bytesTotal: -1 };
    const weights = await loadWeights(gpu, dir, { onProgress: (p) => (last = p), chunkBytes: 1 << 20 });
    try {
      expect(last.bytesDone).toBe(last.bytesTotal);
      expect(weights.config.hidden_size).toBe(128);
      const file = readFileSync(officialFixture('model.safetensors'));
      const single = await openCheckpoint(nodeDir(officialFixture()));
      const slice = (name: string) => {
        const t = single.tensors.get(name)!;
        return new Uint8Array(file.buffer, file.byteOffset + t.byteOffset, t.byteLength);
      };
      // A plain tensor, one with a partial scale block, and expert 10 inside its stacked buffer
      // (its weight and scale sit in different shards of the sharded layout).
      for (const name of ['model.layers.0.self_attn.q_a_proj.weight', 'model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv']) {
        const got = new Uint8Array(await readBuffer(device, weights.buffers.get(name)!, slice(name).byteLength));
        expect(Buffer.compare(Buffer.from(got), Buffer.from(slice(name)))).toBe(0);
      }
      for (const part of ['weight', 'weight_scale_inv']) {
        const stacked = `model.layers.3.mlp.experts.up_proj.${part}`;
        const placed = weights.placement.get(stacked)!;
        const want = slice(`model.layers.3.mlp.experts.10.up_proj.${part}`);
        const got = new Uint8Array(await readBuffer(device, weights.buffers.get(stacked)!, want.byteLength, 10 * placed.slotBytes!));
        expect(Buffer.compare(Buffer.from(got), Buffer.from(want))).toBe(0);
      }
    } finally {
      weights.destroy();
    }
  });

  it('refuses a checkpoint whose tensors do not match the config, naming them, before allocating', async () => {
    const gpu = await testGpu();
    const { device, made } = trackingDevice(gpu.device);
    const config = readFileSync(officialFixture('config.json'), 'utf8');
    const model = writeSafetensors({ 'model.embed_tokens.weight': { dtype: 'BF16', shape: [320, 128], data: new Uint8Array(320 * 128 * 2) } });
    const dir = memoryDir('broken', { 'config.json': config, 'model.safetensors': model });
    await expect(loadWeights({ ...gpu, device }, dir)).rejects.toThrow(CheckpointError);
    await expect(loadWeights({ ...gpu, device }, dir)).rejects.toThrow(/missing \d+ tensor\(s\): model\.layers\.0\.input_layernorm\.weight/);
    expect(made).toHaveLength(0);
  });

  it('refuses, before it allocates or reads anything, a tensor over the binding limit that cannot be split', async () => {
    const gpu = await testGpu();
    const { device: tracked, made } = trackingDevice(gpu.device);
    // The device's own limit: one expert of the fixture's stacks is 128 x 128 bytes, over 16,000.
    const real = gpu.device.limits as unknown as Record<string | symbol, unknown>;
    const limits = new Proxy(real, { get: (_, p) => (p === 'maxStorageBufferBindingSize' ? 16_000 : real[p]) });
    const device = new Proxy(tracked, { get: (t, p) => (p === 'limits' ? limits : Reflect.get(t, p)) });
    const error = await loadWeights({ ...gpu, device }, nodeDir(officialFixture())).catch((e) => e);
    expect(error).toBeInstanceOf(GpuLimitError);
    expect(error.message).toMatch(/: (model\.layers\.\d+\.\S+|one expert of model\.layers\.\d+\.mlp\.experts\.\S+) needs a [\d,]+-byte buffer, over the largest storage binding webmoe plans with \(16,000-byte/);
    // maxBindingBytes lowers the limit the same way; the piece that cannot be cut smaller is named
    // (the dense MLP's down_proj [128, 384] is one 128-row FP8 block).
    const lowered = await loadWeights({ ...gpu, device: tracked }, nodeDir(officialFixture()), { maxBindingBytes: 30_000 }).catch((e) => e);
    expect(lowered).toBeInstanceOf(GpuLimitError);
    expect(lowered.message).toMatch(/model\.layers\.0\.mlp\.down_proj\.weight needs a 49,152-byte buffer, .*30,000-byte.*even 128 rows of it \(49,152-byte\) would not fit/);
    expect(made).toHaveLength(0);
  });

  it('destroys every buffer it made when the load fails or is aborted midway', async () => {
    const gpu = await testGpu();
    const base = gpu.device;
    // The FP8 fixture, and a BF16 release quantised on the way in (its staging and params buffers too).
    const bf16Release = generateCheckpoint({ config: { ...ODD, quantization_config: null }, seed: 3 });
    const cases = [
      { real: nodeDir(officialFixture()), failure: 'truncated' },
      { real: nodeDir(officialFixture()), failure: 'aborted' },
      { real: memoryDir('odd-bf16', Object.fromEntries(bf16Release.files)), failure: 'truncated' },
      { real: memoryDir('odd-bf16', Object.fromEntries(bf16Release.files)), failure: 'aborted' },
    ] as const;
    for (const { real, failure } of cases) {
      const { device, made } = trackingDevice(base);
      const controller = new AbortController();
      let reads = 0;
      // The file's bytes stop (or the caller aborts) after the third read of tensor data.
      const dir: CheckpointDir = {
        ...real,
        description: real.description,
        exists: real.exists.bind(real),
        readText: real.readText.bind(real),
        async open(file, signal) {
          const source = await real.open(file, signal);
          return {
            name: source.name,
            size: () => source.size(),
            async read(offset, length, s) {
              if (length > 1024 && ++reads > 3) {
                if (failure === 'aborted') controller.abort();
                else throw new CheckpointError('read past the end of the file: it is truncated', file);
              }
              return source.read(offset, length, s);
            },
          };
        },
      };
      const error = await loadWeights({ ...gpu, device }, dir, { chunkBytes: 64 << 10, signal: controller.signal }).catch((e) => e);
      expect(error).toBeInstanceOf(failure === 'aborted' ? AbortError : CheckpointError);
      expect(made.length).toBeGreaterThan(20);
      expect(made.filter((b) => !b.destroyed && b.label !== 'readback')).toEqual([]);
    }
  });
});
