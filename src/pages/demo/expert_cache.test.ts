import { describe, expect, it } from 'vitest';
import { rng, testSeed } from '../../gpu/testing.ts';
import type { OffloadStats } from './lib.ts';
import { hitRate, offloadFigures } from './expert_cache.ts';

const MiB = 2 ** 20;

const stats = (o: Partial<OffloadStats>): OffloadStats => ({
  budgetBytes: 20 * MiB, residentBytes: 12.5 * MiB, hostBytes: 9 * MiB, expertSlots: 2, expertHits: 30, expertMisses: 10,
  uploadedBytes: 3 * MiB, routeWaitMs: 41.6, layers: [{ layer: 1, slots: [3, -1] }], ...o,
});

describe('hitRate', () => {
  it('is the resident share of lookups, floored to 0.1 %: only a cache that never missed reads 100.0 %', () => {
    expect(hitRate(0, 0)).toBeUndefined();
    expect(hitRate(3, 1)).toBe('75.0%');
    expect(hitRate(0, 5)).toBe('0.0%');
    expect(hitRate(7, 0)).toBe('100.0%');
    expect(hitRate(9999, 1)).toBe('99.9%'); // 99.99 % rounded would read 100.0 %
    expect(hitRate(1, 2)).toBe('33.3%');
    expect(hitRate(2, 1)).toBe('66.6%');
  });

  it('brackets the exact share for any counts', () => {
    const next = rng(testSeed('hitRate'));
    for (let i = 0; i < 1000; i++) {
      const hits = Math.floor(next() * 10 ** (1 + 6 * next()));
      const misses = Math.floor(next() * 10 ** (1 + 6 * next()));
      const shown = hitRate(hits, misses);
      if (hits + misses === 0) {
        expect(shown).toBeUndefined();
        continue;
      }
      expect(shown).toMatch(/^\d{1,3}\.\d%$/);
      const value = Number(shown!.slice(0, -1));
      const exact = (100 * hits) / (hits + misses);
      expect(value, `${hits} hits, ${misses} misses`).toBeLessThanOrEqual(exact + 1e-9);
      expect(value + 0.1, `${hits} hits, ${misses} misses`).toBeGreaterThan(exact);
      expect(shown === '100.0%', `${hits} hits, ${misses} misses`).toBe(misses === 0);
    }
  });
});

describe('offloadFigures', () => {
  it('says the hit rate, the misses, the bytes uploaded, GPU against CPU memory, the budget and the wait', () => {
    expect(offloadFigures(stats({}))).toEqual([
      ['hit-rate', 'Hit rate 75.0% of 40 lookups'],
      ['misses', '10 misses'],
      ['uploaded', '3.0 MiB uploaded'],
      ['memory', '12.5 MiB on the GPU vs 9.0 MiB of experts in CPU memory'],
      ['budget', 'GPU budget 20.0 MiB'],
      ['wait', '42 ms waiting for router choices'],
    ]);
  });

  it('before any lookup, with one miss, with slots asked for without a budget, and in thousands', () => {
    const fresh = new Map(offloadFigures(stats({ expertHits: 0, expertMisses: 0, budgetBytes: null })));
    expect(fresh.get('hit-rate')).toBe('No expert looked up yet');
    expect(fresh.get('misses')).toBe('0 misses');
    expect(fresh.get('budget')).toBe('no GPU budget (expert slots asked for)');
    const one = new Map(offloadFigures(stats({ expertHits: 0, expertMisses: 1 })));
    expect(one.get('hit-rate')).toBe('Hit rate 0.0% of 1 lookup');
    expect(one.get('misses')).toBe('1 miss');
    const many = new Map(offloadFigures(stats({ expertHits: 12_000, expertMisses: 3_456, uploadedBytes: 5 * 2 ** 30, routeWaitMs: 1234.4 })));
    expect(many.get('hit-rate')).toBe('Hit rate 77.6% of 15,456 lookups');
    expect(many.get('misses')).toBe('3,456 misses');
    expect(many.get('uploaded')).toBe('5.0 GiB uploaded');
    expect(many.get('wait')).toBe('1,234 ms waiting for router choices');
  });
});
