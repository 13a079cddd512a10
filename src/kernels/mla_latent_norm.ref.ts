// CPU reference of shaders/mla_latent_norm.wgsl: what the separate kernels did, in float64 as their
// references do (rmsnorm.ref.ts, rope_yarn.ref.ts):
//   qANorm[t]                    = RMSNorm(qA[t]; qWeight)                (with q)
//   cache[startPos + t][0, rkv)  = RMSNorm(kvA[t][0, rkv); kvNormWeight)
//   cache[startPos + t][rkv, w)  = RoPE(kvA[t][rkv, w), positions[t])     (w = rkv + ropeDim)

import { rmsNormRef } from './rmsnorm.ref.ts';
import { ropeRef } from './rope_yarn.ref.ts';

export interface MlaLatentNormRefArgs {
  rows: number;
  kvLoraRank: number;
  ropeDim: number;
  eps: number;
  /** [rows, kvLoraRank + ropeDim], left unchanged. */
  kvA: Float32Array;
  kvNormWeight: Float32Array;
  positions: Uint32Array;
  invFreq: Float32Array;
  /** One layer's cache [positions, kvLoraRank + ropeDim], rows startPos .. startPos + rows - 1 written. */
  cache: Float32Array;
  startPos: number;
  /** qANorm [rows, width] written. */
  q?: { width: number; qA: Float32Array; weight: Float32Array; qANorm: Float32Array };
}

export function mlaLatentNormRef(a: MlaLatentNormRefArgs): void {
  const width = a.kvLoraRank + a.ropeDim;
  if (a.q) rmsNormRef({ rows: a.rows, width: a.q.width, eps: a.eps, x: a.q.qA, weight: a.q.weight, y: a.q.qANorm });
  const kPe = a.kvA.slice(0, a.rows * width);
  ropeRef(kPe, { rows: a.rows, heads: 1, ropeDim: a.ropeDim, rowStride: width, headStride: width, ropeOffset: a.kvLoraRank }, a.positions, a.invFreq);
  for (let t = 0; t < a.rows; t++) {
    const row = (a.startPos + t) * width;
    a.cache.set(kPe.subarray(t * width + a.kvLoraRank, (t + 1) * width), row + a.kvLoraRank);
  }
  rmsNormRef({
    rows: a.rows, width: a.kvLoraRank, eps: a.eps, x: a.kvA, weight: a.kvNormWeight, y: a.cache,
    xLayout: { stride: width, offset: 0 }, yLayout: { stride: width, offset: a.startPos * width },
  });
}
