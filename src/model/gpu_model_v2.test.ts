// DeepSeek-V2 (DeepseekV2ForCausalLM, model_type deepseek_v2): the same MLA and MoE layout with a
// softmax router, no e_score_correction_bias, top-k greedy over all experts or within the best
// groups by their best expert, and weights normalised or scaled as its config says. Generated
// checkpoints at the ODD preset's sizes; the GPU forward against the CPU reference at every
// position: a BF16 release like DeepSeek-V2-Lite (greedy, weights x 1.0, kept BF16), and an FP8
// one with group_limited_greedy like DeepSeek-V2 (weights x 16) and YaRN with mscale 0.707.

import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.ts';
import { testGpu } from '../gpu/testing.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import { memoryDir } from '../io/sources.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { ODD } from '../../tools/checkpoint/presets.ts';
import { createGpuModel } from './gpu_model.ts';
import { loadWeights, type WeightMode } from './load_weights.ts';
import { logitsAtEveryPosition, relativeLogitError } from '../testing/logits_testing.ts';
import { referenceForward } from './reference/forward.ts';
import { loadReferenceWeights } from './reference/tensors.ts';
import { expectedTensors } from './weights.ts';

/** ODD's sizes as a DeepSeek-V2 config.json: no bias, softmax routing, no MTP. */
function v2Config(changes: Record<string, unknown>): Record<string, unknown> {
  const { num_nextn_predict_layers: _mtp, ...rest } = ODD;
  return { ...rest, architectures: ['DeepseekV2ForCausalLM'], model_type: 'deepseek_v2', scoring_func: 'softmax', ...changes };
}

const CASES: { name: string; raw: Record<string, unknown>; weights: WeightMode }[] = [
  {
    name: 'V2-Lite-like: BF16, greedy, norm_topk_prob false, weights x 1.0',
    raw: v2Config({ quantization_config: null, topk_method: 'greedy', n_group: 1, topk_group: 1, norm_topk_prob: false, routed_scaling_factor: 1.0 }),
    weights: 'bf16',
  },
  {
    name: 'V2-like: FP8, group_limited_greedy 3 groups top-2, weights x 16, YaRN mscale 0.707',
    raw: v2Config({
      topk_method: 'group_limited_greedy', norm_topk_prob: false, routed_scaling_factor: 16,
      rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
    }),
    weights: 'fp8',
  },
];

describe('DeepSeek-V2', () => {
  it('has no router bias and no MTP layer in its tensors', () => {
    const c = parseConfig(CASES[0].raw);
    expect([c.scoring_func, c.topk_method, c.norm_topk_prob, c.mtp_layer_index]).toEqual(['softmax', 'greedy', false, null]);
    expect([...expectedTensors(c).keys()].filter((n) => n.includes('e_score_correction_bias'))).toEqual([]);
  });

  for (const { name, raw, weights } of CASES) {
    it(`matches the CPU reference at every position (${name})`, async () => {
      const config = parseConfig(raw);
      const dir = memoryDir('v2', Object.fromEntries(generateCheckpoint({ config: raw, seed: 4 }).files));
      const ids = Array.from({ length: 11 }, (_, t) => (t * 29 + 2) % config.vocab_size);
      const reference = referenceForward(await loadReferenceWeights(await openCheckpoint(dir), config), config, ids).logits;
      const gpu = await testGpu();
      const loaded = await loadWeights(gpu, dir, { weights });
      const model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
      try {
        expect(relativeLogitError(await logitsAtEveryPosition(model, ids, 8), reference)).toBeLessThan(1e-4);
      } finally {
        model.destroy();
        loaded.destroy();
      }
    });
  }
});
