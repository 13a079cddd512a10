// Weights split over several buffers (src/model/placement.ts) give the same logits as whole ones,
// bit for bit: the limit the engine plans with is lowered (maxBindingBytes) until the embedding,
// lm_head, the MTP module's copies, the row-splittable Linears (in 128-row bands when FP8) and the
// stacked routed experts (by expert ranges) are in pieces. Every position is compared, prefill
// (GEMM, grouped experts) and decode (GEMV, decode experts), on releases at the ODD preset's sizes:
// FP8, BF16 quantised at load (the quantiser writes pieces) and BF16 kept. The ODD preset's
// sizes, with v_head_dim 56 and intermediate_size 140 so that o_proj [200, 168] is the largest
// Linear and the dense MLP (read whole) fits under limits that split it in 128-row FP8 bands.

import { beforeAll, describe, expect, it } from 'vitest';
import { GpuLimitError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import { trackingDevice } from '../testing/tracking_device.ts';
import { memoryDir } from '../io/sources.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createGpuModel } from './gpu_model.ts';
import { loadWeights, type LoadWeightsOptions, type WeightMode } from './load_weights.ts';
import { logitsAtEveryPosition } from '../testing/logits_testing.ts';

const SPLIT = { ...ODD, v_head_dim: 56, intermediate_size: 140 };
const releases = {
  fp8: memoryDir('split-fp8', Object.fromEntries(generateCheckpoint({ config: SPLIT, seed: 5 }).files)),
  bf16: memoryDir('split-bf16', Object.fromEntries(generateCheckpoint({ config: { ...SPLIT, quantization_config: null }, seed: 6 }).files)),
};
const ids = Array.from({ length: 9 }, (_, t) => (t * 53 + 7) % 301); // ODD's vocab_size is 301
const PREFILLED = 6; // 6 rows of prefill (GEMM, grouped experts), then 3 decode steps

let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
});

/** Every position's logits, and the names of the split buffers, for one load. */
async function run(release: keyof typeof releases, options: LoadWeightsOptions) {
  const loaded = await loadWeights(gpu, releases[release], options);
  try {
    const model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
    try {
      const rows = await logitsAtEveryPosition(model, ids, PREFILLED);
      const placed = [...loaded.placement.values()];
      const pieces = placed.filter((wb) => wb.piece).map((wb) => wb.name);
      return { rows, pieces, largest: Math.max(...placed.map((wb) => wb.byteLength)) };
    } finally {
      model.destroy();
    }
  } finally {
    loaded.destroy();
  }
}

const bits = (rows: Float32Array[]) => rows.map((r) => Array.from(new Uint32Array(r.buffer, r.byteOffset, r.length)));

// Limits per case, and what each splits besides the embeddings, heads and stacked experts. The
// smallest fits the largest buffer that cannot be split (the dense MLP's gate_proj [140, 200],
// 28,000 bytes in FP8, 56,000 in BF16) and splits every Linear that has more than one 128-row
// block (FP8) or row (BF16) and is over the limit.
const CASES: { release: keyof typeof releases; weights: WeightMode; limits: [number, string[]][] }[] = [
  { release: 'fp8', weights: 'fp8', limits: [[100_000, ['model.layers.3.eh_proj.weight']], [30_000, ['model.layers.0.self_attn.o_proj.weight', 'model.layers.0.self_attn.o_proj.weight_scale_inv']]] },
  { release: 'bf16', weights: 'fp8', limits: [[30_000, ['model.layers.2.self_attn.o_proj.weight', 'model.layers.2.self_attn.o_proj.weight_scale_inv']]] },
  { release: 'bf16', weights: 'bf16', limits: [[60_000, ['model.layers.1.self_attn.o_proj.weight', 'model.layers.3.eh_proj.weight']]] },
];

describe.each(CASES)('a $release release, weights $weights, split', ({ release, weights, limits }) => {
  let whole: Awaited<ReturnType<typeof run>>;
  beforeAll(async () => {
    whole = await run(release, { weights });
  });

  it.each(limits)('at a %d-byte binding limit gives the unsplit logits bit for bit', async (maxBindingBytes, alsoSplit) => {
    expect(whole.pieces).toEqual([]);
    const split = await run(release, { weights, maxBindingBytes });
    expect(split.largest).toBeLessThanOrEqual(maxBindingBytes);
    const names = ['model.embed_tokens.weight', 'lm_head.weight', 'model.layers.3.embed_tokens.weight', 'model.layers.3.shared_head.head.weight', 'model.layers.1.mlp.experts.gate_proj.weight', ...alsoSplit];
    for (const name of names) {
      expect(split.pieces.some((p) => p.startsWith(`${name}[`)), `${name} split at ${maxBindingBytes}`).toBe(true);
    }
    expect(bits(split.rows)).toEqual(bits(whole.rows));
  });
});

describe('a limit nothing can be split small enough for', () => {
  it('is a GpuLimitError naming the tensor, with nothing allocated', async () => {
    const { device, made } = trackingDevice(gpu.device);
    const error = await loadWeights({ ...gpu, device }, releases.fp8, { maxBindingBytes: 27_999 }).catch((e) => e);
    expect(error).toBeInstanceOf(GpuLimitError);
    expect(error.message).toMatch(/model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight needs a 28,000-byte buffer, over the largest storage binding webmoe plans with \(27,996-byte/);
    expect(made).toHaveLength(0);
  });
});
