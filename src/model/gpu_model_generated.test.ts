// The GPU forward against the CPU reference on a generated checkpoint with odd sizes and the
// other query path (q_proj, no q_lora_rank): hidden 200, 3 heads, kv_lora_rank 72, v_head_dim 40,
// 6 experts in 3 groups. Logits of every position, prefilled in chunks of 8 (GEMM and mla_prefill)
// and then decoded row by row (GEMV and mla_decode).

import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseConfig } from '../config.ts';
import { testGpu } from '../gpu/testing.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { memoryDir } from '../io/sources.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createGpuModel, type GpuModel } from './gpu_model.ts';
import { loadWeights, type LoadedWeights } from './load_weights.ts';
import { logitsAtEveryPosition, relativeLogitError } from '../testing/logits_testing.ts';
import { referenceForward } from './reference/forward.ts';
import { loadReferenceWeights } from './reference/tensors.ts';

const generated = generateCheckpoint({ config: ODD, seed: 7 });
const dir = memoryDir('odd', Object.fromEntries(generated.files));
const config = parseConfig(ODD);
const ids = Array.from({ length: 21 }, (_, t) => (t * 37 + 5) % config.vocab_size);

let loaded: LoadedWeights;
let model: GpuModel;
beforeAll(async () => {
  const gpu = await testGpu();
  loaded = await loadWeights(gpu, dir);
  model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
});
afterAll(() => {
  model?.destroy();
  loaded?.destroy();
});

it('matches the CPU reference at every position (relative logit error < 1e-4)', async () => {
  const reference = referenceForward(await loadReferenceWeights(await openCheckpoint(dir), config), config, ids).logits;
  expect(relativeLogitError(await logitsAtEveryPosition(model, ids, 17), reference)).toBeLessThan(1e-4);
});
