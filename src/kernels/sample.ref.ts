// CPU reference of shaders/sample.wgsl, written from the definition (a full sort), not from the
// GPU's search: argmax at temperature 0; else softmax(logits / temperature), top-k, then top-p
// within the top-k set, then an inverse-CDF pick over the kept tokens in index order with the
// uniform of (seed, step + row). See the shader's header for the exact definition.

export interface SamplingParams {
  /** 0: greedy (argmax, ties -> lowest index). */
  temperature: number;
  /** Keep the top_k most likely tokens; 0: off. */
  topK: number;
  /** Keep the shortest most-likely prefix holding top_p of the mass; 1: off. */
  topP: number;
  /** u32: with `step`, fixes the uniform of every row. */
  seed: number;
  /** u32: the decode step counter, so that each step draws afresh. */
  step: number;
}

/** PCG hash of a u32 (pcg32's output permutation on one LCG step), in u32 arithmetic. */
export function pcgHash(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/**
 * The uniform in [0, 1) of one row: 24 bits of hash(hash(hash(seed) + step + row)) / 2^24, keyed
 * by the index (step + row) of the token the row samples, so a verify step's row 1 draws what the
 * next plain step would.
 */
export function sampleUniform(seed: number, step: number, row: number): number {
  const h = pcgHash(pcgHash((pcgHash(seed) + step + row) >>> 0));
  return (h >>> 8) / 16777216;
}

/** argmax of one row, ties -> lowest index. */
export function argmaxRef(row: ArrayLike<number>): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

/**
 * The sampler's probability of each token of one row (temperature > 0): 0 outside the kept set,
 * the renormalised softmax inside it.
 */
export function keptDistribution(row: ArrayLike<number>, p: SamplingParams): Float64Array {
  const V = row.length;
  // The kernel reads temperature and top_p as f32.
  const temperature = Math.fround(p.temperature);
  const topP = Math.fround(p.topP);
  const max = row[argmaxRef(row)];
  const mass = Float64Array.from({ length: V }, (_, j) => Math.exp((row[j] - max) / temperature));
  const order = Array.from({ length: V }, (_, j) => j).sort((a, b) => row[b] - row[a] || a - b);
  let n = p.topK > 0 && p.topK < V ? p.topK : V;
  if (topP < 1) {
    let total = 0;
    for (let i = 0; i < n; i++) total += mass[order[i]];
    const target = topP * total;
    let cum = 0;
    let m = 0;
    while (m < n) {
      cum += mass[order[m++]];
      if (cum >= target) break;
    }
    n = m;
  }
  const out = new Float64Array(V);
  let z = 0;
  for (let i = 0; i < n; i++) z += mass[order[i]];
  for (let i = 0; i < n; i++) out[order[i]] = mass[order[i]] / z;
  return out;
}

/** The logits with every token a row's mask refuses (bit j % 32 of word r * ceil(vocab / 32) + j / 32 clear) at -inf. */
export function maskLogitsRef(logits: Float32Array, rows: number, vocab: number, tokenMask: Uint32Array): Float32Array {
  const words = Math.ceil(vocab / 32);
  const out = logits.slice(0, rows * vocab);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < vocab; j++) if (((tokenMask[r * words + (j >>> 5)] >>> (j & 31)) & 1) === 0) out[r * vocab + j] = -Infinity;
  }
  return out;
}

/** Sampled ids of `rows` rows of `vocab` logits, as the kernel computes them (with a token mask: as if the refused logits were -inf). */
export function sampleRef(args: { rows: number; vocab: number; logits: Float32Array; params: SamplingParams; tokenMask?: Uint32Array }): Uint32Array {
  const { rows, vocab, params } = args;
  const logits = args.tokenMask ? maskLogitsRef(args.logits, rows, vocab, args.tokenMask) : args.logits;
  const ids = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    if (params.temperature <= 0) {
      ids[r] = argmaxRef(row);
      continue;
    }
    const probs = keptDistribution(row, params);
    const u = sampleUniform(params.seed, params.step, r);
    // Inverse CDF in index order; rounding past the end -> the last kept token.
    let cum = 0;
    let picked = -1;
    for (let j = 0; j < vocab; j++) {
      if (probs[j] === 0) continue;
      picked = j;
      cum += probs[j];
      if (cum > u) break;
    }
    ids[r] = picked;
  }
  return ids;
}

/**
 * The kept distribution of each row as the kernel's probs variant writes it: keptDistribution at
 * temperature > 0, a point mass at the argmax at temperature 0 (rows of finite logits; with a token
 * mask: as if the refused logits were -inf).
 */
export function sampleProbsRef(args: { rows: number; vocab: number; logits: Float32Array; params: SamplingParams; tokenMask?: Uint32Array }): Float64Array {
  const { rows, vocab, params } = args;
  const logits = args.tokenMask ? maskLogitsRef(args.logits, rows, vocab, args.tokenMask) : args.logits;
  const out = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    if (params.temperature <= 0) out[r * vocab + argmaxRef(row)] = 1;
    else out.set(keptDistribution(row, params), r * vocab);
  }
  return out;
}
