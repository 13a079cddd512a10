import { describe, expect, it } from 'vitest';
import { rng } from '../../src/gpu/testing.ts';
import { decodeE4m3, encodeE4m3 } from './e4m3_encode.ts';

// All finite codes with their values, ascending by value among non-negative ones.
const finite = Array.from({ length: 256 }, (_, c) => c).filter((c) => (c & 0x7f) !== 0x7f);
const positive = finite.filter((c) => c < 0x80).map((c) => ({ c, v: decodeE4m3(c) }));

/** Brute force: the nearest finite code, ties to the even code (last mantissa bit 0). */
function nearest(x: number): number {
  const a = Math.min(Math.abs(x), 448);
  let best = positive[0];
  for (const p of positive) {
    const d = Math.abs(p.v - a);
    const bd = Math.abs(best.v - a);
    if (d < bd || (d === bd && (p.c & 1) === 0)) best = p;
  }
  return (x < 0 || Object.is(x, -0) ? 0x80 : 0) | best.c;
}

describe('encodeE4m3', () => {
  it('decodes the documented edge codes', () => {
    expect(decodeE4m3(0x01)).toBe(2 ** -9);
    expect(decodeE4m3(0x07)).toBe(7 * 2 ** -9);
    expect(decodeE4m3(0x08)).toBe(2 ** -6);
    expect(decodeE4m3(0x7e)).toBe(448);
    expect(decodeE4m3(0xfe)).toBe(-448);
    expect(Object.is(decodeE4m3(0x80), -0)).toBe(true);
    expect(decodeE4m3(0x7f)).toBeNaN();
  });

  it('round-trips every finite code', () => {
    for (const c of finite) expect(encodeE4m3(decodeE4m3(c))).toBe(c);
  });

  it('rounds midpoints to the even code and saturates', () => {
    for (let i = 0; i + 1 < positive.length; i++) {
      const mid = (positive[i].v + positive[i + 1].v) / 2;
      const even = (positive[i].c & 1) === 0 ? positive[i].c : positive[i + 1].c;
      expect(encodeE4m3(mid)).toBe(even);
      expect(encodeE4m3(-mid)).toBe(even | 0x80);
    }
    expect(encodeE4m3(464)).toBe(0x7e);
    expect(encodeE4m3(1e30)).toBe(0x7e);
    expect(encodeE4m3(-Infinity)).toBe(0xfe);
    expect(encodeE4m3(2 ** -11)).toBe(0x00);
    expect(encodeE4m3(-(2 ** -10))).toBe(0x80); // the midpoint of 0 and 2^-9 goes to (negative) zero
    expect(() => encodeE4m3(NaN)).toThrow(RangeError);
  });

  it('matches a brute-force nearest search on random values', () => {
    const next = rng(1234);
    for (let i = 0; i < 20000; i++) {
      const x = (next() - 0.5) * 2 ** (next() * 24 - 12);
      expect(encodeE4m3(x)).toBe(nearest(x));
    }
  });
});
