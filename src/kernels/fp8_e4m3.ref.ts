// e4m3fn (torch.float8_e4m3fn), the executable spec (src/model/MATH.md section 3):
// bits `s eeee mmm`, exponent bias 7;
//   e = 0:      (-1)^s * (m/8) * 2^-6            subnormals, smallest 2^-9
//   e = 1..15:  (-1)^s * (1 + m/8) * 2^(e-7)     except e = 15, m = 7: NaN (0x7F, 0xFF)
// no infinities, largest finite 0x7E = 448, 0x80 = -0.
// The WGSL twin is shaders/fp8_e4m3.wgsl.

/** The largest finite e4m3fn value (code 0x7E). */
export const E4M3_MAX = 448;

/** Value of one e4m3fn code (0..255). */
export function e4m3ToF32(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 0xf;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return sign * (m / 8) * 2 ** -6;
  return sign * (1 + m / 8) * 2 ** (e - 7);
}

/** All 256 codes decoded: E4M3_VALUES[code]. */
export const E4M3_VALUES: Float32Array = Float32Array.from({ length: 256 }, (_, code) => e4m3ToF32(code));

/** Round half to even, for an x whose halves are exact (a float times a power of two). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The e4m3fn code nearest to the float32 value of `x`, ties to the even code; |x| > 448
 * saturates to ±448 (the official Triton act_quant converts with saturation; its inputs never
 * exceed 448 by more than a rounding error), NaN gives 0x7F. Sign is kept, so -0 gives 0x80.
 */
export function f32ToE4m3(x: number): number {
  const v = Math.fround(x);
  if (Number.isNaN(v)) return 0x7f;
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  const a = Math.min(Math.abs(v), E4M3_MAX);
  if (a < 2 ** -6) {
    // subnormal steps of 2^-9; rounding up to 8 gives 0x08, the smallest normal, as it should
    return sign | roundHalfEven(a * 512);
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1; // log2 may be off by one next to a power of two
  if (2 ** (e + 1) <= a) e += 1;
  let q = roundHalfEven((a / 2 ** e) * 8); // 8 .. 16: the significand with 3 fraction bits
  if (q === 16) {
    q = 8;
    e += 1;
  }
  return sign | ((e + 7) << 3) | (q - 8);
}
