// The model-level peer: one decode step's matrix products of the loaded model, run by TF.js's
// WebGPU matMul in f32 on the same device, recorded together and submitted once, beside our whole
// decode step on the same adapter. TF.js has no DeepSeek-V3 and no FP8, so this is what an engine
// built on it would do at least: the weight products alone (no attention over the cache, norms,
// RoPE, routing or sampling), each weight read as f32 (4 bytes, ours 1 byte + block scales).
//
// The products of one token, in the official absorbed decode (DeepSeek-V3 inference/model.py,
// MLA.forward with attn_impl "absorb"; src/model/MATH.md):
//   q_a_proj, q_b_proj (or q_proj) · kv_a_proj_with_mqa · q_nope by W_UK per head · the latent
//   by W_UV per head · o_proj · per layer either the dense MLP (gate, up, down) or the router gate,
//   num_experts_per_tok routed experts and the shared experts (gate, up, down) · lm_head.

import type { DeepseekV3Config } from '../config.ts';
import { isMoeLayer } from '../config.ts';
import type { MatmulPeer, MatmulShape } from './peers.ts';

export interface ModelPeerResult {
  name: string;
  /** Wall-clock median of one token's matrix products, submitted once. */
  ms_per_token: number;
  tokens_per_s: number;
  matmuls_per_token: number;
  /** f32 weight bytes the products read per token. */
  weight_bytes_per_token: number;
  runs: number;
}

/** Above this many f32 weight bytes the peer is not run (it would hold a second, 4-byte copy of the active weights). */
export const MODEL_PEER_MAX_BYTES = 1 << 30;

/** The matrix products of one decode token, in the model's order. */
export function decodeMatmuls(c: DeepseekV3Config): MatmulShape[] {
  const h = c.hidden_size;
  const heads = c.num_attention_heads;
  const linear = (K: number, N: number): MatmulShape => ({ M: 1, K, N });
  const mlp = (width: number) => [linear(h, width), linear(h, width), linear(width, h)];
  const out: MatmulShape[] = [];
  for (let layer = 0; layer < c.num_hidden_layers; layer++) {
    if (c.q_lora_rank === null) out.push(linear(h, heads * c.qk_head_dim));
    else out.push(linear(h, c.q_lora_rank), linear(c.q_lora_rank, heads * c.qk_head_dim));
    out.push(
      linear(h, c.kv_lora_rank + c.qk_rope_head_dim),
      { M: 1, K: c.qk_nope_head_dim, N: c.kv_lora_rank, batch: heads }, // q_nope · W_UK
      { M: 1, K: c.kv_lora_rank, N: c.v_head_dim, batch: heads }, // attention output · W_UV
      linear(heads * c.v_head_dim, h),
    );
    if (!isMoeLayer(c, layer)) {
      out.push(...mlp(c.intermediate_size));
      continue;
    }
    out.push(linear(h, c.n_routed_experts));
    for (let e = 0; e < c.num_experts_per_tok; e++) out.push(...mlp(c.moe_intermediate_size));
    if (c.n_shared_experts > 0) out.push(...mlp(c.moe_intermediate_size * c.n_shared_experts));
  }
  out.push(linear(h, c.vocab_size));
  return out;
}

export function matmulWeightBytes(shapes: readonly MatmulShape[]): number {
  return shapes.reduce((n, s) => n + 4 * (s.batch ?? 1) * s.K * s.N, 0);
}

/** Times the model's decode products on the peer; undefined (with the reason) when they are too large to hold twice. */
export async function timeModelPeer(peer: MatmulPeer, config: DeepseekV3Config, runs = 5): Promise<ModelPeerResult | { skipped: string }> {
  const shapes = decodeMatmuls(config);
  const bytes = matmulWeightBytes(shapes);
  if (bytes > MODEL_PEER_MAX_BYTES) return { skipped: `one token's products read ${(bytes / 2 ** 30).toFixed(1)} GiB of f32 weights, over the peer's limit of ${MODEL_PEER_MAX_BYTES / 2 ** 30} GiB` };
  const t = await peer.timeSequence(shapes, { runs, warmup: 1 });
  return {
    name: `${peer.name}, the decode step's matrix products`,
    ms_per_token: t.medianMs,
    tokens_per_s: 1000 / t.medianMs,
    matmuls_per_token: shapes.length,
    weight_bytes_per_token: bytes,
    runs: t.runs,
  };
}
