import { describe, expect, it } from 'vitest';
import { findDuplicateKey } from './json_duplicates.ts';

// Keys from a small alphabet with the characters a scanner can trip on: quotes, backslashes,
// escapes, brackets and commas inside strings, non-ASCII.
const KEYS = ['a', 'b', '"', '\\', '\\"', 'x,y', '{', '[]', ':', 'é', '\u2028', ''];

/** A random JSON text, written by hand so that it may repeat a key; `dup` says whether it did. */
function randomJson(rand: () => number, depth: number): { text: string; dup: boolean } {
  const r = rand();
  if (depth === 0 || r < 0.3) {
    const leaf = [1.5, -2, 'a', '"', '\\', 'x,y:{', null, true, [] as unknown[], {}][Math.floor(rand() * 10)];
    return { text: JSON.stringify(leaf), dup: false };
  }
  const n = Math.floor(rand() * 4);
  const parts: string[] = [];
  let dup = false;
  if (r < 0.5) {
    for (let i = 0; i < n; i++) {
      const v = randomJson(rand, depth - 1);
      parts.push(v.text);
      dup ||= v.dup;
    }
    return { text: `[${parts.join(',')}]`, dup };
  }
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const key = KEYS[Math.floor(rand() * KEYS.length)];
    dup ||= seen.has(key);
    seen.add(key);
    // Sometimes spell the key with \u escapes: the same key to JSON.parse.
    const spelled = rand() < 0.3 ? `"${[...key].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"` : JSON.stringify(key);
    const v = randomJson(rand, depth - 1);
    parts.push(`${spelled} : ${v.text}`);
    dup ||= v.dup;
  }
  return { text: `{ ${parts.join(' , ')} }`, dup };
}

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('findDuplicateKey', () => {
  it('names the key and where it is', () => {
    expect(findDuplicateKey('{"a":1,"b":{"c":[{"d":1,"d":2}]}}')).toEqual({ key: 'd', path: ['b', 'c'] });
    expect(findDuplicateKey('{"a":{"x":1},"a":2}')).toEqual({ key: 'a', path: [] });
    expect(findDuplicateKey('{"a":"a","b":["a","a"],"c":{"a":1}}')).toBeUndefined();
  });

  it('agrees with the generator on 2000 random texts (seed 1)', () => {
    const rand = mulberry32(1);
    let dups = 0;
    for (let i = 0; i < 2000; i++) {
      const { text, dup } = randomJson(rand, 4);
      JSON.parse(text); // valid JSON, as the scan requires
      expect(findDuplicateKey(text) !== undefined, text).toBe(dup);
      if (dup) dups++;
    }
    expect(dups).toBeGreaterThan(100); // both outcomes were exercised
  });
});
