// The DeepSeek router's selection (src/model/MATH.md 4.6; official model.py Gate.forward), shared
// by moe_route.wgsl and the decode_route paths of moe_experts_gate_up.wgsl and
// moe_experts_down.wgsl (prepended by src/gpu/shader_compose.ts), so all choose with the same
// expressions in the same order: the same ids and weights. The kernel declares `route` (uniform RouteParams), `logits`
// ([tokens, experts] f32) and, for noaux_tc, `bias` ([experts] f32).
// Variant axis `routing`: noaux_tc (sigmoid scores + e_score_correction_bias to choose) or
// softmax (DeepSeek-V2: p = softmax(logits) chooses and weighs; no bias). See moe_route.wgsl.
// Variant axis `route_reduce`, who runs one token's selection:
//   thread    one invocation alone: K + 1 serial passes over the experts.
//   subgroup  every invocation of a subgroup together (they must all route the same token, and
//             reach every call in uniform control flow): lane rank takes experts rank, rank +
//             lanes, ... of each pass, and subgroupMax / subgroupMin merge the lanes' bests.
//             The results are those of `thread` bit for bit: maxima and minima are exact, and the
//             merges keep the serial scan's order (c desc, id asc; a NaN first candidate stays, as
//             in next_pick's scan); the softmax's sum stays serial (its order sets its bits). Any
//             subgroup size, full or partial: the lanes are counted, not assumed. This snippet
//             must lead the composed module (its `enable` precedes every declaration).
#if route_reduce == subgroup
enable subgroups;
#endif

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

#if route_reduce == subgroup
// This invocation's rank among the active lanes of its subgroup, and their count (set by
// prepare_scores): lane rank takes experts rank, rank + lanes, ... of a range.
var<private> route_rank: u32;
var<private> route_lanes: u32;
#endif

// Called first, by every invocation that routes token t.
fn prepare_scores(t: u32) {
#if route_reduce == subgroup
  route_rank = subgroupExclusiveAdd(1u);
  route_lanes = subgroupAdd(1u);
#endif
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
#if route_reduce == subgroup
    for (var e = g * per_group + route_rank; e < (g + 1u) * per_group; e += route_lanes) {
#else
    for (var e = g * per_group; e < (g + 1u) * per_group; e++) {
#endif
      let c = biased_score(t, e);
      if (c > first) {
        second = first;
        first = c;
      } else if (c > second) {
        second = c;
      }
    }
#if route_reduce == subgroup
    // The two largest of the group over the lanes (NaN never entered a lane's pair): the largest
    // first; then the largest of the rest, where the one lane holding that first offers its
    // second instead, unless two lanes hold it (then it is also the second).
    let top = subgroupMax(first);
    let holders = subgroupAdd(select(0u, 1u, first == top));
    let rest = subgroupMax(select(first, second, first == top));
    first = top;
    second = select(rest, top, holders > 1u);
#endif
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
#if route_reduce == thread
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
#elif route_reduce == subgroup
fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; // by its bits: a compiler may assume v == v
}

// The pick of the serial scan above, by the lanes together. That scan takes the first qualifying
// expert, then any with a strictly larger c: the result is the first one if its c is NaN, else
// the largest non-NaN c with the lowest id among equals. Each lane scans its experts (ascending)
// for both, and the lanes' answers merge: the lowest first id, the largest c, the lowest id at it.
fn next_pick(t: u32, kept: u32, prev: Pick) -> Pick {
  let per_group = route.experts / route.groups;
  var first = NONE; // this lane's first qualifying expert
  var first_is_nan = false;
  var best = Pick(0.0, NONE); // this lane's best non-NaN one
  for (var e = route_rank; e < route.experts; e += route_lanes) {
    if ((kept & (1u << (e / per_group))) == 0u) {
      continue;
    }
    let c = biased_score(t, e);
    if (prev.id != NONE && !ranks_before(prev.score, prev.id, c, e)) {
      continue; // already picked, or ranks before a pick
    }
    if (first == NONE) {
      first = e;
      first_is_nan = is_nan(c);
    }
    if (!is_nan(c) && (best.id == NONE || c > best.score)) {
      best = Pick(c, e);
    }
  }
  let first_of_all = subgroupMin(first);
  let first_nan = subgroupMin(select(NONE, first, first_is_nan)); // not inside && : every lane must reach it
  let nan_first = first_of_all != NONE && first_nan == first_of_all;
  let top = subgroupMax(select(LOWEST, best.score, best.id != NONE));
  let id = subgroupMin(select(NONE, best.id, best.id != NONE && best.score == top));
  var pick = Pick(select(0.0, top, id != NONE), id);
  if (nan_first) {
    pick = Pick(biased_score(t, first_of_all), first_of_all);
  }
  return pick;
}
#endif

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
