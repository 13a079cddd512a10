// tokenizer.json's regexes (pre-tokenizer Split, normalizer and decoder Replace) run as JS RegExp,
// a backtracking matcher: `(a|a)+$` takes 2^n steps on n a's, `a*a*$` n^3. A linear-time matcher
// cannot run them (they use lookahead), and the ReDoS checkers on npm either miss `(a|a)+`
// (safe-regex2, star height only) or give up on the real patterns after seconds (recheck). So the
// patterns are checked at load against three rules that the published ones (GPT-2, Llama 3,
// DeepSeek-V3, Qwen 2, Mistral Tekken) all follow:
//   1. nothing repeated holds a quantifier or an alternation: `(a+)+`, `(a|a)+`, `(?:ab|cd)*`;
//   2. no backreferences;
//   3. no two unbounded quantifiers in a row that can match the same character, when something
//      after them can still fail: `a*a*$`, `\s*\s+x`, `.*x.*y`. (`\s*[\r\n]+` ending a branch, as
//      in Llama 3, is fine: once it matches the branch is done.)
// Which characters a class can match is sampled (ASCII and one character of each common kind).

export interface PatternProblem {
  /** What is wrong, for the error message. */
  reason: string;
}

type Atom =
  | { kind: 'chars'; source: string }
  | { kind: 'group'; alternatives: Term[][]; zeroWidth: boolean }
  | { kind: 'assertion' };

interface Term {
  atom: Atom;
  min: number;
  max: number;
}

const MAX_PATTERN_CHARS = 4096;
/** A count up to this is a small fixed repeat (`\p{N}{1,3}`), not a source of backtracking. */
const SMALL_REPEAT = 16;

class Unsafe extends Error {}

/** Why `source` is not safe to run as a backtracking regex over untrusted text, or null. */
export function patternProblem(source: string): PatternProblem | null {
  if (source.length > MAX_PATTERN_CHARS) return { reason: `it is ${source.length} characters long, over the limit of ${MAX_PATTERN_CHARS}` };
  try {
    const parser = new Parser(source);
    const alternatives = parser.alternation();
    if (parser.i < source.length) throw new Unsafe(`an unmatched ")" at ${parser.i}`);
    alternatives.forEach((sequence) => checkSequence(sequence, true));
    return null;
  } catch (err) {
    if (err instanceof Unsafe) return { reason: err.message };
    throw err;
  }
}

class Parser {
  i = 0;
  constructor(private readonly s: string) {}

  alternation(): Term[][] {
    const alternatives = [this.sequence()];
    while (this.s[this.i] === '|') {
      this.i++;
      alternatives.push(this.sequence());
    }
    return alternatives;
  }

  private sequence(): Term[] {
    const terms: Term[] = [];
    while (this.i < this.s.length && this.s[this.i] !== '|' && this.s[this.i] !== ')') {
      const atom = this.atom();
      const [min, max] = this.quantifier();
      if (max > 1 && atom.kind === 'assertion') throw new Unsafe('a repeated assertion');
      terms.push({ atom, min, max });
    }
    return terms;
  }

  private atom(): Atom {
    const s = this.s;
    const start = this.i;
    const c = s[this.i]!;
    if (c === '(') {
      this.i++;
      let zeroWidth = false;
      if (s[this.i] === '?') {
        const head = /^\?(?:<[=!]|[=!]|<[A-Za-z_]\w*>|[A-Za-z-]*:)/.exec(s.slice(this.i));
        if (!head) throw new Unsafe(`an unknown group "(${s.slice(this.i, this.i + 4)}" at ${start}`);
        zeroWidth = /^\?<?[=!]/.test(head[0]);
        this.i += head[0].length;
      }
      const alternatives = this.alternation();
      if (s[this.i] !== ')') throw new Unsafe(`an unclosed group at ${start}`);
      this.i++;
      return { kind: 'group', alternatives, zeroWidth };
    }
    if (c === '[') {
      this.i++;
      if (s[this.i] === '^') this.i++;
      if (s[this.i] === ']') this.i++; // a leading ] is a literal
      let depth = 1;
      while (depth > 0) {
        if (this.i >= s.length) throw new Unsafe(`an unclosed character class at ${start}`);
        const d = s[this.i++];
        if (d === '\\') this.i++;
        else if (d === '[') depth++;
        else if (d === ']') depth--;
      }
      return { kind: 'chars', source: s.slice(start, this.i) };
    }
    if (c === '^' || c === '$') {
      this.i++;
      return { kind: 'assertion' };
    }
    if (c === '\\') {
      const next = s[this.i + 1] ?? '';
      if (/[1-9]/.test(next) || next === 'k') throw new Unsafe(`a backreference at ${start}`);
      if ('bBAzZG'.includes(next)) {
        this.i += 2;
        return { kind: 'assertion' };
      }
      const escape = /^\\(?:[pP]\{[^}]*\}|[pP][A-Za-z]|u\{[0-9A-Fa-f]+\}|u[0-9A-Fa-f]{4}|x\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|c[A-Za-z]|[\s\S])/u.exec(s.slice(this.i));
      this.i += escape ? escape[0].length : 1;
      return { kind: 'chars', source: s.slice(start, this.i) };
    }
    this.i += String.fromCodePoint(s.codePointAt(this.i)!).length;
    return { kind: 'chars', source: s.slice(start, this.i) };
  }

  private quantifier(): [number, number] {
    const m = /^(?:([*+?])|\{(\d+)(,(\d*))?\})[?+]?/.exec(this.s.slice(this.i));
    if (!m) return [1, 1];
    this.i += m[0].length;
    if (m[1] === '*') return [0, Infinity];
    if (m[1] === '+') return [1, Infinity];
    if (m[1] === '?') return [0, 1];
    const min = Number(m[2]);
    return [min, m[3] === undefined ? min : m[4] === '' ? Infinity : Number(m[4])];
  }
}

