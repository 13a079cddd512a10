import { describe, expect, it } from 'vitest';
import { createStreamDecoder } from './stream_decoder.ts';

// A stand-in tokenizer whose ids are UTF-8 bytes: the hardest case for streaming, since every
// multi-byte character is split across ids. decode() shows broken bytes as U+FFFD, as byte-level BPE does.
const decodeBytes = (ids: readonly number[]) => new TextDecoder().decode(new Uint8Array(ids));
const bytesOf = (text: string) => [...new TextEncoder().encode(text)];

function stream(ids: readonly number[]): { pieces: string[]; rest: string } {
  const decoder = createStreamDecoder(decodeBytes);
  const pieces = ids.map((id) => decoder.push(id));
  return { pieces, rest: decoder.flush() };
}

describe('createStreamDecoder', () => {
  it('emits ASCII at once and holds a 4-byte emoji until its last byte', () => {
    const { pieces, rest } = stream(bytesOf('a😀b'));
    expect(pieces).toEqual(['a', '', '', '', '😀', 'b']);
    expect(rest).toBe('');
  });

  it('concatenates to the whole text and never emits U+FFFD for valid UTF-8', () => {
    const text = 'Hello, 世界! 👨‍👩‍👧‍👦 🏳️‍🌈 naïve\tcode\n  indent é';
    const { pieces, rest } = stream(bytesOf(text));
    expect(pieces.join('') + rest).toBe(text);
    for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
  });

  it('shows invalid bytes as decode() of the whole sequence does', () => {
    // A lone continuation byte, a truncated 3-byte character followed by ASCII, then a truncated tail.
    const ids = [0x80, 0x41, 0xe4, 0xb8, 0x42, 0xf0, 0x9f];
    const { pieces, rest } = stream(ids);
    expect(pieces.join('') + rest).toBe(decodeBytes(ids));
    expect(rest).toBe('\uFFFD'); // the truncated tail comes out only at flush
  });

  it('matches decode(all) on random byte sequences', () => {
    let seed = 12345;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let trial = 0; trial < 200; trial++) {
      // Mostly valid text with random bytes mixed in.
      const ids = bytesOf('αβγ 😀 中文 ok').concat(Array.from({ length: next() % 12 }, () => next() % 256));
      ids.sort(() => (next() % 3) - 1);
      const { pieces, rest } = stream(ids);
      expect(pieces.join('') + rest).toBe(decodeBytes(ids));
    }
  });

  it('is empty and reusable after flush', () => {
    const decoder = createStreamDecoder(decodeBytes);
    decoder.push(0xe4);
    expect(decoder.flush()).toBe('\uFFFD');
    expect(decoder.flush()).toBe('');
    expect(bytesOf('中').map((b) => decoder.push(b)).join('')).toBe('中');
  });
});

describe('createStreamDecoder over ids that decode to nothing', () => {
  // Id 0 stands for a special token that skipSpecialTokens drops (the review's F4 case: BOS forever).
  const SKIPPED = 0;
  const decodeSkipping = (ids: readonly number[]) => decodeBytes(ids.filter((id) => id !== SKIPPED));

  it('keeps its window bounded: each push decodes a few ids, not all seen so far', () => {
    let decoded = 0;
    const decoder = createStreamDecoder((ids) => {
      decoded += ids.length;
      return decodeSkipping(ids);
    });
    decoder.push(0x41);
    for (let i = 0; i < 2000; i++) expect(decoder.push(SKIPPED)).toBe('');
    expect(decoder.push(0x42)).toBe('B');
    // Without the drop the window grows to 2000 ids and the decodes sum to ~2000^2 = 4e6 ids.
    expect(decoded).toBeLessThan(20_000);
  });

  it('still concatenates to decode(all) when skipped ids split a character', () => {
    const ids = [0x61, SKIPPED, 0xe4, SKIPPED, 0xb8, SKIPPED, SKIPPED, 0xad, SKIPPED, 0x62];
    const decoder = createStreamDecoder(decodeSkipping);
    const text = ids.map((id) => decoder.push(id)).join('') + decoder.flush();
    expect(text).toBe(decodeSkipping(ids));
  });
});
