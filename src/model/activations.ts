// The working buffers of one plan: everything a decoder layer reads and writes for T rows, shared
// by all layers of the plan (layers run one after another). Sizes follow the config and T only.

import type { DeepseekV3Config } from '../config.ts';
import { createMoeExpertsScratch, MOE_DECODE_MAX_TOKENS, type MoeExpertsScratch } from '../kernels/moe_experts.ts';

export interface Activations {
  readonly rows: number;
  /** [T] u32 token ids of the step. */
  readonly ids: GPUBuffer;
  /** [T] u32 absolute positions. */
  readonly positions: GPUBuffer;
  /** [T, hidden] the residual stream. */
  readonly h: GPUBuffer;
  /** [T, hidden] the current norm output (attention or FFN input). */
  readonly x: GPUBuffer;
  /** [T, q_lora_rank] q_a_proj output and its norm (q_lora_rank configs only). */
  readonly qA?: GPUBuffer;
  readonly qANorm?: GPUBuffer;
  /** [T, heads, qk_head_dim] */
  readonly q: GPUBuffer;
  /** [T, kv_lora_rank + qk_rope_head_dim] kv_a_proj_with_mqa output, the cache's row layout. */
  readonly kvA: GPUBuffer;
  /** [T, heads, kv_lora_rank] q_nope · W_UK */
  readonly qLat: GPUBuffer;
  /** [T, heads, qk_rope_head_dim] */
  readonly qPe: GPUBuffer;
  /** [T, heads, kv_lora_rank] attention output in the latent space */
  readonly oLat: GPUBuffer;
  /** [T, heads * v_head_dim] */
  readonly o: GPUBuffer;
  /** [T, hidden] o_proj output */
  readonly attnOut: GPUBuffer;
  /** [T, hidden] the FFN output (dense MLP, or routed + shared experts) */
  readonly ffnOut: GPUBuffer;
  /** [T, hidden] shared experts' output */
  readonly sharedOut: GPUBuffer;
  /** [T, max(intermediate_size, n_shared_experts * moe_intermediate_size)] MLP hidden */
  readonly mlpH: GPUBuffer;
  /** [T, n_routed_experts] router logits; [T, num_experts_per_tok] ids (u32) and weights */
  readonly routerLogits: GPUBuffer;
  readonly topkIds: GPUBuffer;
  readonly topkWeights: GPUBuffer;
  readonly moeScratch: MoeExpertsScratch;
  /**
   * [T, hidden] the routed experts' input rounded with ue8m0 scales, beside x rounded with
   * amax / 448 for the shared experts (W8A8 with scale_fmt "ue8m0": ffn.ts). Only for such configs.
   */
  readonly xRouted?: GPUBuffer;
  /** [T, hidden] after the final norm: the lm_head input (and the MTP module's h). */
  readonly hidden: GPUBuffer;
  destroy(): void;
}

/** `expertRanges`: the most expert ranges a layer's stacked experts are split into (ModelWeights.expertRanges). */
export function createActivations(device: GPUDevice, c: DeepseekV3Config, rows: number, label = 'act', expertRanges = 1): Activations {
  const owned: GPUBuffer[] = [];
  const f32 = (name: string, count: number) => {
    const b = device.createBuffer({ label: `${label}.${name}`, size: Math.max(16, 4 * count), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    owned.push(b);
    return b;
  };
  const T = rows;
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  const mlpWidth = Math.max(c.intermediate_size, c.n_shared_experts * c.moe_intermediate_size, 1);
  const hasMoe = c.n_routed_experts > 0 && c.num_hidden_layers > c.first_k_dense_replace;
  const E = Math.max(1, c.n_routed_experts);
  const K = Math.max(1, c.num_experts_per_tok);
  const scratch = createMoeExpertsScratch(
    device,
    { tokens: T, hidden_size: d, moe_intermediate_size: Math.max(1, c.moe_intermediate_size), n_routed_experts: E, num_experts_per_tok: K },
    T <= MOE_DECODE_MAX_TOKENS ? 'decode' : 'grouped',
    `${label}.moe`,
    expertRanges,
  );
  const acts: Activations = {
    rows,
    ids: f32('ids', T),
    positions: f32('positions', T),
    h: f32('h', T * d),
    x: f32('x', T * d),
    qA: c.q_lora_rank === null ? undefined : f32('q_a', T * c.q_lora_rank),
    qANorm: c.q_lora_rank === null ? undefined : f32('q_a_norm', T * c.q_lora_rank),
    q: f32('q', T * H * c.qk_head_dim),
    kvA: f32('kv_a', T * c.latent_cache_dim),
    qLat: f32('q_lat', T * H * c.kv_lora_rank),
    qPe: f32('q_pe', T * H * c.qk_rope_head_dim),
    oLat: f32('o_lat', T * H * c.kv_lora_rank),
    o: f32('o', T * H * c.v_head_dim),
    attnOut: f32('attn_out', T * d),
    ffnOut: f32('ffn_out', T * d),
    sharedOut: f32('shared_out', T * d),
    mlpH: f32('mlp_h', T * mlpWidth),
    routerLogits: f32('router_logits', hasMoe ? T * E : 1),
    topkIds: f32('topk_ids', T * K),
    topkWeights: f32('topk_weights', T * K),
    moeScratch: scratch,
    xRouted: hasMoe && c.quantization_config?.scale_fmt === 'ue8m0' ? f32('x_routed', T * d) : undefined,
    hidden: f32('hidden', T * d),
    destroy() {
      for (const b of owned) b.destroy();
      owned.length = 0;
      scratch.destroy();
    },
  };
  return acts;
}
