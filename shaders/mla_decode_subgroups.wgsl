// The first snippet of mla_decode.wgsl's composition (src/kernels/mla_decode.ts): a directive must
// come before every declaration, so the subgroup variant's cannot live in the kernel itself, which
// is composed after kv_b_proj's snippets. The other variants get nothing here, so an adapter
// without 'subgroups' compiles them.
//   diagnostic(off, subgroup_uniformity): the subgroup variant computes a score only in the
//   subgroup that owns its position, a branch on subgroupAny (the same in every lane of a
//   subgroup, which WGSL's analysis cannot prove); see item_in_subgroups in mla_decode.wgsl.
#if reduce == subgroup
enable subgroups;
diagnostic(off, subgroup_uniformity);
#endif
