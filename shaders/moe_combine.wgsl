// The weighted sum over each token's chosen experts after the grouped expert kernels, or after the
// decode_pairs ones of split expert ranges (src/model/MATH.md 4.6):
//   out[t, j] = sum over k in order of topk_weights[t, k] * y[t * topk + k, j].
// The same operations in the same order as the decode path of moe_experts_down.wgsl (acc from 0,
// acc += w * y), so both paths round alike and split decode equals unsplit decode bit for bit.
// Reference: src/kernels/moe_experts.ref.ts. Wrapper: src/kernels/moe_experts.ts.
//
// One invocation per output element; workgroups spread over (x, y), flattened as wid.y * nwg.x + wid.x.
//
// Bindings:
//   0 params        uniform Params
//   1 y             [T * topk, hidden_size] f32, from moe_experts_down.wgsl (grouped, decode_pairs)
//   2 topk_weights  [T * topk] f32
//   3 out           [T, hidden_size] f32, written (ACCUMULATE: out += the sum, one addition: the
//                   shared experts written first give the same bits as adding them after)

struct Params {
  tokens: u32,
  topk: u32,
  hidden: u32,
}

override WORKGROUP_SIZE: u32 = 64u;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> topk_weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE + lid;
  if (index >= params.tokens * params.hidden) {
    return;
  }
  let t = index / params.hidden;
  let j = index % params.hidden;
  var acc = 0.0;
  for (var k = 0u; k < params.topk; k++) {
    let pair = t * params.topk + k;
    acc += topk_weights[pair] * y[pair * params.hidden + j];
  }
  if (ACCUMULATE) {
    out[index] = out[index] + acc;
  } else {
    out[index] = acc;
  }
}
