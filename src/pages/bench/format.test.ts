import { describe, expect, it } from 'vitest';
import { bytes, ms, percent, shapeText, sig3 } from './format.ts';

describe('the benchmark page formats', () => {
  it('three significant digits, separators for thousands, exponents only for the tiny', () => {
    expect([0.000123, 0.2081, 53.084, 443.4, 10941.1, 0, 2.7e-7].map(sig3)).toEqual(['0.000123', '0.208', '53.1', '443', '10,941', '0', '2.70e-7']);
  });

  it('writes the unit in every figure', () => {
    expect(ms(0.3284)).toBe('0.328 ms');
    expect(percent(0.0165)).toBe('1.65 %');
    expect(bytes(6.48 * 2 ** 20)).toBe('6.48 MiB');
    expect(bytes(512)).toBe('512 B');
    expect(shapeText({ M: 1, K: 7168, N: 1536 })).toBe('M=1 K=7168 N=1536');
  });
});
