// Groups the (token, k) pairs of a prefill chunk by expert, for the grouped expert kernels
// (moe_experts_gate_up.wgsl, moe_experts_down.wgsl): a counting sort with a deterministic order.
//   expert_offsets[e] = number of pairs whose expert is < e          (expert_offsets[E] = T * topk)
//   sorted_pairs[expert_offsets[e] ..  expert_offsets[e + 1]) = the pairs p = t * topk + k with
//                                     topk_ids[p] == e, ascending (by token, then k)
// Ids >= E (never made by the router) are dropped: they leave expert_offsets[E] < T * topk.
// Reference: groupByExpertRef in src/kernels/moe_experts.ref.ts. Wrapper: src/kernels/moe_group.ts.
//
// One workgroup; invocation lid owns experts lid, lid + WG, ... and scans all pairs twice (count,
// then scatter); invocation 0 turns the counts into offsets in between. T * topk * E compares:
// 1M for a 512-token chunk of DeepSeek-V3, far less than one expert matmul.
// Dispatch: (1, 1, 1).
//
// Bindings:
//   0 params          uniform Params
//   1 topk_ids        [T * topk] u32
//   2 expert_offsets  [E + 1] u32, written
//   3 sorted_pairs    [T * topk] u32, written

struct Params {
  pairs: u32,   // T * topk
  experts: u32, // E
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> topk_ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> expert_offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> sorted_pairs: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  for (var e = lid; e < params.experts; e += WG) {
    var count = 0u;
    for (var p = 0u; p < params.pairs; p++) {
      count += select(0u, 1u, topk_ids[p] == e);
    }
    expert_offsets[e + 1u] = count;
  }
  storageBarrier();
  if (lid == 0u) {
    // exclusive prefix sum, serial: E additions
    expert_offsets[0] = 0u;
    for (var e = 1u; e <= params.experts; e++) {
      expert_offsets[e] += expert_offsets[e - 1u];
    }
  }
  storageBarrier();
  for (var e = lid; e < params.experts; e += WG) {
    var at = expert_offsets[e];
    for (var p = 0u; p < params.pairs; p++) {
      if (topk_ids[p] == e) {
        sorted_pairs[at] = p;
        at++;
      }
    }
  }
}
