// Which tensors the forward pass can read in row bands, when one of them is larger than a storage
// binding (src/model/placement.ts splits them): every Linear that goes through src/model/linear.ts
// (each band a GEMV / GEMM writing its columns of y) and the embedding tables (one gather per
// band), the dense MLPs and the shared experts (src/kernels/moe_experts.ts MlpBands: one gate_up
// dispatch per band of gate/up, one down dispatch per band of down). kv_b_proj (read per head by
// mla_absorb) and the norms are bound whole. Stacked routed experts are split by expert ranges
// instead (one pass of the expert kernels per range).

const ROW_SPLIT = [
  /^model\.embed_tokens\.weight$/,
  /^lm_head\.weight$/,
  /^model\.layers\.\d+\.embed_tokens\.weight$/, // the MTP module's copy
  /^model\.layers\.\d+\.shared_head\.head\.weight$/,
  /^model\.layers\.\d+\.eh_proj\.weight$/,
  /^model\.layers\.\d+\.self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|o_proj)\.weight$/,
  /^model\.layers\.\d+\.mlp\.gate\.weight$/, // the router
  /^model\.layers\.\d+\.mlp\.(shared_experts\.)?(gate_proj|up_proj|down_proj)\.weight$/, // dense MLPs, shared experts (MlpBands)
];

export function rowSplittable(name: string): boolean {
  return ROW_SPLIT.some((re) => re.test(name));
}