function checkSequence(terms: Term[], topLevel: boolean): void {
  for (const term of terms) {
    if (term.atom.kind !== 'group') continue;
    if (term.max > 1 && holdsChoiceOrRepeat(term.atom.alternatives)) {
      throw new Unsafe('a repeated group holds a quantifier or an alternation (exponential backtracking)');
    }
    term.atom.alternatives.forEach((inner) => checkSequence(inner, false));
  }
  // Rule 3 over the sequence, with plain groups inlined.
  const flat = inline(terms);
  const sets = flat.map(charsOf);
  for (let a = 0; a < flat.length; a++) {
    if (!unbounded(flat[a]!)) continue;
    for (let b = a + 1; b < flat.length; b++) {
      if (!unbounded(flat[b]!)) continue;
      // A character both can take, which every term between can also take or skip.
      let shared = sets[a]! & sets[b]!;
      for (let k = a + 1; k < b && shared; k++) if (flat[k]!.min > 0 && flat[k]!.atom.kind !== 'assertion') shared &= sets[k]!;
      if (!shared) continue;
      const tailCanFail = !topLevel || flat.slice(b + 1).some((t) => t.min > 0);
      if (tailCanFail) throw new Unsafe('two unbounded quantifiers in a row can match the same text, and what follows can fail (polynomial backtracking)');
    }
  }
}

function holdsChoiceOrRepeat(alternatives: Term[][]): boolean {
  if (alternatives.length > 1) return true;
  return alternatives[0]!.some((t) => t.max > 1 || (t.atom.kind === 'group' && holdsChoiceOrRepeat(t.atom.alternatives)));
}

const unbounded = (t: Term) => t.max > SMALL_REPEAT;

/** Groups matched once with one alternative are part of the sequence around them. */
function inline(terms: Term[]): Term[] {
  return terms.flatMap((t) =>
    t.atom.kind === 'group' && !t.atom.zeroWidth && t.atom.alternatives.length === 1 && t.min === 1 && t.max === 1 ? inline(t.atom.alternatives[0]!) : [t],
  );
}

// ASCII, then one or two characters of each kind the patterns distinguish: letters of several
// scripts, marks, digits, punctuation, symbols, spaces and separators, emoji, joiners.
const SAMPLES = [
  ...Array.from({ length: 128 }, (_, i) => String.fromCharCode(i)),
  ...'\u00a0\u0085\u2028\u3000éßΩЖاـא中あアー한\u0301\u093f٣१²½€£©¿·—…«「，😀\u200d\ufe0f\ufffd\ue000ǅʰ',
];
const ALL = (1n << BigInt(SAMPLES.length)) - 1n;
const setCache = new Map<string, bigint>();

/** The samples a term's atom can match, as bits; unknown means all (the safe guess). */
function charsOf(term: Term): bigint {
  if (term.atom.kind !== 'chars') return term.atom.kind === 'assertion' ? 0n : ALL;
  const { source } = term.atom;
  let bits = setCache.get(source);
  if (bits === undefined) {
    bits = 0n;
    try {
      const re = new RegExp(`^(?:${source})$`, 'u');
      SAMPLES.forEach((c, i) => {
        if (re.test(c)) bits! |= 1n << BigInt(i);
      });
    } catch {
      bits = ALL;
    }
    setCache.set(source, bits);
  }
  return bits;
}
