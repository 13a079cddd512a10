// The first snippet of gemv_fp8.wgsl's composition (src/kernels/gemv_fp8.ts): a directive must
// come before every declaration, so the subgroup_per_row variant's `enable` cannot live in the
// kernel itself, which is composed after the operand snippets. The other strategies get nothing
// here, so an adapter without 'subgroups' compiles them.
#if strategy == subgroup_per_row
enable subgroups;
#endif
