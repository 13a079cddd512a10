// NaN and infinity injected into a checkpoint never give silent wrong output: in a block scale or
// a norm weight the load refuses it by name; in the embedding (not scanned: it is large) the first
// step that samples ends in NonFiniteError instead of token 0 forever; in the MTP module only, the
// drafts are dropped and decoding goes on without speculation, with the same tokens.

import { describe, expect, it } from 'vitest';
import { CheckpointError, NonFiniteError } from '../errors.ts';
import { testGpu } from '../gpu/testing.ts';
import { parseSafetensorsHeader } from '../io/safetensors.ts';
import { memoryDir } from '../io/sources.ts';
import type { ChunkWriter } from '../io/stream_to_gpu.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createLocalEngine } from './engine.ts';
import { trackingDevice } from '../testing/tracking_device.ts';
import { finiteChecking } from '../model/finite_check.ts';
import { loadWeights } from '../model/load_weights.ts';

/** The ODD checkpoint with `bytes` written at element `element` of tensor `name`. */
function corrupted(name: string, element: number, bytes: number[]) {
  const files = new Map(generateCheckpoint({ config: ODD, seed: 9 }).files);
  const model = new Uint8Array(files.get('model.safetensors')!);
  const info = parseSafetensorsHeader(model, 'model.safetensors', model.byteLength).tensors.get(name)!;
  model.set(bytes, info.byteOffset + element * bytes.length);
  files.set('model.safetensors', model);
  return memoryDir(`odd with ${name}[${element}] corrupted`, Object.fromEntries(files));
}

const F32_NAN = [0x00, 0x00, 0xc0, 0x7f];
const BF16_INF = [0x80, 0x7f];

describe('non-finite values in a checkpoint', () => {
  it('are refused at load in a block scale and a norm weight, naming the tensor and element, with nothing left allocated', async () => {
    const gpu = await testGpu();
    for (const [name, element, bytes] of [
      ['model.layers.1.self_attn.o_proj.weight_scale_inv', 1, F32_NAN],
      ['model.layers.2.post_attention_layernorm.weight', 199, BF16_INF],
    ] as const) {
      const { device, made } = trackingDevice(gpu.device);
      const error = await loadWeights({ ...gpu, device }, corrupted(name, element, [...bytes]), { chunkBytes: 4096 }).catch((e) => e);
      expect(error).toBeInstanceOf(CheckpointError);
      expect(error.message).toContain(`${name} holds a NaN or infinite value at element ${element}`);
      expect(made.filter((b) => !b.destroyed && b.label !== 'readback')).toEqual([]);
    }
  });

  it('in the embedding end the first sampling step with NonFiniteError, not token 0', async () => {
    const gpu = await testGpu();
    const row = 5; // token 5's embedding gets one NaN
    const engine = await createLocalEngine({ gpu, dir: corrupted('model.embed_tokens.weight', row * 200 + 3, [0xc0, 0x7f]), maxContext: 32 });
    try {
      const run = async () => {
        for await (const chunk of engine.generate([1, row, 2], { maxTokens: 4, temperature: 0, ignoreEos: true })) void chunk;
      };
      await expect(run()).rejects.toThrow(NonFiniteError);
      await expect(run()).rejects.toThrow(/the logits of lm_head are NaN or infinite/);
      // A prompt without that token still runs: the engine is not left broken.
      const ids: number[] = [];
      for await (const chunk of engine.generate([1, 2, 3], { maxTokens: 2, temperature: 0, ignoreEos: true, speculative: false })) ids.push(...chunk.ids);
      expect(ids).toHaveLength(2);
    } finally {
      await engine.unload();
    }
  });

  it('in the MTP module only: speculation falls back to plain decoding, same tokens, no error', async () => {
    const gpu = await testGpu();
    const sound = await createLocalEngine({ gpu, dir: corrupted('model.embed_tokens.weight', 0, [0, 0]), maxContext: 32 });
    // The MTP layer (3 in ODD) drafts through its own shared_head: one NaN there makes every draft's logits non-finite.
    const broken = await createLocalEngine({ gpu, dir: corrupted('model.layers.3.shared_head.head.weight', 7 * 200 + 11, [0xc0, 0x7f]), maxContext: 32 });
    try {
      const run = async (engine: typeof sound, speculative: boolean) => {
        const ids: number[] = [];
        let mtp: { drafted: number; accepted: number } | undefined;
        for await (const chunk of engine.generate([1, 5, 2], { maxTokens: 6, temperature: 0, ignoreEos: true, speculative })) {
          ids.push(...chunk.ids);
          if (chunk.done) mtp = chunk.done.stats.mtp;
        }
        return { ids, mtp };
      };
      const plain = await run(broken, false);
      const speculated = await run(broken, true);
      expect(speculated.ids).toEqual(plain.ids);
      expect(speculated.mtp).toEqual({ drafted: 0, accepted: 0 }); // the prefill's draft was refused: no verify step
      // The main model is the same as the sound checkpoint's (element 0 of the embedding rewritten as +0).
      expect(plain.ids).toEqual((await run(sound, false)).ids);
    } finally {
      await broken.unload();
      await sound.unload();
    }
  });

  it('finiteChecking finds an element split across chunk edges', () => {
    const info = { name: 't', dtype: 'F32' as const, shape: [4], byteOffset: 0, byteLength: 16, file: 'f' };
    const bytes = new Uint8Array(new Float32Array([1, 2, Number.POSITIVE_INFINITY, 4]).buffer);
    const written: number[] = [];
    const sink: ChunkWriter = { write: (c) => written.push(c.byteLength), finish: () => {} };
    const w = finiteChecking(info, 'f', sink);
    w.write(bytes.slice(0, 9), 0); // element 2 starts at byte 8: one byte of it here
    w.write(bytes.slice(9, 10), 9);
    expect(() => w.write(bytes.slice(10, 16), 10)).toThrow(/t holds a NaN or infinite value at element 2/);
    const ok = finiteChecking(info, 'f', sink);
    const fine = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
    for (let i = 0; i < 16; i += 3) ok.write(fine.slice(i, Math.min(16, i + 3)), i);
    expect(written.reduce((a, b) => a + b, 0)).toBe(9 + 1 + 16);
  });
});
