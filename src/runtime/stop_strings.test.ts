import { describe, expect, it } from 'vitest';
import { StopStrings } from './stop_strings.ts';

describe('StopStrings', () => {
  it('holds back a possible start of a stop string and cuts at the stop', () => {
    const s = new StopStrings(['\n\n', 'END']);
    expect(s.push('Hello E')).toBe('Hello ');
    expect(s.push('N')).toBe('');
    expect(s.push('Dless')).toBe('');
    expect(s.stopped).toBe(true);
    expect(s.flush()).toBe('');
  });

  it('releases held text that turns out not to be a stop, and everything at the end', () => {
    const s = new StopStrings('END');
    expect(s.push('EN')).toBe('');
    expect(s.push('Xy')).toBe('ENXy');
    expect(s.push('E')).toBe('');
    expect(s.flush()).toBe('E');
  });

  it('finds a stop string split across pushes and the earliest of several', () => {
    const s = new StopStrings(['bc', 'cd']);
    expect(s.push('ab')).toBe('a');
    expect(s.push('cd')).toBe('');
    expect(s.stopped).toBe(true);
  });

  it('passes text through when there is no stop string', () => {
    const s = new StopStrings(undefined);
    expect(s.push('abc')).toBe('abc');
    expect(s.flush()).toBe('');
  });
});
