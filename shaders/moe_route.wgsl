// DeepSeek-V3 router after the gate matmul (src/model/MATH.md 4.6; official model.py Gate.forward
// with e_score_correction_bias, topk_method "noaux_tc"), per token t:
//   s = sigmoid(logits[t]);  c = s + bias                                 [E]
//   group score g_j = sum of the 2 largest c in group j (experts j*E/G .. (j+1)*E/G-1)
//   keep the top topk_group groups; c' = c, -inf outside the kept groups
//   topk_ids[t] = top-K of c' in descending order (ties: lower expert id; groups likewise)
//   topk_weights[t, k] = s[id_k] / sum_k' s[id_k'] * routed_scaling_factor  (norm_topk_prob; else s * factor)
// Reference: src/kernels/moe_route.ref.ts. Wrapper: src/kernels/moe_route.ts.
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
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> topk_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> topk_weights: array<f32>;

override WG: u32 = 64;

const MAX_GROUPS: u32 = 32u; // the kept groups are bits of a u32
const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -0x1.fffffep+127f; // the lowest finite f32

fn sigmoid(z: f32) -> f32 {
  return 1.0 / (1.0 + exp(-z));
}

// The biased score c of expert e for token t, used only to choose.
fn biased_score(t: u32, e: u32) -> f32 {
  return sigmoid(logits[t * params.experts + e]) + bias[e];
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
    group_score[g] = first + second;
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
      s = sigmoid(logits[t * params.experts + best_id]);
      prev_score = best_score;
      prev_id = best_id;
    }
    topk_ids[out + k] = best_id;
    topk_weights[out + k] = s;
    sum += s;
  }
  for (var k = 0u; k < params.top_k; k++) {
    var w = topk_weights[out + k];
    if (params.norm_topk_prob != 0u) {
      w = w / sum;
    }
    topk_weights[out + k] = w * params.routed_scaling_factor;
  }
}
