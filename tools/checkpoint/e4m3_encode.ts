// float -> e4m3fn byte (torch.float8_e4m3fn, DEEPSEEK_V3_MATH.md 3): bit layout s eeee mmm, bias 7,
// subnormals at e = 0, no infinities, 0x7F/0xFF NaN. Round to nearest, ties to even; magnitudes
// beyond 448 saturate to +-448, so no NaN code is ever produced. For the checkpoint generator;
// the engine's own codec lives in src/kernels.

export const E4M3_MAX = 448;

/** Midpoints between the values of consecutive codes 0..0x7E (exact in float64). */
const MIDPOINTS = Float64Array.from({ length: 0x7e }, (_, c) => (decodeE4m3(c) + decodeE4m3(c + 1)) / 2);

/** The e4m3 code of x (RNE, saturating). Throws on NaN: a generator bug, not data. */
export function encodeE4m3(x: number): number {
  if (Number.isNaN(x)) throw new RangeError('encodeE4m3: NaN has no saturating e4m3 code');
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= E4M3_MAX) return sign | 0x7e;
  // Codes 0..0x7E are ascending in value, so the nearest code is the number of midpoints below a;
  // exactly on a midpoint, take the even code of the two.
  let lo = 0;
  let hi = MIDPOINTS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (MIDPOINTS[mid] < a) lo = mid + 1;
    else hi = mid;
  }
  const code = lo < MIDPOINTS.length && a === MIDPOINTS[lo] && lo % 2 === 1 ? lo + 1 : lo;
  return sign | code;
}

/** The value of an e4m3 code (NaN for 0x7F and 0xFF). */
export function decodeE4m3(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 0xf;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  return e === 0 ? sign * (m / 8) * 2 ** -6 : sign * (1 + m / 8) * 2 ** (e - 7);
}
