// The executable spec of mla_absorb (src/model/MATH.md 4.4, official model.py MLA.forward with
// attn_impl "absorb"): wkv_b = weight_dequant(kv_b_proj) viewed as [heads, dn + dv, rkv];
//   q_lat = einsum("shd,hdc->shc", q_nope, wkv_b[:, :dn])
//   q_pe  = apply_rotary_emb(q[..., dn:], freqs_cis)      (ropeRef, rope_yarn.ref.ts)
//   o     = einsum("shc,hdc->shd", o_lat, wkv_b[:, -dv:])
// Sums in float64 (the exact value the f32 kernel approximates), rounded once to f32.

import type { MlaAbsorbShape } from './mla_absorb.ts';
import { ropeRef } from './rope_yarn.ref.ts';

export interface KvBRef {
  /** kv_b_proj.weight [heads * (dn + dv), rkv] dequantised to f32 (gemm_fp8.ref.ts dequantizeRef). */
  kvB: Float32Array;
}

export interface RopeRef {
  /** [rows] absolute positions. */
  positions: Uint32Array;
  /** [dr / 2] YaRN inverse frequencies. */
  invFreq: Float32Array;
}

/** q [rows, heads, dn + dr] -> qLat [rows, heads, rkv] = q_nope @ W_UK[h], qPe [rows, heads, dr] = RoPE(q[..., dn:]). */
export function absorbQRef(args: MlaAbsorbShape & KvBRef & RopeRef & { q: Float32Array }): { qLat: Float32Array; qPe: Float32Array } {
  const { rows, heads, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv, kvLoraRank: rkv, kvB, q, positions, invFreq } = args;
  const qLat = new Float32Array(rows * heads * rkv);
  const qPe = new Float32Array(rows * heads * dr);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      const qRow = (r * heads + h) * (dn + dr);
      const wUK = h * (dn + dv) * rkv; // W_UK[h][0, 0] in kv_b_proj
      for (let c = 0; c < rkv; c++) {
        let acc = 0;
        for (let d = 0; d < dn; d++) acc += q[qRow + d] * kvB[wUK + d * rkv + c];
        qLat[(r * heads + h) * rkv + c] = acc;
      }
      qPe.set(q.subarray(qRow + dn, qRow + dn + dr), (r * heads + h) * dr);
    }
  }
  ropeRef(qPe, { rows, heads, ropeDim: dr, rowStride: heads * dr, headStride: dr, ropeOffset: 0 }, positions, invFreq);
  return { qLat, qPe };
}

/** oLat [rows, heads, rkv] -> o [rows, heads * dv], o[r, h, v] = sum_c oLat[r, h, c] * W_UV[h][v, c]. */
export function expandORef(args: MlaAbsorbShape & KvBRef & { oLat: Float32Array }): Float32Array {
  const { rows, heads, qkNopeHeadDim: dn, vHeadDim: dv, kvLoraRank: rkv, kvB, oLat } = args;
  const o = new Float32Array(rows * heads * dv);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      const lat = (r * heads + h) * rkv;
      for (let v = 0; v < dv; v++) {
        const wUV = (h * (dn + dv) + dn + v) * rkv; // W_UV[h][v, 0] in kv_b_proj
        let acc = 0;
        for (let c = 0; c < rkv; c++) acc += oLat[lat + c] * kvB[wUV + c];
        o[(r * heads + h) * dv + v] = acc;
      }
    }
  }
  return o;
}
