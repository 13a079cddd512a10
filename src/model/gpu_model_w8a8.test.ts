// The W8A8 path (activations rounded to FP8 per token and 128-channel group before every FP8
// Linear, as the official gemm_impl "fp8") on the official fixture. Its end-to-end logits are
// chaotic (the fixture README: a float32-sized perturbation redraws every later rounding), so they
// are compared statistically, as that README says: against f32_dequant, the official fp8 run lies at
// a median of about 0.5 per position (max abs logit difference), max 2.8, argmax agreement ~90%.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { UnsupportedConfigError } from '../errors.ts';
import { testGpu } from '../gpu/testing.ts';
import { nodeDir } from '../io/node_source.ts';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { parseConfig } from '../config.ts';
import { memoryDir } from '../io/sources.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD, TINY } from '../../tools/checkpoint/presets.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import { loadWeights, type LoadedWeights } from './load_weights.ts';
import { logitsAtEveryPosition, relativeLogitError } from '../testing/logits_testing.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { referenceForward } from './reference/forward.ts';
import { loadReferenceWeights } from './reference/tensors.ts';

interface OfficialPrompt {
  prompt: number[];
  prefill_logits: number[][];
}
const modes = officialReference<{ modes: Record<'f32_dequant' | 'fp8_emulated', { prompts: OfficialPrompt[] }> }>().modes;

let loaded: LoadedWeights;
let model: GpuModel;
beforeAll(async () => {
  const gpu = await testGpu();
  loaded = await loadWeights(gpu, nodeDir(officialFixture()));
  model = createGpuModel(gpu, loaded, { prefillChunk: 48, numerics: 'w8a8' });
});
afterAll(() => {
  model?.destroy();
  loaded?.destroy();
});

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

/** Per position: max |a - b| over the vocabulary; and the share of positions with the same argmax. */
function distance(a: ArrayLike<number>[], b: ArrayLike<number>[]): { median: number; max: number; agreement: number } {
  const d = a.map((row, t) => {
    let m = 0;
    for (let j = 0; j < row.length; j++) m = Math.max(m, Math.abs(row[j] - b[t][j]));
    return m;
  });
  const sorted = [...d].sort((x, y) => x - y);
  return { median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1], agreement: a.filter((row, t) => argmax(row) === argmax(b[t])).length / a.length };
}

it('lies as far from f32_dequant as the official fp8 run does, and as close to that run', async () => {
  const ours: Float32Array[] = [];
  const f32: number[][] = [];
  const fp8: number[][] = [];
  for (let i = 0; i < 3; i++) {
    const prompt = modes.f32_dequant.prompts[i].prompt;
    const cache = model.createCache(prompt.length);
    const plans = model.plans(cache);
    try {
      ours.push(...(await model.forward(plans, prompt, 0, { logits: 'all' })).logits!);
    } finally {
      plans.destroy();
      cache.destroy();
    }
    f32.push(...modes.f32_dequant.prompts[i].prefill_logits);
    fp8.push(...modes.fp8_emulated.prompts[i].prefill_logits);
  }
  const toF32 = distance(ours, f32);
  const official = distance(fp8, f32);
  const toOfficial = distance(ours, fp8);
  console.log(`w8a8 vs f32_dequant: median ${toF32.median.toFixed(3)}, max ${toF32.max.toFixed(3)}, argmax ${(100 * toF32.agreement).toFixed(1)}%; official fp8 vs f32_dequant: median ${official.median.toFixed(3)}, max ${official.max.toFixed(3)}; w8a8 vs official fp8: median ${toOfficial.median.toFixed(3)}`);
  // Really quantised (not the f32 path) ...
  expect(toF32.median).toBeGreaterThan(0.1);
  // ... and like the official run: within a factor 2 of its distance, with most argmaxes kept.
  expect(toF32.median).toBeLessThan(2 * official.median);
  expect(toF32.max).toBeLessThan(2 * official.max);
  expect(toF32.agreement).toBeGreaterThan(0.75);
  expect(toOfficial.median).toBeLessThan(2 * official.median);
});

