// The DeepSeek router's selection (src/model/MATH.md 4.6; official model.py Gate.forward), shared
// by moe_route.wgsl and the decode_route paths of moe_experts_gate_up.wgsl and
// moe_experts_down.wgsl (prepended by src/gpu/shader_compose.ts), so all choose with the same
// expressions in the same order: the same ids and weights. The kernel declares `route` (uniform RouteParams), `logits`
// ([tokens, experts] f32) and, for noaux_tc, `bias` ([experts] f32).
// Variant axis `routing`: noaux_tc (sigmoid scores + e_score_correction_bias to choose) or
// softmax (DeepSeek-V2: p = softmax(logits) chooses and weighs; no bias). See moe_route.wgsl.

struct RouteParams {
  tokens: u32,
  experts: u32,
  groups: u32,
  topk_group: u32,
  top_k: u32,
  norm_topk_prob: u32,
  routed_scaling_factor: f32,
  _pad: u32,
}

const MAX_GROUPS: u32 = 32u; // the kept groups are bits of a u32
const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -0x1.fffffep+127f; // the lowest finite f32

fn sigmoid(z: f32) -> f32 {
  return 1.0 / (1.0 + exp(-z));
}

// softmax: the largest logit of the token and the sum of exp(logit - max), set by
// prepare_scores before any score.
var<private> row_max: f32;
var<private> row_sum: f32;

fn prepare_scores(t: u32) {
#if routing == softmax
  row_max = LOWEST;
  for (var e = 0u; e < route.experts; e++) {
    row_max = max(row_max, logits[t * route.experts + e]);
  }
  row_sum = 0.0;
  for (var e = 0u; e < route.experts; e++) {
    row_sum += exp(logits[t * route.experts + e] - row_max);
  }
#endif
}

// The score c of expert e for token t that chooses: sigmoid + bias (noaux_tc), or p (softmax).
fn biased_score(t: u32, e: u32) -> f32 {
#if routing == noaux_tc
  return sigmoid(logits[t * route.experts + e]) + bias[e];
#else
  return exp(logits[t * route.experts + e] - row_max) / row_sum;
#endif
}

// The score that weighs a chosen expert: sigmoid (noaux_tc) or p (softmax).
fn weight_score(t: u32, e: u32) -> f32 {
#if routing == noaux_tc
  return sigmoid(logits[t * route.experts + e]);
#else
  return biased_score(t, e);
#endif
}

// Whether (score a, index ia) comes before (score b, index ib) in top-k order.
fn ranks_before(a: f32, ia: u32, b: f32, ib: u32) -> bool {
  return a > b || (a == b && ia < ib);
}

// The groups token t keeps, as bits: a group's score is the sum of its two largest c (noaux_tc)
// or its largest p (softmax); a group is kept when fewer than topk_group groups rank before it.
fn kept_groups(t: u32) -> u32 {
  let per_group = route.experts / route.groups;
  var group_score: array<f32, MAX_GROUPS>;
  for (var g = 0u; g < route.groups; g++) {
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
  var kept = 0u;
  for (var g = 0u; g < route.groups; g++) {
    var rank = 0u;
    for (var other = 0u; other < route.groups; other++) {
      if (ranks_before(group_score[other], other, group_score[g], g)) {
        rank++;
      }
    }
    if (rank < route.topk_group) {
      kept |= 1u << g;
    }
  }
  return kept;
}

// A chosen expert and its biased score c.
struct Pick {
  score: f32,
  id: u32,
}

// The next pick of token t: the best expert of the kept groups that ranks after `prev` in the
// order (c desc, id asc); prev.id NONE for the first pick. Nothing is stored per expert: c is
// recomputed from the logits (the same expression, so the same value). id NONE when no expert
// qualifies (only possible with NaN logits).
fn next_pick(t: u32, kept: u32, prev: Pick) -> Pick {
  let per_group = route.experts / route.groups;
  var best = Pick(0.0, NONE);
  for (var e = 0u; e < route.experts; e++) {
    if ((kept & (1u << (e / per_group))) == 0u) {
      continue;
    }
    let c = biased_score(t, e);
    if (prev.id != NONE && !ranks_before(prev.score, prev.id, c, e)) {
      continue; // already picked, or ranks before a pick
    }
    if (best.id == NONE || c > best.score) {
      best = Pick(c, e);
    }
  }
  return best;
}

// The weight of a pick whose unbiased score is s, given the sum of the K picks' scores.
fn routing_weight(s: f32, sum: f32) -> f32 {
#if routing == noaux_tc
  var w = s;
  if (route.norm_topk_prob != 0u) {
    w = w / sum;
  }
  return w * route.routed_scaling_factor;
#else
  if (route.norm_topk_prob != 0u && route.top_k > 1u) {
    return s / (sum + 1e-20);
  }
  return s * route.routed_scaling_factor;
#endif
}
