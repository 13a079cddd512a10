import { officialFixture } from '../testing/fixtures.ts';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { UnsupportedConfigError } from '../errors.ts';
import { ropeInvFreq, yarnCorrectionRange } from './rope_tables.ts';

const FIXTURE = officialFixture();
const reference = JSON.parse(readFileSync(`${FIXTURE}/reference.json`, 'utf8')) as {
  derived: { softmax_scale: number; rope_inv_freq_after_yarn: number[] };
};
const tinyConfig = JSON.parse(readFileSync(`${FIXTURE}/config.json`, 'utf8'));

/** Distance in float32 units in the last place between two positive float32 values. */
function ulpDistance(a: number, b: number): number {
  const bits = new Uint32Array(new Float32Array([a, b]).buffer);
  return Math.abs(bits[0] - bits[1]);
}

describe('ropeInvFreq', () => {
  it('matches the official YaRN table of dsv3-tiny-official to 1 ulp (14 of 16 bit-exact)', () => {
    const inv = ropeInvFreq(tinyConfig);
    const want = reference.derived.rope_inv_freq_after_yarn;
    expect(inv.length).toBe(16);
    const distances = want.map((w, i) => ulpDistance(inv[i], w));
    // The official table comes from torch's float32 pow, which is within 1 ulp; ours rounds
    // theta^e correctly. Measured: pairs 1 and 2 differ by 1 ulp, the rest are identical.
    expect(Math.max(...distances), `ulp distances ${distances}`).toBeLessThanOrEqual(1);
    expect(distances.filter((d) => d === 0).length).toBeGreaterThanOrEqual(14);
  });

  it('gives plain theta^(-2i/dr) without rope_scaling', () => {
    const inv = ropeInvFreq({ qk_rope_head_dim: 8, rope_theta: 10000, rope_scaling: null });
    expect(Array.from(inv)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  it('keeps high frequencies, divides low ones by factor, blends between (V3: low 10, high 23)', () => {
    const v3 = {
      qk_rope_head_dim: 64,
      rope_theta: 10000,
      rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1 },
    };
    expect(yarnCorrectionRange(64, 10000, v3.rope_scaling)).toEqual({ low: 10, high: 23 });
    const plain = ropeInvFreq({ ...v3, rope_scaling: null });
    const yarn = ropeInvFreq(v3);
    for (let i = 0; i <= 10; i++) expect(yarn[i]).toBe(plain[i]);
    for (let i = 23; i < 32; i++) expect(yarn[i]).toBe(Math.fround(plain[i] / 40));
    for (let i = 11; i < 23; i++) {
      expect(yarn[i]).toBeLessThan(plain[i]);
      expect(yarn[i]).toBeGreaterThan(plain[i] / 40);
    }
  });

  it('widens an empty correction range by 0.001 as the official code does', () => {
    // Both correction dims are negative here (cdim(32) = -1.99, cdim(14) = -0.55): low and high clamp to 0.
    const scaling = { factor: 4, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 14 };
    expect(yarnCorrectionRange(32, 10000, scaling)).toEqual({ low: 0, high: 0.001 });
    const inv = ropeInvFreq({ qk_rope_head_dim: 32, rope_theta: 10000, rope_scaling: scaling });
    expect(inv[0]).toBe(1); // ramp 0 at i = low
    expect(inv[1]).toBe(Math.fround(ropeInvFreq({ qk_rope_head_dim: 32, rope_theta: 10000 })[1] / 4)); // ramp 1 above
  });

  it('rejects an odd rope dimension and a non-YaRN scaling type', () => {
    expect(() => ropeInvFreq({ qk_rope_head_dim: 7, rope_theta: 10000 })).toThrow(UnsupportedConfigError);
    const linear = { type: 'linear', factor: 2, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1 };
    expect(() => ropeInvFreq({ qk_rope_head_dim: 8, rope_theta: 10000, rope_scaling: linear })).toThrow(/rope_scaling.type/);
  });
});
