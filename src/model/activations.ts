// The working buffers of one plan: everything a decoder layer reads and writes for T rows, shared
// by all layers of the plan (layers run one after another). Sizes follow the config and T only.

import type { DeepseekV3Config } from '../config.ts';
import { createMoeExpertsScratch, MOE_DECODE_MAX_TOKENS, moeExpertsScratchBytes, type MoeExpertsScratch, type MoeExpertsShape, type MoePath } from '../kernels/moe_experts.ts';

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
  /** [T, max(intermediate_size, n_shared_experts * moe_intermediate_size)] MLP hidden (the shared experts' where they run as an MLP) */
  readonly mlpH: GPUBuffer;
  /** [T, n_routed_experts] router logits; [T, num_experts_per_tok] ids (u32) and weights */
  readonly routerLogits: GPUBuffer;
  readonly topkIds: GPUBuffer;
  readonly topkWeights: GPUBuffer;
  /** [T, num_experts_per_tok] u32: each pair's slot in an offloaded layer's expert cache (src/model/expert_offload.ts). */
  readonly topkSlots: GPUBuffer;
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

/** The f32 element count of each plain buffer of a plan of T rows (absent: not used by this config). */
function bufferCounts(c: DeepseekV3Config, T: number): Record<string, number | undefined> {
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  const hasMoe = c.n_routed_experts > 0 && c.num_hidden_layers > c.first_k_dense_replace;
  return {
    ids: T,
    positions: T,
    h: T * d,
    x: T * d,
    q_a: c.q_lora_rank === null ? undefined : T * c.q_lora_rank,
    q_a_norm: c.q_lora_rank === null ? undefined : T * c.q_lora_rank,
    q: T * H * c.qk_head_dim,
    kv_a: T * c.latent_cache_dim,
    q_lat: T * H * c.kv_lora_rank,
    q_pe: T * H * c.qk_rope_head_dim,
    o_lat: T * H * c.kv_lora_rank,
    o: T * H * c.v_head_dim,
    attn_out: T * d,
    ffn_out: T * d,
    mlp_h: T * Math.max(c.intermediate_size, c.n_shared_experts * c.moe_intermediate_size, 1),
    router_logits: hasMoe ? T * Math.max(1, c.n_routed_experts) : 1,
    topk_ids: T * Math.max(1, c.num_experts_per_tok),
    topk_weights: T * Math.max(1, c.num_experts_per_tok),
    topk_slots: T * Math.max(1, c.num_experts_per_tok),
    x_routed: hasMoe && c.quantization_config?.scale_fmt === 'ue8m0' ? T * d : undefined,
    hidden: T * d,
  };
}

/** The routed experts' scratch of a plan of T rows: its shape and path. */
function scratchShape(c: DeepseekV3Config, T: number): { shape: MoeExpertsShape; path: MoePath } {
  const shape = { tokens: T, hidden_size: c.hidden_size, moe_intermediate_size: Math.max(1, c.moe_intermediate_size), n_routed_experts: Math.max(1, c.n_routed_experts), num_experts_per_tok: Math.max(1, c.num_experts_per_tok) };
  return { shape, path: T <= MOE_DECODE_MAX_TOKENS ? 'decode' : 'grouped' };
}

const bufferBytes = (count: number) => Math.max(16, 4 * count);

/** Bytes of every buffer createActivations makes for T rows, by name (for the memory plan). */
export function activationBytes(c: DeepseekV3Config, rows: number, expertRanges = 1): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, count] of Object.entries(bufferCounts(c, rows))) if (count !== undefined) out[name] = bufferBytes(count);
  const { shape, path } = scratchShape(c, rows);
  for (const [name, bytes] of Object.entries(moeExpertsScratchBytes(shape, path, expertRanges))) if (bytes > 0) out[`moe.${name}`] = bytes;
  return out;
}

/** `expertRanges`: the most expert ranges a layer's stacked experts are split into (ModelWeights.expertRanges). */
export function createActivations(device: GPUDevice, c: DeepseekV3Config, rows: number, label = 'act', expertRanges = 1): Activations {
  const owned: GPUBuffer[] = [];
  const counts = bufferCounts(c, rows);
  const make = (name: string) => {
    const b = device.createBuffer({ label: `${label}.${name}`, size: bufferBytes(counts[name]!), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    owned.push(b);
    return b;
  };
  const optional = (name: string) => (counts[name] === undefined ? undefined : make(name));
  const { shape, path } = scratchShape(c, rows);
  const scratch = createMoeExpertsScratch(device, shape, path, `${label}.moe`, expertRanges);
  const acts: Activations = {
    rows,
    ids: make('ids'),
    positions: make('positions'),
    h: make('h'),
    x: make('x'),
    qA: optional('q_a'),
    qANorm: optional('q_a_norm'),
    q: make('q'),
    kvA: make('kv_a'),
    qLat: make('q_lat'),
    qPe: make('q_pe'),
    oLat: make('o_lat'),
    o: make('o'),
    attnOut: make('attn_out'),
    ffnOut: make('ffn_out'),
    mlpH: make('mlp_h'),
    routerLogits: make('router_logits'),
    topkIds: make('topk_ids'),
    topkWeights: make('topk_weights'),
    topkSlots: make('topk_slots'),
    moeScratch: scratch,
    xRouted: optional('x_routed'),
    hidden: make('hidden'),
    destroy() {
      for (const b of owned) b.destroy();
      owned.length = 0;
      scratch.destroy();
    },
  };
  return acts;
}
