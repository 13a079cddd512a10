// The decode_route passes' `reads` per_expert variant (moe_experts_gate_up.wgsl, moe_experts_down.wgsl;
// prepended after moe_route_common.wgsl and moe_experts_common.wgsl by src/gpu/shader_compose.ts):
// every invocation runs the router's selection for all T tokens (moe_route_common.wgsl's code, in
// moe_route.wgsl's order), so that one invocation can serve every pair that chose an expert and
// load each of its weight quads once: in an MTP verify step (T = 2) an expert both rows chose is
// read once, not twice. The pairs keep their rows of h (pair = t * topk + k) and each pair gets
// the same operations in the same order as in the per_pair variant: the same bits. T * topk <=
// MAX_PAIRS and T <= 4 (the wrapper's test).
//
// Pair p's expert "belongs" to the first token that chose it: p leads when no earlier token chose
// it, and the later pairs of the same expert (at most one per token: a token's picks are distinct)
// ride along (its sharers). A NONE pick (only with NaN scores) leads alone, as its own pair.
//   down     route_weights: every token's picks and weights into private arrays (it needs them
//            all), then chosen_before / sharers over them.
//   gate_up  lead(p): its row's own pick (p's k + 1 passes over the experts, as per_pair), and for
//            each other token only whether, and where, it chose that expert (pick_position: 2
//            passes, not K + 1): the selection costs a row K + 2 (T - 1) passes, not T (K + 1).

const MAX_PAIRS: u32 = 32u; // T * topk: 4 tokens of 8 experts (DeepSeek-V3's topk)

// T, a pipeline constant: the slots of Sums4 / Dots4 past it fold away (on CPU adapters, which
// keep every lane of a vec4 in a register of its own, 4 slots of accumulators spill at T = 2).
override TOKENS: u32 = 4u;

// The down's picks: the expert ids in (t, k) order, NONE where no expert qualified, and each
// pair's routing weight (route_weights).
var<private> picks: array<u32, MAX_PAIRS>;
var<private> pick_weights: array<f32, MAX_PAIRS>;

// picks[t * topk + k] for every token t, with each pick's weight: its unbiased score over the
// sum of its token's picks' scores, summed in k order (moe_route.wgsl's expressions; a NONE pick
// scores 0). softmax's weight_score reads the token's prepare_scores: token by token.
fn route_weights() {
  for (var t = 0u; t < params.tokens; t++) {
    prepare_scores(t);
    let kept = kept_groups(t);
    var prev = Pick(0.0, NONE);
    var sum = 0.0;
    let first = t * params.topk;
    for (var k = 0u; k < params.topk; k++) {
      let pick = next_pick(t, kept, prev);
      var s = 0.0;
      if (pick.id != NONE) {
        s = weight_score(t, pick.id);
        prev = pick;
      }
      sum += s;
      picks[first + k] = pick.id;
      pick_weights[first + k] = s;
    }
    for (var k = 0u; k < params.topk; k++) {
      pick_weights[first + k] = routing_weight(pick_weights[first + k], sum);
    }
  }
}

// Whether a token before pair p's chose p's expert (p then rides along with that token's pair).
fn chosen_before(p: u32) -> bool {
  let e = picks[p];
  if (e == NONE) {
    return false;
  }
  let before = (p / params.topk) * params.topk;
  for (var q = 0u; q < before; q++) {
    if (picks[q] == e) {
      return true;
    }
  }
  return false;
}

// The pairs served with leading pair p: p, then the pair of each later token that chose its expert.
struct Sharers {
  pairs: vec4<u32>, // pairs[c] for c < count; the rest repeat p (valid rows, not stored)
  count: u32,
}

fn sharers(p: u32) -> Sharers {
  var s = Sharers(vec4<u32>(p), 1u);
  let e = picks[p];
  if (e == NONE) {
    return s;
  }
  let pairs = params.tokens * params.topk;
  for (var q = (p / params.topk + 1u) * params.topk; q < pairs; q++) {
    if (picks[q] == e) {
      s.pairs[s.count] = q;
      s.count++;
    }
  }
  return s;
}

fn is_nan_score(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; // by its bits: a compiler may assume v == v
}

// Where expert e (< experts) is among token t's picks, or NONE where t did not choose it, in one
// pass over the experts instead of next_pick's K (kept: kept_groups(t), after prepare_scores(t)).
// next_pick's sequence is: the first expert of the kept groups alone, if its c is NaN; else the
// kept experts of non-NaN c in (c desc, id asc) order, the first K (then NONE). So e, kept and of
// non-NaN c, is pick k = the count of such experts ranking before it, when k < K. Every
// invocation calls it alike (the subgroup count is uniform control flow: no early return).
fn pick_position(t: u32, kept: u32, e: u32) -> u32 {
  let per_group = route.experts / route.groups;
  let c = biased_score(t, e);
  var before = 0u;
#if route_reduce == subgroup
  for (var other = route_rank; other < route.experts; other += route_lanes) {
#else
  for (var other = 0u; other < route.experts; other++) {
#endif
    if ((kept & (1u << (other / per_group))) == 0u) {
      continue;
    }
    let c_other = biased_score(t, other);
    if (!is_nan_score(c_other) && ranks_before(c_other, other, c, e)) {
      before++;
    }
  }
#if route_reduce == subgroup
  before = subgroupAdd(before);
#endif
  let first = firstTrailingBit(kept) * per_group; // the first expert of the kept groups
  let chosen = (kept & (1u << (e / per_group))) != 0u && !is_nan_score(c) && before < params.topk;
  return select(select(NONE, before, chosen), select(NONE, 0u, e == first), is_nan_score(biased_score(t, first)));
}

// Pair p's expert and the pairs gate_up's row p serves: none (count 0) when an earlier token chose
// that expert (that token's row serves p) or when p's pick is NONE.
struct Lead {
  e: u32,
  s: Sharers,
}

fn lead(p: u32) -> Lead {
  let t = p / params.topk;
  prepare_scores(t);
  let kept = kept_groups(t);
  var prev = Pick(0.0, NONE);
  var e = NONE;
  for (var k = 0u; k <= p % params.topk; k++) {
    let pick = next_pick(t, kept, prev);
    if (pick.id != NONE) {
      prev = pick;
    }
    e = pick.id;
  }
  // the other tokens' pick_position of e (of a valid id while e is NONE: every lane runs them)
  let asked = min(e, route.experts - 1u);
  var s = Sharers(vec4<u32>(p), 1u);
  var earlier = false;
  for (var other = 0u; other < params.tokens; other++) {
    if (other == t) {
      continue;
    }
    prepare_scores(other);
    let k = pick_position(other, kept_groups(other), asked);
    if (k != NONE && other < t) {
      earlier = true;
    }
    if (k != NONE && other > t) {
      s.pairs[s.count] = other * params.topk + k;
      s.count++;
    }
  }
  if (e == NONE || earlier) {
    s.count = 0u;
  }
  return Lead(e, s);
}
