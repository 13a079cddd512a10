// The feed-forward half of a decoder layer, CPU reference: the dense SwiGLU MLP of layers
// < first_k_dense_replace (src/model/MATH.md 4.5) and the MoE of the others (4.6; official
// model.py MoE.forward): router (kernels/moe_route.ref.ts), routed experts weighted by the
// router, plus the always-on shared experts.

import { isMoeLayer, type DeepseekV3Config } from '../../config.ts';
import { moeRouteRef } from '../../kernels/moe_route.ref.ts';
import { linear, swiglu, type ActRounding } from './ops.ts';
import type { ReferenceWeights } from './tensors.ts';

/** One token's routed experts, best first (descending biased score), with their weights. */
export interface RouterChoice {
  readonly ids: readonly number[];
  readonly weights: readonly number[];
}

export interface FfnResult {
  /** [T, hidden_size] */
  y: Float32Array;
  /** Per token, for a MoE layer; null for a dense one. */
  routing: RouterChoice[] | null;
}

/**
 * FFN(x) for x [T, hidden_size] = RMSNorm(h; post_attention_layernorm). rounding (W8A8): the dense
 * MLP and shared experts (parallel Linears officially) round with `parallel`, the routed experts
 * (plain Linears) with `plain`; the router (a BF16 weight) reads x as it is.
 */
export function ffn(weights: ReferenceWeights, config: DeepseekV3Config, layer: number, x: Float32Array, T: number, rounding: ActRounding | null = null): FfnResult {
  const p = `model.layers.${layer}.mlp.`;
  const d = config.hidden_size;
  const mlp = (prefix: string, inter: number, rows: Float32Array, n: number, round: ActRounding['plain'] | null) =>
    swiglu(rows, n, d, inter, weights.get(`${prefix}gate_proj.weight`), weights.get(`${prefix}up_proj.weight`), weights.get(`${prefix}down_proj.weight`), round);
  if (!isMoeLayer(config, layer)) return { y: mlp(p, config.intermediate_size, x, T, rounding?.parallel ?? null), routing: null };

  // Router: f32 logits x Wg^T, then sigmoid, bias for choosing, group-limited top-k (V3), or
  // softmax and greedy / group-limited top-k (V2).
  const E = config.n_routed_experts;
  const K = config.num_experts_per_tok;
  const logits = linear(x, T, weights.get(`${p}gate.weight`), E, d); // [T, E]
  const { ids, weights: routeWeights } = moeRouteRef(logits, config.topk_method === 'noaux_tc' ? weights.get(`${p}gate.e_score_correction_bias`) : null, T, config);

  // Routed experts in expert-index order, as the official loop adds them; each sees only its tokens.
  const acc = new Float64Array(T * d);
  const inter = config.moe_intermediate_size;
  for (let e = 0; e < E; e++) {
    const tokens: number[] = [];
    const gates: number[] = [];
    for (let t = 0; t < T; t++) {
      for (let k = 0; k < K; k++) {
        if (ids[t * K + k] === e) {
          tokens.push(t);
          gates.push(routeWeights[t * K + k]);
        }
      }
    }
    if (tokens.length === 0) continue;
    const rows = new Float32Array(tokens.length * d);
    tokens.forEach((t, i) => rows.set(x.subarray(t * d, (t + 1) * d), i * d));
    const out = mlp(`${p}experts.${e}.`, inter, rows, tokens.length, rounding?.plain ?? null);
    tokens.forEach((t, i) => {
      for (let j = 0; j < d; j++) acc[t * d + j] += Math.fround(out[i * d + j] * gates[i]);
    });
  }
  if (config.n_shared_experts > 0) {
    const shared = mlp(`${p}shared_experts.`, config.n_shared_experts * inter, x, T, rounding?.parallel ?? null);
    for (let i = 0; i < acc.length; i++) acc[i] += shared[i];
  }

  const routing = Array.from({ length: T }, (_, t) => ({
    ids: Array.from(ids.subarray(t * K, (t + 1) * K)),
    weights: Array.from(routeWeights.subarray(t * K, (t + 1) * K)),
  }));
  return { y: Float32Array.from(acc), routing };
}
