// Seeded random data and error measures, for tests and benchmarks (browser-safe: no Node imports).

/** mulberry32: a small seeded generator for test data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples from a uniform generator (Box-Muller). */
export function randn(next: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(next(), 1e-12);
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next()) * scale;
  }
  return out;
}

/** ‖a−b‖/‖b‖ and the first differing index, for error messages that show values side by side. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): { rel: number; maxAbs: number; worst: number } {
  let num = 0;
  let den = 0;
  let maxAbs = 0;
  let worst = -1;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
    if (!(Math.abs(d) <= maxAbs)) {
      maxAbs = Math.abs(d);
      worst = i;
    }
  }
  return { rel: Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30), maxAbs, worst };
}
