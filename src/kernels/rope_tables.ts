// RoPE tables for DeepSeek-V3: the YaRN inverse frequencies (src/model/MATH.md 4.3) and the
// YaRN softmax scale (4.4). Written from the official inference/model.py `precompute_freqs_cis`
// and `MLA.__init__`, keeping their float32 operation order so the table matches the official
// one (see ropeInvFreq for the one known difference).

import { UnsupportedConfigError } from '../errors.ts';

/** `rope_scaling` of config.json when its type is "yarn" (Hugging Face key names). */
export interface YarnScaling {
  type?: string;
  factor: number;
  original_max_position_embeddings: number;
  beta_fast: number;
  beta_slow: number;
  /** The official ModelArgs.mscale; used only by the softmax scale. */
  mscale_all_dim?: number;
}

/** The config keys RoPE reads (Hugging Face names, so the parsed config fits as is). */
export interface RopeConfig {
  qk_rope_head_dim: number;
  rope_theta: number;
  /** null or absent: plain RoPE. */
  rope_scaling?: YarnScaling | null;
}

const f32 = Math.fround;

/**
 * YaRN's correction range: pair indices at or below `low` keep their frequency, those at or
 * above `high` are divided by `factor`, the ones between are blended linearly. In float64 like
 * the official `find_correction_range` (Python floats).
 */
export function yarnCorrectionRange(dim: number, theta: number, scaling: YarnScaling): { low: number; high: number } {
  const L0 = scaling.original_max_position_embeddings;
  const correctionDim = (rotations: number) => (dim * Math.log(L0 / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  const low = Math.max(Math.floor(correctionDim(scaling.beta_fast)), 0);
  let high = Math.min(Math.ceil(correctionDim(scaling.beta_slow)), dim - 1);
  if (low === high) high += 0.001; // official linear_ramp_factor: avoid dividing by zero
  return { low, high };
}

/**
 * inv'[i] for i = 0 .. dr/2-1: `theta^(-2i/dr)`, then YaRN-blended when `rope_scaling` is set.
 * Every step is rounded to float32 in the official order:
 *   freqs  = 1 / theta^(arange(0, dr, 2) / dr)
 *   smooth = 1 - clamp((arange(dr/2) - low) / (high - low), 0, 1)
 *   freqs  = freqs / factor * (1 - smooth) + freqs * smooth
 * `theta^e` is rounded correctly here, while torch's vectorised float32 pow is only within 1 ulp,
 * so a value can differ from the official table by 1 ulp (2 of the 16 values of the
 * dsv3-tiny-official fixture do; the other 14 are bit-identical).
 *
 * YaRN is applied whenever `rope_scaling` is given, as Hugging Face does. The official code applies
 * it only when its runtime max_seq_len (16384 by default) exceeds original_max_position_embeddings,
 * which holds for its default and for the fixture.
 */
export function ropeInvFreq(config: RopeConfig): Float32Array {
  const dim = config.qk_rope_head_dim;
  if (!Number.isInteger(dim) || dim <= 0 || dim % 2 !== 0) {
    throw new UnsupportedConfigError('qk_rope_head_dim', `must be a positive even integer (RoPE rotates pairs), got ${dim}`);
  }
  const theta = config.rope_theta;
  const inv = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = f32(1 / f32(theta ** f32(f32(2 * i) / dim)));

  const scaling = config.rope_scaling;
  if (!scaling) return inv;
  if (scaling.type !== undefined && scaling.type !== 'yarn') {
    throw new UnsupportedConfigError('rope_scaling.type', `only "yarn" is supported, got "${scaling.type}"`);
  }
  const { low, high } = yarnCorrectionRange(dim, theta, scaling);
  const factor = f32(scaling.factor);
  for (let i = 0; i < dim / 2; i++) {
    const ramp = Math.min(Math.max(f32(f32(i - low) / f32(high - low)), 0), 1);
    const smooth = f32(1 - ramp);
    inv[i] = f32(f32(f32(inv[i] / factor) * f32(1 - smooth)) + f32(inv[i] * smooth));
  }
  return inv;
}
