// kv_b_proj.weight read in place, the loaders of the absorbed MLA kernels: a shared snippet,
// prepended by src/gpu/shader_compose.ts to shaders/mla_absorb.wgsl (absorb_q, expand_o) and
// shaders/mla_decode.wgsl (W_UV after one split), so W_UV is read with the same arithmetic in both.
// wkv_b = weight_dequant(kv_b_proj.weight) [heads * (dn + dv), rkv] (src/model/MATH.md 4.4), by the
// kernel's `weights` variant: fp8 e4m3 bytes, 4 per u32, times weight_scale_inv
// [ceil(heads * (dn + dv) / 128), ceil(rkv / 128)] (each element takes the scale of its own block);
// bf16 2 per u32; f32 as u32 bits. The kernel declares `params` (with rkv and scale_cols), `kv_b`,
// `weight_scale_inv` (fp8) and the override RKV_ALIGNED (rkv % 4 == 0).

// The loaders' index arithmetic uses shifts and masks, not / and %, and multiplies for left
// shifts: SwiftShader runs a u32 division in every lane (see matmul_operands.wgsl).

#if weights == fp8
// Index of S[row / 128, c / 128] in weight_scale_inv.
fn scale_index(row: u32, c: u32) -> u32 {
  return (row >> 7u) * params.scale_cols + (c >> 7u);
}
#endif

// wkv_b[row, c]: element (row, c) of the dequantised kv_b_proj.weight [heads * (dn + dv), rkv].
fn kv_b_at(row: u32, c: u32) -> f32 {
  let i = row * params.rkv + c;
#if weights == fp8
  let code = (kv_b[i >> 2u] >> ((i & 3u) * 8u)) & 0xFFu;
  return e4m3_to_f32(code) * weight_scale_inv[scale_index(row, c)];
#elif weights == bf16
  return bitcast<f32>((kv_b[i >> 1u] >> ((i & 1u) * 16u)) * 0x10000u);
#else
  return bitcast<f32>(kv_b[i]);
#endif
}

// wkv_b[row, c0 .. c0+3] (c0 % 4 == 0); columns past rkv read column rkv - 1 (the caller masks
// or drops them).
fn kv_b_quad(row: u32, c0: u32) -> vec4<f32> {
  if (RKV_ALIGNED) {
    let i = row * params.rkv + c0;
#if weights == fp8
    return e4m3x4_to_f32(kv_b[i >> 2u]) * weight_scale_inv[scale_index(row, c0)];
#elif weights == bf16
    let low = kv_b[i >> 1u];
    let high = kv_b[(i >> 1u) + 1u];
    return bitcast<vec4<f32>>(vec4<u32>(low * 0x10000u, low & 0xFFFF0000u, high * 0x10000u, high & 0xFFFF0000u));
#else
    return bitcast<vec4<f32>>(vec4<u32>(kv_b[i], kv_b[i + 1u], kv_b[i + 2u], kv_b[i + 3u]));
#endif
  }
  let last = params.rkv - 1u;
  return vec4<f32>(kv_b_at(row, min(c0, last)), kv_b_at(row, min(c0 + 1u, last)), kv_b_at(row, min(c0 + 2u, last)), kv_b_at(row, min(c0 + 3u, last)));
}
