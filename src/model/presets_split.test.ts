// The small split-limit version of each real-size preset (tools/checkpoint/presets.ts `moonlight`,
// `v3-dims`, `v2-lite`; the full sizes run in `npm run test:real-size`): each preset's config with
// every dimension cut down, so the architecture is the preset's (Moonlight: BF16 with q_proj, one
// expert group, 2 shared experts; V3's dims: FP8, q_lora, 8 groups of which 4, top-8, MTP; V2-Lite:
// DeepseekV2ForCausalLM, a softmax router), loaded at the smallest binding limit its weights take
// (smallestWeightBinding), where every tensor larger than that is in pieces, in each weights mode
// its release has. Every position's logits equal the unsplit load's bit for bit.

import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../gpu/device.ts';
import { testGpu } from '../gpu/testing.ts';
import { memoryDir } from '../io/sources.ts';
import { logitsAtEveryPosition } from '../testing/logits_testing.ts';
import { generateCheckpoint } from '../../tools/checkpoint/generate.ts';
import { PRESETS, REAL_SIZE_PRESETS } from '../../tools/checkpoint/presets.ts';
import { createGpuModel } from './gpu_model.ts';
import { loadWeights, smallestWeightBinding, type WeightMode } from './load_weights.ts';

/** A preset's config with its dimensions cut down and its structure kept. */
function scaledDown(preset: Record<string, unknown>): Record<string, unknown> {
  return {
    ...preset,
    vocab_size: 257,
    hidden_size: 136,
    intermediate_size: 264,
    moe_intermediate_size: 40,
    num_hidden_layers: 2,
    first_k_dense_replace: 1,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    q_lora_rank: preset.q_lora_rank === null ? null : 96,
    kv_lora_rank: 64,
    qk_nope_head_dim: 16,
    qk_rope_head_dim: 16,
    v_head_dim: 24,
    bos_token_id: 0,
    eos_token_id: 1,
    // the preset's experts, groups, top-k, shared experts, MTP, router, RoPE and dtype are kept
  };
}

const ids = Array.from({ length: 7 }, (_, t) => (t * 89 + 3) % 257);
const PREFILLED = 5; // prefill (GEMM, grouped experts), then 2 decode steps

let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
});

const bits = (rows: Float32Array[]) => rows.map((r) => Array.from(new Uint32Array(r.buffer, r.byteOffset, r.length)));

const cases = REAL_SIZE_PRESETS.flatMap((name) => {
  const config = scaledDown(PRESETS[name]);
  const modes: WeightMode[] = config.quantization_config ? ['fp8'] : ['fp8', 'bf16'];
  return modes.map((weights) => ({ name, weights, config }));
});

describe.each(cases)('the $name preset scaled down, weights $weights', ({ name, weights, config }) => {
  const dir = memoryDir(name, Object.fromEntries(generateCheckpoint({ config, seed: 11 }).files));

  async function run(maxBindingBytes?: number) {
    const loaded = await loadWeights(gpu, dir, { weights, maxBindingBytes });
    try {
      const model = createGpuModel(gpu, loaded, { prefillChunk: 8 });
      try {
        const placed = [...loaded.placement.values()];
        return {
          rows: await logitsAtEveryPosition(model, ids, PREFILLED),
          pieces: placed.filter((wb) => wb.piece).length,
          split: new Set(placed.flatMap((wb) => (wb.piece ? [wb.piece.of] : []))),
          floor: smallestWeightBinding(placed.flatMap((wb) => wb.members.map((m) => m.tensor))).bytes,
        };
      } finally {
        model.destroy();
      }
    } finally {
      loaded.destroy();
    }
  }

  it('at the smallest binding limit it takes, gives the unsplit logits bit for bit', async () => {
    const whole = await run();
    expect(whole.pieces).toBe(0);
    const split = await run(whole.floor);
    for (const kind of ['model.embed_tokens.weight', 'lm_head.weight', 'layers.0.mlp.gate_proj.weight', 'layers.1.mlp.experts.up_proj.weight']) {
      expect([...split.split].some((n) => n.endsWith(kind)), `${kind} split`).toBe(true);
    }
    expect(split.rows.every((row) => row.every(Number.isFinite))).toBe(true);
    expect(bits(split.rows)).toEqual(bits(whole.rows));
  });
});
