// The model-level peer's products are one decode token's weights: checked against the tensor
// table's own count of the parameters a token uses (model/weights.ts countParameters).

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.ts';
import { countParameters, expectedTensors } from '../model/weights.ts';
import { decodeMatmuls, matmulWeightBytes } from './model_peer.ts';

const json = JSON.parse(readFileSync(new URL('../../public/models/webmoe-kjv-12m/config.json', import.meta.url), 'utf8'));
const shipped = parseConfig(json);

describe('decodeMatmuls', () => {
  it("reads each active weight once: the token's parameters less the norms and the router bias", () => {
    for (const config of [shipped, parseConfig({ ...json, q_lora_rank: 0, first_k_dense_replace: 2, n_shared_experts: 2 })]) {
      const mtp = `model.layers.${config.mtp_layer_index}.`;
      let vectors = 0; // norm weights and e_score_correction_bias: read, but not by a product
      for (const [name, t] of expectedTensors(config)) if (t.shape.length === 1 && !name.startsWith(mtp)) vectors += t.shape[0];
      expect(matmulWeightBytes(decodeMatmuls(config)) / 4).toBe(countParameters(config).activePerToken - vectors);
    }
  });

  it('lists the shipped model in order: 5 layers (1 dense, 4 MoE with 4 experts and a shared one), then lm_head', () => {
    const shapes = decodeMatmuls(shipped);
    expect(shapes).toHaveLength(5 * 6 + 3 + 4 * (1 + 4 * 3 + 3) + 1);
    expect(shapes[0]).toEqual({ M: 1, K: 256, N: 128 }); // q_a_proj
    expect(shapes[3]).toEqual({ M: 1, K: 32, N: 64, batch: 4 }); // q_nope by W_UK, per head
    expect(shapes.at(-1)).toEqual({ M: 1, K: 256, N: shipped.vocab_size }); // lm_head
  });
});
