// Logit comparisons shared by the model tests: every position's logits from a GpuModel (a prefill,
// then decode steps), and the largest error relative to the largest reference logit.

import type { GpuModel } from '../model/gpu_model.ts';

/** Largest |a - b| over all positions, divided by the largest |b|. */
export function relativeLogitError(rows: readonly ArrayLike<number>[], reference: readonly ArrayLike<number>[]): number {
  let err = 0;
  let scale = 0;
  rows.forEach((row, t) => {
    for (let j = 0; j < row.length; j++) {
      err = Math.max(err, Math.abs(row[j] - reference[t][j]));
      scale = Math.max(scale, Math.abs(reference[t][j]));
    }
  });
  return err / scale;
}

/**
 * Logits of every position of `ids`: the first `prefilled` rows in one prefill (chunked as the
 * model is: GEMM and mla_prefill), then one decode step per remaining id (GEMV and mla_decode).
 */
export async function logitsAtEveryPosition(model: GpuModel, ids: readonly number[], prefilled: number): Promise<Float32Array[]> {
  const cache = model.createCache(ids.length);
  const plans = model.plans(cache);
  try {
    const rows = (await model.forward(plans, ids.slice(0, prefilled), 0, { logits: 'all' })).logits!;
    for (let t = prefilled; t < ids.length; t++) rows.push(...(await model.forward(plans, [ids[t]], t, { logits: 'last' })).logits!);
    return rows;
  } finally {
    plans.destroy();
    cache.destroy();
  }
}
