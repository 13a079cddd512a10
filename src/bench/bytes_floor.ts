// The bytes floor of a decode step: the weight bytes one token must read, over the copy bandwidth
// measured on the same adapter (ceilings.ts). No step can be faster than reading its weights
// once; the measured time per token over this floor says how far the step is from it.
//
// What one token reads, without speculation: every weight buffer on the GPU as the loader lays it
// out (tensorsOnGpu: FP8 codes and block scales, or BF16), except the embedding (one row of it)
// and the MTP layer (not run), with each layer's routed experts counted num_experts_per_tok of
// n_routed_experts (distinct experts: the most a token reads). The latent cache a step reads
// grows with the context and is left out: the floor is the one at the first positions.

import type { DeepseekV3Config } from '../config.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import { tensorsOnGpu, type WeightMode } from '../model/load_weights.ts';
import { expectedTensors } from '../model/weights.ts';

export interface BytesFloor {
  /** Weight bytes one decode step reads. */
  bytes_per_token: number;
  /** Buffer copy bandwidth measured in the same run (read + write bytes, as ceilings.ts counts it). */
  copy_gbps: number;
  /** bytes_per_token at copy_gbps. */
  floor_ms_per_token: number;
  /** The tok/s of a step that only read its weights at copy_gbps. */
  floor_tokens_per_s: number;
}

const ROUTED_EXPERT = /\.mlp\.experts\.\d+\./;

/** The weight bytes one decode token reads, and the part of them that is routed experts (what a second row of a step reads again). */
export function decodeBytesByKind(config: DeepseekV3Config, tensors: readonly TensorInfo[], weights: WeightMode): { total: number; routed: number } {
  const { onGpu } = tensorsOnGpu(tensors, expectedTensors(config), weights);
  const mtp = config.mtp_layer_index === null ? undefined : `model.layers.${config.mtp_layer_index}.`;
  let total = 0;
  let routed = 0;
  for (const t of onGpu) {
    if (t.name === 'model.embed_tokens.weight' || (mtp && t.name.startsWith(mtp))) continue;
    if (ROUTED_EXPERT.test(t.name)) {
      const share = (t.byteLength * config.num_experts_per_tok) / config.n_routed_experts;
      routed += share;
      total += share;
    } else total += t.byteLength;
  }
  return { total, routed };
}

export function bytesFloor(bytesPerToken: number, copyGbps: number): BytesFloor {
  const ms = bytesPerToken / (copyGbps * 1e6);
  return { bytes_per_token: bytesPerToken, copy_gbps: copyGbps, floor_ms_per_token: ms, floor_tokens_per_s: 1000 / ms };
}
