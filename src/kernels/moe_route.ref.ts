// CPU reference of shaders/moe_route.wgsl, straight from src/model/MATH.md 4.6 (official model.py
// Gate.forward with e_score_correction_bias) and, for DeepSeek-V2, the Hugging Face
// modeling_deepseek.py of V2 (MoEGate: softmax, greedy or group_limited_greedy, no bias). Scores
// are rounded to float32 where those hold float32 tensors, so the choices are the ones float32
// arithmetic makes. Top-k order: descending score, ties to the lower index (experts and groups).

/** The router keys of config.json (Hugging Face names). */
export interface RouterConfig {
  n_routed_experts: number;
  n_group: number;
  topk_group: number;
  num_experts_per_tok: number;
  norm_topk_prob: boolean;
  routed_scaling_factor: number;
  /** Default 'sigmoid' / 'noaux_tc' (DeepSeek-V3); 'softmax' with 'greedy' / 'group_limited_greedy' is DeepSeek-V2's. */
  scoring_func?: 'sigmoid' | 'softmax';
  topk_method?: 'noaux_tc' | 'greedy' | 'group_limited_greedy';
}

export interface Routing {
  /** [tokens, K] expert ids, best first. */
  ids: Uint32Array;
  /** [tokens, K] routing weights, in the order of ids. */
  weights: Float32Array;
}

const f32 = Math.fround;

/** Indices of `values` in top-k order (descending, ties to the lower index). */
function topkOrder(values: ArrayLike<number>): number[] {
  return Array.from({ length: values.length }, (_, i) => i).sort((a, b) => values[b] - values[a] || a - b);
}

/** logits: [tokens, E] f32 (x @ Wg^T); bias: [E] e_score_correction_bias (noaux_tc only, else null). */
export function moeRouteRef(logits: Float32Array, bias: Float32Array | null, tokens: number, config: RouterConfig): Routing {
  return (config.topk_method ?? 'noaux_tc') === 'noaux_tc' ? biasedSigmoidRoute(logits, bias!, tokens, config) : softmaxRoute(logits, tokens, config);
}

/** DeepSeek-V3: sigmoid s, c = s + bias to choose; groups by their 2 best c; weights from s. */
function biasedSigmoidRoute(logits: Float32Array, bias: Float32Array, tokens: number, config: RouterConfig): Routing {
  const E = config.n_routed_experts;
  const G = config.n_group;
  const K = config.num_experts_per_tok;
  const perGroup = E / G;
  const ids = new Uint32Array(tokens * K);
  const weights = new Float32Array(tokens * K);
  for (let t = 0; t < tokens; t++) {
    const s = new Float32Array(E);
    const c = new Float32Array(E);
    for (let e = 0; e < E; e++) {
      s[e] = f32(1 / (1 + Math.exp(-logits[t * E + e])));
      c[e] = f32(s[e] + bias[e]);
    }
    const groupScore = new Float32Array(G);
    for (let g = 0; g < G; g++) {
      const [first, second] = Array.from(c.subarray(g * perGroup, (g + 1) * perGroup)).sort((a, b) => b - a);
      groupScore[g] = f32(first + second);
    }
    const kept = new Set(topkOrder(groupScore).slice(0, config.topk_group));
    const masked = c.map((v, e) => (kept.has(Math.floor(e / perGroup)) ? v : -Infinity));
    const chosen = topkOrder(masked).slice(0, K);
    let sum = 0;
    for (const e of chosen) sum = f32(sum + s[e]);
    chosen.forEach((e, k) => {
      ids[t * K + k] = e;
      const w = config.norm_topk_prob ? f32(s[e] / sum) : s[e];
      weights[t * K + k] = f32(w * config.routed_scaling_factor);
    });
  }
  return { ids, weights };
}

/**
 * DeepSeek-V2: softmax p over all experts (max subtracted, summed in expert order); top-k of p
 * over all experts (greedy) or over the topk_group groups with the largest max p
 * (group_limited_greedy); weights p / (sum + 1e-20) when norm_topk_prob and K > 1, else p * factor.
 */
function softmaxRoute(logits: Float32Array, tokens: number, config: RouterConfig): Routing {
  const E = config.n_routed_experts;
  const G = config.topk_method === 'group_limited_greedy' ? config.n_group : 1;
  const K = config.num_experts_per_tok;
  const perGroup = E / G;
  const ids = new Uint32Array(tokens * K);
  const weights = new Float32Array(tokens * K);
  for (let t = 0; t < tokens; t++) {
    const row = logits.subarray(t * E, (t + 1) * E);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    const exps = row.map((v) => f32(Math.exp(f32(v - max))));
    let total = 0;
    for (const v of exps) total = f32(total + v);
    const p = exps.map((v) => f32(v / total));
    const groupScore = new Float32Array(G);
    for (let g = 0; g < G; g++) groupScore[g] = Math.max(...p.subarray(g * perGroup, (g + 1) * perGroup));
    const kept = new Set(topkOrder(groupScore).slice(0, G === 1 ? 1 : config.topk_group));
    const masked = p.map((v, e) => (kept.has(Math.floor(e / perGroup)) ? v : -Infinity));
    const chosen = topkOrder(masked).slice(0, K);
    let sum = 0;
    for (const e of chosen) sum = f32(sum + p[e]);
    const normalise = config.norm_topk_prob && K > 1;
    chosen.forEach((e, k) => {
      ids[t * K + k] = e;
      weights[t * K + k] = normalise ? f32(p[e] / f32(sum + 1e-20)) : f32(p[e] * config.routed_scaling_factor);
    });
  }
  return { ids, weights };
}
