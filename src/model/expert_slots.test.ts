// The expert cache's placement: hits, uploads and which expert leaves, by frequency and by LRU.

import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { ExpertSlots } from './expert_slots.ts';

describe('ExpertSlots', () => {
  it('fills empty slots first, then evicts the least frequently used expert', () => {
    const c = new ExpertSlots({ experts: 8, slots: 3, decay: 1 });
    expect(c.place([0, 1])).toEqual({ slots: [0, 1], uploads: [{ expert: 0, slot: 0 }, { expert: 1, slot: 1 }], hits: 0 });
    expect(c.place([0, 2])).toEqual({ slots: [0, 2], uploads: [{ expert: 2, slot: 2 }], hits: 1 });
    c.place([2]);
    // Uses: 0 twice, 1 once, 2 twice: 1 leaves.
    expect(c.place([5])).toEqual({ slots: [1], uploads: [{ expert: 5, slot: 1 }], hits: 0 });
    expect(c.slot(1)).toBe(-1);
    expect(c.expert(1)).toBe(5);
  });

  it('LRU evicts the least recently used instead', () => {
    const c = new ExpertSlots({ experts: 8, slots: 2, policy: 'lru' });
    c.place([0]);
    c.place([0]);
    c.place([1]);
    expect(c.place([2]).uploads).toEqual([{ expert: 2, slot: 0 }]); // 0 was used more, but longer ago
  });

  it('frequency decays: an expert used often long ago leaves before one used lately', () => {
    const c = new ExpertSlots({ experts: 8, slots: 2, decay: 0.5 });
    for (let i = 0; i < 4; i++) c.place([0]);
    for (let i = 0; i < 3; i++) c.place([1]);
    // score(0) = (1 + .5 + .25 + .125) * .5^3 < score(1) = 1 + .5 + .25
    expect(c.place([2]).uploads).toEqual([{ expert: 2, slot: 0 }]);
  });

  it('the ids of one request never evict each other, and repeated ids count once', () => {
    const c = new ExpertSlots({ experts: 8, slots: 2 });
    c.place([0, 1]);
    const p = c.place([2, 3, 3]);
    expect(p.uploads.map((u) => u.expert)).toEqual([2, 3]);
    expect(p.slots).toEqual([c.slot(2), c.slot(3), c.slot(3)]);
    expect(new Set(p.slots).size).toBe(2);
  });

  it('one slot: every request of one new expert is one upload into slot 0', () => {
    const c = new ExpertSlots({ experts: 4, slots: 1 });
    expect(c.place([3]).uploads).toEqual([{ expert: 3, slot: 0 }]);
    expect(c.place([3]).hits).toBe(1);
    expect(c.place([1]).uploads).toEqual([{ expert: 1, slot: 0 }]);
  });

  it('an invalidated slot is uploaded again', () => {
    const c = new ExpertSlots({ experts: 4, slots: 2 });
    c.place([1]);
    c.invalidate(c.slot(1));
    expect(c.place([1]).uploads).toHaveLength(1);
  });

  it('refuses bad shapes and requests with typed errors', () => {
    expect(() => new ExpertSlots({ experts: 4, slots: 5 })).toThrow(ArgumentError);
    expect(() => new ExpertSlots({ experts: 4, slots: 0 })).toThrow(/slots must be an integer in \[1, 4\]/);
    expect(() => new ExpertSlots({ experts: 4, slots: 2, decay: 0 })).toThrow(/decay must be in \(0, 1\]/);
    const c = new ExpertSlots({ experts: 4, slots: 2 });
    expect(() => c.place([0, 1, 2])).toThrow(/3 distinct experts asked for at once, over the 2 slots: split the request/);
    expect(() => c.place([4])).toThrow(/expert 4 is not in \[0, 4\)/);
    expect(() => c.place([0.5])).toThrow(ArgumentError);
  });
});
