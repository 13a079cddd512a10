// DeepSeek-V3 router after the gate matmul (src/model/MATH.md 4.6; official model.py Gate.forward
// with e_score_correction_bias, topk_method "noaux_tc"), per token t:
//   s = sigmoid(logits[t]);  c = s + bias                                 [E]
//   group score g_j = sum of the 2 largest c in group j (experts j*E/G .. (j+1)*E/G-1)
//   keep the top topk_group groups; c' = c, -inf outside the kept groups
//   topk_ids[t] = top-K of c' in descending order (ties: lower expert id; groups likewise)
//   topk_weights[t, k] = s[id_k] / sum_k' s[id_k'] * routed_scaling_factor  (norm_topk_prob; else s * factor)
// Reference: src/kernels/moe_route.ref.ts. Wrapper: src/kernels/moe_route.ts.
//
// Variant axis `routing`:
//   noaux_tc  DeepSeek-V3, as above
//   softmax   DeepSeek-V2 (HF modeling_deepseek.py MoEGate): p = softmax(logits[t]) chooses and
//             weighs (no bias binding); a group's score is its largest p (group_limited_greedy;
//             greedy runs with params.groups = 1); topk_weights = p / (sum + 1e-20) when
//             norm_topk_prob and top_k > 1, else p * routed_scaling_factor
//
// Bindings:
//   0 params        uniform Params
//   1 logits        [tokens, experts] f32, x @ Wg^T
//   2 bias          [experts] f32, e_score_correction_bias
//   3 topk_ids      [tokens, top_k] u32 out
//   4 topk_weights  [tokens, top_k] f32 out
//
// Dispatch: one invocation per token, WG per workgroup, workgroups laid out over (x, y) as
// wid.y * nwg.x + wid.x. Nothing is stored per expert: the K picks are K passes over the experts,
// each taking the best one that ranks after the previous pick in the order (c desc, id asc), and
// c is recomputed from the logits in each pass (the same expression, so the same value). So any
// number of experts works; groups are limited to MAX_GROUPS.
// If a pass finds no expert (only possible with NaN logits), its id is 0xffffffff with weight 0.

struct Params {
  tokens: u32,
  experts: u32,
  groups: u32,
  topk_group: u32,
  top_k: u32,
  norm_topk_prob: u32,
  routed_scaling_factor: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
#if routing == noaux_tc
@group(0) @binding(2) var<storage, read> bias: array<f32>;
#endif
@group(0) @binding(3) var<storage, read_write> topk_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> topk_weights: array<f32>;

override WG: u32 = 64;

const MAX_GROUPS: u32 = 32u; // the kept groups are bits of a u32
const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -0x1.fffffep+127f; // the lowest finite f32

fn sigmoid(z: f32) -> f32 {
  return 1.0 / (1.0 + exp(-z));
}

// softmax: the largest logit of the token and the sum of exp(logit - max), set before any score.
var<private> row_max: f32;
var<private> row_sum: f32;

// The score c of expert e for token t that chooses: sigmoid + bias (noaux_tc), or p (softmax).
fn biased_score(t: u32, e: u32) -> f32 {
#if routing == noaux_tc
  return sigmoid(logits[t * params.experts + e]) + bias[e];
#else
  return exp(logits[t * params.experts + e] - row_max) / row_sum;
#endif
}

// The score that weighs a chosen expert: sigmoid (noaux_tc) or p (softmax).
fn weight_score(t: u32, e: u32) -> f32 {
#if routing == noaux_tc
  return sigmoid(logits[t * params.experts + e]);
#else
  return biased_score(t, e);
#endif
}

// Whether (score a, index ia) comes before (score b, index ib) in top-k order.
fn ranks_before(a: f32, ia: u32, b: f32, ib: u32) -> bool {
  return a > b || (a == b && ia < ib);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  if (t >= params.tokens) {
    return;
  }
  let per_group = params.experts / params.groups;
#if routing == softmax
  row_max = LOWEST;
  for (var e = 0u; e < params.experts; e++) {
    row_max = max(row_max, logits[t * params.experts + e]);
  }
  row_sum = 0.0;
  for (var e = 0u; e < params.experts; e++) {
    row_sum += exp(logits[t * params.experts + e] - row_max);
  }
#endif

  // Group scores: the sum of each group's two largest c.
  var group_score: array<f32, MAX_GROUPS>;
  for (var g = 0u; g < params.groups; g++) {
    var first = LOWEST;
    var second = LOWEST;
    for (var e = g * per_group; e < (g + 1u) * per_group; e++) {
      let c = biased_score(t, e);
      if (c > first) {
        second = first;
        first = c;
      } else if (c > second) {
        second = c;
      }
    }
#if routing == noaux_tc
    group_score[g] = first + second;
#else
    group_score[g] = first;
#endif
  }
  // A group is kept when fewer than topk_group groups rank before it.
  var kept = 0u;
  for (var g = 0u; g < params.groups; g++) {
    var rank = 0u;
    for (var h = 0u; h < params.groups; h++) {
      if (ranks_before(group_score[h], h, group_score[g], g)) {
        rank++;
      }
    }
    if (rank < params.topk_group) {
      kept |= 1u << g;
    }
  }

  // The K picks, best first; the unbiased s of each pick is its weight before normalising.
  let out = t * params.top_k;
  var prev_score = 0.0;
  var prev_id = NONE;
  var sum = 0.0;
  for (var k = 0u; k < params.top_k; k++) {
    var best_score = 0.0;
    var best_id = NONE;
    for (var e = 0u; e < params.experts; e++) {
      if ((kept & (1u << (e / per_group))) == 0u) {
        continue;
      }
      let c = biased_score(t, e);
      if (prev_id != NONE && !ranks_before(prev_score, prev_id, c, e)) {
        continue; // already picked, or ranks before a pick
      }
      if (best_id == NONE || c > best_score) {
        best_score = c;
        best_id = e;
      }
    }
    var s = 0.0;
    if (best_id != NONE) {
      s = weight_score(t, best_id);
      prev_score = best_score;
      prev_id = best_id;
    }
    topk_ids[out + k] = best_id;
    topk_weights[out + k] = s;
    sum += s;
  }
  for (var k = 0u; k < params.top_k; k++) {
    var w = topk_weights[out + k];
#if routing == noaux_tc
    if (params.norm_topk_prob != 0u) {
      w = w / sum;
    }
    w = w * params.routed_scaling_factor;
#else
    if (params.norm_topk_prob != 0u && params.top_k > 1u) {
      w = w / (sum + 1e-20);
    } else {
      w = w * params.routed_scaling_factor;
    }
#endif
    topk_weights[out + k] = w;
  }
}
