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
//   0 route         uniform RouteParams (moe_route_common.wgsl)
//   1 logits        [tokens, experts] f32, x @ Wg^T
//   2 bias          [experts] f32, e_score_correction_bias
//   3 topk_ids      [tokens, top_k] u32 out
//   4 topk_weights  [tokens, top_k] f32 out
//
// Dispatch, by the variant axis `route_reduce` (moe_route_common.wgsl):
//   thread    one invocation per token, WG per workgroup, workgroups = ceil(tokens / WG).
//   subgroup  one workgroup of WG invocations per token, workgroups = tokens: each subgroup runs
//             the token's selection with its lanes together (a workgroup of several subgroups
//             runs it once per subgroup, each to the same result); invocation 0 writes it.
// Workgroups are laid out over (x, y) as wid.y * nwg.x + wid.x. The selection (scores, kept groups, the K picks) is moe_route_common.wgsl,
// shared with the decode_route paths of moe_experts_gate_up.wgsl and moe_experts_down.wgsl: the K picks are K passes over the
// experts, each taking the best one that ranks after the previous pick in the order (c desc, id
// asc). So any number of experts works; groups are limited to MAX_GROUPS.
// If a pass finds no expert (only possible with NaN logits), its id is 0xffffffff with weight 0.

@group(0) @binding(0) var<uniform> route: RouteParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
#if routing == noaux_tc
@group(0) @binding(2) var<storage, read> bias: array<f32>;
#endif
@group(0) @binding(3) var<storage, read_write> topk_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> topk_weights: array<f32>;

override WG: u32 = 64;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
#if route_reduce == subgroup
  let t = wid.y * nwg.x + wid.x;
  let writer = lid == 0u;
#else
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  let writer = true;
#endif
  if (t >= route.tokens) {
    return;
  }
  prepare_scores(t);
  let kept = kept_groups(t);
  // The K picks, best first; the unbiased s of each pick is its weight before normalising.
  let out = t * route.top_k;
  var prev = Pick(0.0, NONE);
  var sum = 0.0;
  for (var k = 0u; k < route.top_k; k++) {
    let pick = next_pick(t, kept, prev);
    var s = 0.0;
    if (pick.id != NONE) {
      s = weight_score(t, pick.id);
      prev = pick;
    }
    if (writer) {
      topk_ids[out + k] = pick.id;
      topk_weights[out + k] = s;
    }
    sum += s;
  }
  if (writer) {
    for (var k = 0u; k < route.top_k; k++) {
      topk_weights[out + k] = routing_weight(topk_weights[out + k], sum);
    }
  }
}
