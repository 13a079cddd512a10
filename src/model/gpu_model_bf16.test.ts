// A release that stores its Linears in BF16 (no quantization_config: Moonlight, fine-tunes, the
// tiny test repos), generated at the odd sizes of the ODD preset (every 128x128 block partial).
// weights 'fp8' (the default) quantises them on the GPU as they stream in: the codes and scales
// on the GPU are the reference quantiser's bit for bit, the forward matches the CPU reference run
// on the same quantised weights, and the Linears take half the memory of weights 'bf16'.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../config.ts';
import { readBuffer } from '../gpu/buffers.ts';
import type { Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { memoryDir } from '../io/sources.ts';
import { dequantizeRef } from '../kernels/gemm_fp8.ref.ts';
import { quantizeFp8 } from '../kernels/quantize_fp8.ref.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import { loadWeights, type LoadedWeights } from './load_weights.ts';
import { logitsAtEveryPosition, relativeLogitError } from '../testing/logits_testing.ts';
import { referenceForward } from './reference/forward.ts';
import { loadReferenceWeights } from './reference/tensors.ts';

const RAW = { ...ODD, quantization_config: null };
const generated = generateCheckpoint({ config: RAW, seed: 11 });
const dir = memoryDir('odd-bf16', Object.fromEntries(generated.files));
const config = parseConfig(RAW);
const ids = Array.from({ length: 13 }, (_, t) => (t * 41 + 3) % config.vocab_size);

let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
});

describe("weights 'fp8' on a BF16 release", () => {
  let loaded: LoadedWeights;
  let model: GpuModel;
  beforeAll(async () => {
    loaded = await loadWeights(gpu, dir, { chunkBytes: 40_000 }); // chunk edges inside tensors and bands
    model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
  });
  afterAll(() => {
    model?.destroy();
    loaded?.destroy();
  });

  it('holds every block-scaled Linear as e4m3 codes and scales equal to the reference quantiser', async () => {
    expect(loaded.weights).toBe('fp8');
    const blockScaled = [...generated.tensors].filter((t) => t.dtype === 'BF16' && /(self_attn|mlp)\..*proj(_with_mqa)?\.weight$/.test(t.name));
    expect(loaded.quantisedTensors).toBe(blockScaled.length);
    // A plain Linear, and a routed expert's slot in its stacked buffer.
    for (const [name, buffer, slot] of [
      ['model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.q_proj.weight', 0],
      ['model.layers.1.mlp.experts.4.down_proj.weight', 'model.layers.1.mlp.experts.down_proj.weight', 4],
    ] as const) {
      const t = generated.tensors.find((g) => g.name === name)!;
      const [rows, cols] = t.shape;
      const values = dequantizeRef({ format: 'bf16', bytes: t.data }, rows, cols);
      const want = quantizeFp8(values, rows, cols);
      const weight = loaded.placement.get(buffer)!;
      const scales = loaded.placement.get(`${buffer}_scale_inv`)!;
      const codes = new Uint8Array(await readBuffer(gpu.device, loaded.buffers.get(buffer)!, rows * cols, slot * (weight.slotBytes ?? 0)));
      const scaleInv = new Float32Array(await readBuffer(gpu.device, loaded.buffers.get(`${buffer}_scale_inv`)!, want.scaleInv.byteLength, slot * (scales.slotBytes ?? 0)));
      expect(codes).toEqual(want.codes);
      expect(scaleInv).toEqual(want.scaleInv);
    }
  });

  it('matches the CPU reference on the same quantised weights at every position (relative logit error < 1e-4)', async () => {
    const reference = referenceForward(await loadReferenceWeights(await openCheckpoint(dir), config, { quantise: true }), config, ids).logits;
    expect(relativeLogitError(await logitsAtEveryPosition(model, ids, 9), reference)).toBeLessThan(1e-4);
  });

  it('is really quantised: the unquantised reference is much further away', async () => {
    const quantised = referenceForward(await loadReferenceWeights(await openCheckpoint(dir), config, { quantise: true }), config, ids).logits;
    const exact = referenceForward(await loadReferenceWeights(await openCheckpoint(dir), config), config, ids).logits;
    // FP8's 3 fraction bits move these random logits by several percent; the GPU by < 1e-4.
    expect(relativeLogitError(quantised, exact)).toBeGreaterThan(1e-2);
  });
});

describe("weights 'bf16' on a BF16 release", () => {
  let loaded: LoadedWeights;
  let model: GpuModel;
  beforeAll(async () => {
    loaded = await loadWeights(gpu, dir, { weights: 'bf16' });
    model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
  });
  afterAll(() => {
    model?.destroy();
    loaded?.destroy();
  });

  it('keeps the Linears BF16 and matches the unquantised CPU reference at every position (relative logit error < 1e-4)', async () => {
    expect(loaded.weights).toBe('bf16');
    expect(loaded.quantisedTensors).toBe(0);
    expect(loaded.tensors.get('model.layers.1.mlp.experts.0.up_proj.weight')!.dtype).toBe('BF16');
    const reference = referenceForward(await loadReferenceWeights(await openCheckpoint(dir), config), config, ids).logits;
    expect(relativeLogitError(await logitsAtEveryPosition(model, ids, 9), reference)).toBeLessThan(1e-4);
  });

  it("takes more GPU memory than weights 'fp8' (which halves the Linears)", async () => {
    const fp8 = await loadWeights(gpu, dir);
    try {
      expect(fp8.bytesOnGpu).toBeLessThan(0.7 * loaded.bytesOnGpu);
    } finally {
      fp8.destroy();
    }
  });
});
