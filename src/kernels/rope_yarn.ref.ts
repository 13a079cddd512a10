// CPU reference of shaders/rope_yarn.wgsl (src/model/MATH.md 4.3, official apply_rotary_emb):
// the angle is the float32 product position * inv_freq[i], as torch.outer computes it in the
// official precompute_freqs_cis; cos, sin and the rotation are then evaluated in float64.

export interface RopeSlices {
  /** T: rows (tokens). */
  rows: number;
  /** Rope slices per row: num_attention_heads for q, 1 for k_pe. */
  heads: number;
  /** dr = qk_rope_head_dim (even). */
  ropeDim: number;
  /** Elements between the starts of consecutive rows. */
  rowStride: number;
  /** Elements between the starts of consecutive heads of a row. */
  headStride: number;
  /** Element offset of the rope slice within row 0, head 0. */
  ropeOffset: number;
}

/** Rotates the interleaved pairs of every rope slice of `x` in place. */
export function ropeRef(x: Float32Array, slices: RopeSlices, positions: Uint32Array, invFreq: Float32Array): void {
  const { rows, heads, ropeDim, rowStride, headStride, ropeOffset } = slices;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < heads; h++) {
      const base = t * rowStride + h * headStride + ropeOffset;
      for (let i = 0; i < ropeDim / 2; i++) {
        // float32 * float32 is exact in float64, so one fround is torch's float32 multiply.
        const angle = Math.fround(positions[t] * invFreq[i]);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const x0 = x[base + 2 * i];
        const x1 = x[base + 2 * i + 1];
        x[base + 2 * i] = x0 * c - x1 * s;
        x[base + 2 * i + 1] = x0 * s + x1 * c;
      }
    }
  }
}
