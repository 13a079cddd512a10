// The bytes floor counts what one decode token reads: no embedding table, no MTP layer, and
// num_experts_per_tok of each layer's routed experts.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import { bytesFloor, decodeBytesByKind } from './bytes_floor.ts';

// The shipped checkpoint's config: 16 routed experts, 4 per token, MTP layer 5.
const config = parseConfig(readFileSync(new URL('../../public/models/webmoe-kjv-12m/config.json', import.meta.url), 'utf8'));

const tensor = (name: string, byteLength: number): TensorInfo => ({ name, dtype: 'F8_E4M3', shape: [byteLength], byteOffset: 0, byteLength, file: 'model.safetensors' });

describe('decodeBytesByKind', () => {
  it('counts every weight a token reads once, routed experts at num_experts_per_tok of n_routed_experts', () => {
    const tensors = [
      tensor('model.embed_tokens.weight', 100_000),
      tensor('model.layers.0.self_attn.q_a_proj.weight', 300),
      tensor('model.layers.0.self_attn.q_a_proj.weight_scale_inv', 4),
      ...Array.from({ length: 16 }, (_, e) => tensor(`model.layers.1.mlp.experts.${e}.down_proj.weight`, 64)),
      tensor('model.layers.1.mlp.shared_experts.down_proj.weight', 96),
      tensor('model.layers.5.self_attn.q_a_proj.weight', 50_000), // the MTP layer: not run without speculation
      tensor('model.layers.5.embed_tokens.weight', 50_000),
      tensor('lm_head.weight', 2000),
    ];
    // 300 + 4 + 16 * 64 * 4/16 + 96 + 2000, of which 16 * 64 * 4/16 routed
    expect(decodeBytesByKind(config, tensors, 'fp8')).toEqual({ total: 2656, routed: 256 });
  });

  it('the floor is the bytes at the copy bandwidth', () => {
    expect(bytesFloor(2e9, 10)).toEqual({ bytes_per_token: 2e9, copy_gbps: 10, floor_ms_per_token: 200, floor_tokens_per_s: 5 });
  });
});
