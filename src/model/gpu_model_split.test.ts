// Weights split over several buffers (src/model/placement.ts) give the same logits as whole ones,
// bit for bit: the limit the engine plans with is lowered (maxBindingBytes) until the tensors are
// in pieces. Every position is compared, prefill (GEMM, grouped experts) and decode (GEMV, decode
// experts), on releases at the ODD preset's sizes: FP8, BF16 quantised at load (the quantiser
// writes pieces) and BF16 kept. Across the limits of a release, every tensor the forward pass can
// read in pieces and that has more than one piece's worth (a 128-row block in FP8, a row in BF16,
// an expert of a stack) is split at least once: the embeddings and heads, the MTP module's copies,
// every Linear of linear.ts, the dense MLP and the shared experts (MlpBands), the routed experts
// (expert ranges). The sizes are chosen so that the smallest limit leaves nothing of that kind whole
// but what fits: v_head_dim 56 (o_proj [200, 168]: two FP8 blocks), intermediate_size 200,
// moe_intermediate_size 100 and 2 shared experts (the shared MLP [200, 200], larger than a routed
// expert, so it can be split while every expert fits).
import { beforeAll, describe, expect, it } from 'vitest';
import { GpuLimitError } from '../errors.ts';
import type { Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import { trackingDevice } from '../testing/tracking_device.ts';
import { memoryDir } from '../io/sources.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createGpuModel } from './gpu_model.ts';
import { loadWeights, smallestWeightBinding, type LoadWeightsOptions, type WeightMode } from './load_weights.ts';
import { logitsAtEveryPosition } from '../testing/logits_testing.ts';

const SPLIT = { ...ODD, v_head_dim: 56, intermediate_size: 200, moe_intermediate_size: 100, n_shared_experts: 2 };
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

/** Every position's logits, the split tensors and stacks, and the smallest limit the weights take, for one load. */
async function run(release: keyof typeof releases, options: LoadWeightsOptions) {
  const loaded = await loadWeights(gpu, releases[release], options);
  try {
    const model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
    try {
      const rows = await logitsAtEveryPosition(model, ids, PREFILLED);
      const placed = [...loaded.placement.values()];
      const split = new Set(placed.flatMap((wb) => (wb.piece ? [wb.piece.of] : [])));
      const floor = smallestWeightBinding(placed.flatMap((wb) => wb.members.map((m) => m.tensor)));
      return { rows, split, floor, largest: Math.max(...placed.map((wb) => wb.byteLength)) };
    } finally {
      model.destroy();
    }
  } finally {
    loaded.destroy();
  }
}

const bits = (rows: Float32Array[]) => rows.map((r) => Array.from(new Uint32Array(r.buffer, r.byteOffset, r.length)));

// Each case runs at its limits and at the smallest one its weights take (smallestWeightBinding:
// FP8, a 128-row band of a [200, 200] MLP projection, 25,600 bytes; BF16, a routed expert's
// projection [100, 200], 40,000 bytes), where every tensor larger than that is split.
const CASES: { release: keyof typeof releases; weights: WeightMode; limits: number[]; floor: [number, RegExp] }[] = [
  { release: 'fp8', weights: 'fp8', limits: [100_000], floor: [25_600, /mlp\.(shared_experts\.)?(gate|up|down)_proj\.weight$/] },
  { release: 'bf16', weights: 'fp8', limits: [], floor: [25_600, /mlp\.(shared_experts\.)?(gate|up|down)_proj\.weight$/] },
  { release: 'bf16', weights: 'bf16', limits: [90_000], floor: [40_000, /mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$/] },
];

describe.each(CASES)('a $release release, weights $weights, split', ({ release, weights, limits, floor }) => {
  let whole: Awaited<ReturnType<typeof run>>;
  beforeAll(async () => {
    whole = await run(release, { weights });
  });

  it('takes limits down to the largest piece that cannot be cut smaller', () => {
    expect([...whole.split]).toEqual([]);
    expect(whole.floor.bytes).toBe(floor[0]);
    expect(whole.floor.tensor).toMatch(floor[1]);
  });

  it.each([...limits.map((bytes) => `${bytes} bytes`), 'the smallest'])('at a binding limit of %s gives the unsplit logits bit for bit', async (limit) => {
    const maxBindingBytes = limit === 'the smallest' ? whole.floor.bytes : parseInt(limit, 10);
    const split = await run(release, { weights, maxBindingBytes });
    expect(split.largest).toBeLessThanOrEqual(maxBindingBytes);
    for (const name of ['model.embed_tokens.weight', 'lm_head.weight', 'model.layers.1.mlp.experts.gate_proj.weight']) expect([...split.split], `${name} at ${maxBindingBytes}`).toContain(name);
    if (limit === 'the smallest') {
      // every kind of tensor that can be read in pieces is, here
      for (const kind of ['self_attn.o_proj.weight', 'layers.0.mlp.gate_proj.weight', 'layers.0.mlp.down_proj.weight', 'shared_experts.up_proj.weight', 'shared_experts.down_proj.weight', 'eh_proj.weight', 'layers.3.embed_tokens.weight', 'shared_head.head.weight']) {
        expect([...split.split].some((name) => name.endsWith(kind)), `${kind} split at ${maxBindingBytes}`).toBe(true);
      }
    }
    expect(bits(split.rows)).toEqual(bits(whole.rows));
  });

  it('refuses 4 bytes less with a GpuLimitError naming that piece, nothing allocated', async () => {
    const { device, made } = trackingDevice(gpu.device);
    const error = await loadWeights({ ...gpu, device }, releases[release], { weights, maxBindingBytes: whole.floor.bytes - 4 }).catch((e) => e);
    expect(error).toBeInstanceOf(GpuLimitError);
    expect(error.message).toContain(`over the largest storage binding webmoe plans with (${(whole.floor.bytes - 4).toLocaleString('en-US')}-byte`);
    expect(made).toHaveLength(0);
  });
});