// scale_fmt "ue8m0" (V3.1) on a generated checkpoint of the fixture's shape (2 layers: a dense one
// and a MoE one), against the CPU reference run with the same rounding (reference numerics
// 'w8a8': act_quant's scales powers of two for the plain Linears, amax / 448 for the parallel ones).
const UE8M0: Record<string, unknown> = {
  ...TINY,
  num_hidden_layers: 2,
  first_k_dense_replace: 1,
  num_nextn_predict_layers: 0,
  quantization_config: { ...(TINY.quantization_config as object), scale_fmt: 'ue8m0' },
};

it('with scale_fmt "ue8m0" (V3.1) matches the CPU reference rounding the same way, and differs from amax / 448 scales', async () => {
  const generated = generateCheckpoint({ config: UE8M0, seed: 11 });
  const files = Object.fromEntries(generated.files);
  const plainConfig = { ...UE8M0, quantization_config: TINY.quantization_config };
  const dirs = { ue8m0: memoryDir('tiny-ue8m0', files), f32: memoryDir('tiny-amax448', { ...files, 'config.json': JSON.stringify(plainConfig) }) };
  const configs = { ue8m0: parseConfig(UE8M0), f32: parseConfig(plainConfig) };
  expect(configs.ue8m0.quantization_config?.scale_fmt).toBe('ue8m0');
  const ids = Array.from({ length: 12 }, (_, t) => (t * 53 + 7) % configs.ue8m0.vocab_size);
  const gpu = await testGpu();
  const reference = async (fmt: 'ue8m0' | 'f32', numerics: 'w8a8' | 'weight_only' = 'w8a8') =>
    referenceForward(await loadReferenceWeights(await openCheckpoint(dirs[fmt]), configs[fmt]), configs[fmt], ids, { numerics }).logits;
  /** Logits of every position: 9 rows prefilled in chunks of 8 (GEMM), then 3 decoded one by one (GEMV). */
  const onGpu = async (fmt: 'ue8m0' | 'f32') => {
    const loadedFmt = await loadWeights(gpu, dirs[fmt]);
    const m = createGpuModel(gpu, loadedFmt, { prefillChunk: 8, numerics: 'w8a8' });
    try {
      return await logitsAtEveryPosition(m, ids, 9);
    } finally {
      m.destroy();
      loadedFmt.destroy();
    }
  };
  const want = { ue8m0: await reference('ue8m0'), f32: await reference('f32') };
  const got = { ue8m0: await onGpu('ue8m0'), f32: await onGpu('f32') };
  const errors = {
    ue8m0: relativeLogitError(got.ue8m0, want.ue8m0),
    f32: relativeLogitError(got.f32, want.f32),
    formats: relativeLogitError(want.ue8m0, want.f32), // what the option changes
    w8a8: relativeLogitError(want.f32, await reference('f32', 'weight_only')), // what W8A8 itself changes
  };
  console.log(`w8a8 GPU vs reference: ue8m0 ${errors.ue8m0.toExponential(2)}, amax/448 ${errors.f32.toExponential(2)}; reference ue8m0 vs amax/448 ${errors.formats.toExponential(2)}, w8a8 vs weight_only ${errors.w8a8.toExponential(2)}`);
  expect(errors.ue8m0).toBeLessThan(1e-4);
  expect(errors.f32).toBeLessThan(1e-4);
  expect(errors.formats).toBeGreaterThan(100 * Math.max(errors.ue8m0, errors.f32)); // the option is applied
  expect(relativeLogitError(got.ue8m0, want.f32)).toBeGreaterThan(100 * errors.ue8m0);
});

it('refuses a config whose Linear inputs are not whole 128-channel groups', async () => {
  const gpu = await testGpu();
  const generated = generateCheckpoint({ config: ODD, seed: 3 });
  const odd = await loadWeights(gpu, memoryDir('odd', Object.fromEntries(generated.files)));
  try {
    expect(parseConfig(ODD).hidden_size % 128).not.toBe(0);
    expect(() => createGpuModel(gpu, odd, { numerics: 'w8a8' })).toThrow(UnsupportedConfigError);
  } finally {
    odd.destroy();
  }
});
