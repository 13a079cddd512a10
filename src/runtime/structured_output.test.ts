// Structured output on the shipped checkpoint (a tiny KJV model: its words are poor, its JSON must
// still be valid): replies that parse and follow their schema (nested objects, arrays, enums,
// integers; json_object), greedy and sampled, with and without MTP speculation (the same tokens
// either way); max_tokens mid-object ends in 'length'; refused schemas are typed errors; and every
// request's matcher is freed however it ends.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArgumentError, GrammarError } from '../errors.ts';
import { testGpu } from '../gpu/testing.ts';
import { nodeDir } from '../io/node_source.ts';
import { SHIPPED_MODEL } from '../server/testing.ts';
import { nodeGrammarLibrary } from '../text/xgrammar_node.ts';
import type { GrammarLibraryLoader } from '../text/xgrammar.ts';
import { createLocalEngine } from './engine.ts';
import { schemaViolations } from './json_schema_testing.ts';
import type { ChatCompletionRequest, Engine, ResponseFormat } from './types.ts';

const NESTED = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 150 },
    address: { type: 'object', properties: { city: { type: 'string', maxLength: 10 }, zip: { type: 'integer', minimum: 10000, maximum: 99999 } }, required: ['city', 'zip'] },
  },
  required: ['name', 'age', 'address'],
};
const ARRAY_OF_ENUMS = {
  type: 'object',
  properties: { colours: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 3 }, verified: { type: 'boolean' } },
  required: ['colours', 'verified'],
};
const INTEGERS = {
  type: 'object',
  properties: { chapter: { type: 'integer', minimum: 1, maximum: 150 }, verses: { type: 'array', items: { type: 'integer', minimum: 1, maximum: 176 }, minItems: 2, maxItems: 2 } },
  required: ['chapter', 'verses'],
};

const schemaFormat = (name: string, schema: Record<string, unknown>): ResponseFormat => ({ type: 'json_schema', json_schema: { name, schema, strict: true } });
const ask = (extra: Partial<ChatCompletionRequest>): ChatCompletionRequest => ({ messages: [{ role: 'user', content: 'Tell me of Moses as JSON.' }], max_tokens: 80, ...extra });

// The library as the Node entry loads it, with its matchers counted (made, freed).
const matchers = { made: 0, freed: 0 };
const countingLibrary: GrammarLibraryLoader = async () => {
  const library = await nodeGrammarLibrary();
  const { GrammarMatcher } = library.xgrammar;
  const create = GrammarMatcher.createGrammarMatcher.bind(GrammarMatcher);
  const xgrammar = Object.create(library.xgrammar) as typeof library.xgrammar;
  Object.defineProperty(xgrammar, 'GrammarMatcher', {
    value: {
      createGrammarMatcher: async (...args: Parameters<typeof create>) => {
        const matcher = await create(...args);
        matchers.made++;
        const dispose = matcher.dispose.bind(matcher);
        matcher.dispose = () => (matchers.freed++, dispose());
        return matcher;
      },
    },
  });
  return { xgrammar, takeLastError: () => library.takeLastError() };
};

let engine: Engine;
beforeAll(async () => {
  engine = await createLocalEngine({ gpu: await testGpu(), dir: nodeDir(SHIPPED_MODEL), grammarLibrary: countingLibrary });
});
afterAll(() => engine?.unload());

async function reply(request: ChatCompletionRequest) {
  const r = await engine.chat.completions.create({ ...request, stream: false });
  return { text: r.choices[0].message.content, finish: r.choices[0].finish_reason, ids: r.webmoe.ids, stats: r.webmoe.stats! };
}

describe('structured output on the shipped checkpoint', () => {
  const cases = [
    { name: 'nested objects', schema: NESTED, temperature: 0 },
    { name: 'nested objects', schema: NESTED, temperature: 0.9 },
    { name: 'an array of enums', schema: ARRAY_OF_ENUMS, temperature: 0.9 },
    { name: 'integers', schema: INTEGERS, temperature: 0 },
  ];
  for (const { name, schema, temperature } of cases) {
    // At temperature > 0 speculation samples its drafts (the default): the same distribution, not the same tokens for a seed.
    it(`follows a schema of ${name} at temperature ${temperature}, ${temperature === 0 ? 'the same tokens' : 'a valid reply too'} with speculation`, async () => {
      const request = ask({ temperature, seed: 11, response_format: schemaFormat(name.replace(/ /g, '_'), schema) });
      const plain = await reply({ ...request, speculative: false });
      expect(plain.finish, plain.text).toBe('stop');
      const value = JSON.parse(plain.text) as unknown;
      expect(schemaViolations(value, schema), plain.text).toEqual([]);
      expect(plain.stats.grammar!.masks).toBe(plain.stats.generatedTokens);
      const speculated = await reply({ ...request, speculative: true });
      expect(speculated.stats.mtp, 'speculation ran').toBeDefined();
      if (temperature === 0) {
        expect(speculated.ids).toEqual(plain.ids);
        expect(speculated.text).toBe(plain.text);
      } else {
        expect(speculated.finish, speculated.text).toBe('stop');
        expect(schemaViolations(JSON.parse(speculated.text) as unknown, schema), speculated.text).toEqual([]);
      }
      console.log(`[figures] ${name} T=${temperature}: ${plain.text} (mask ${(plain.stats.grammar!.maskMs / plain.stats.grammar!.masks).toFixed(2)} ms/token; MTP accepted ${speculated.stats.mtp!.accepted}/${speculated.stats.mtp!.drafted})`);
    });
  }

  it('answers json_object with a JSON object, streamed', async () => {
    const chunks = await engine.chat.completions.create({ ...ask({ temperature: 0.7, seed: 5, max_tokens: 120, response_format: { type: 'json_object' } }), stream: true });
    let text = '';
    let finish: string | null = null;
    for await (const chunk of chunks) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    expect(finish, text).toBe('stop');
    const value = JSON.parse(text) as unknown;
    expect(typeof value === 'object' && value !== null && !Array.isArray(value), text).toBe(true);
  });

  it('ends with length when max_tokens comes mid-object, in generate too', async () => {
    const cut = await reply(ask({ max_tokens: 6, temperature: 0, response_format: schemaFormat('nested', NESTED) }));
    expect(cut.finish).toBe('length');
    expect(cut.ids.length).toBe(6);
    expect(cut.text.startsWith('{"name":"'), cut.text).toBe(true);
    expect(() => JSON.parse(cut.text)).toThrow();
    let finish: string | undefined;
    let text = '';
    for await (const chunk of engine.generate('And God said', { maxTokens: 4, temperature: 0, responseFormat: schemaFormat('integers', INTEGERS) })) {
      text += chunk.text;
      finish = chunk.done?.finishReason ?? finish;
    }
    expect(finish).toBe('length');
    // 4 tokens: the object's start, whatever the tokens' boundaries.
    expect('{"chapter":'.startsWith(text) || text.startsWith('{"chapter":'), text).toBe(true);
    expect(text.length).toBeGreaterThan(1);
  });

  it('refuses what cannot be compiled with a GrammarError, and bad response_format shapes with an ArgumentError', async () => {
    const refused = async (format: unknown) => reply(ask({ response_format: format as ResponseFormat })).catch((e: unknown) => e);
    const badType = await refused(schemaFormat('bad', { type: 'object', properties: { a: { type: 'int' } } }));
    expect(badType).toBeInstanceOf(GrammarError);
    expect((badType as Error).message).toMatch(/"bad": schema\.properties\.a\.type "int" is not a JSON Schema type/);
    const badPattern = await refused(schemaFormat('pattern', { type: 'string', pattern: '((' }));
    expect(badPattern).toBeInstanceOf(GrammarError);
    // The library's own reason, caught from its output.
    expect((badPattern as Error).message).toMatch(/cannot be compiled for constrained decoding: Regex parsing error .*parenthesis is not closed/);
    await expect(refused({ type: 'json_schema' })).resolves.toBeInstanceOf(ArgumentError);
    await expect(refused({ type: 'json_schema', json_schema: { name: 'x' } })).resolves.toMatchObject({ name: 'ArgumentError', message: expect.stringMatching(/json_schema\.schema is missing/) });
    await expect(refused({ type: 'xml' })).resolves.toMatchObject({ name: 'ArgumentError', message: expect.stringMatching(/response_format\.type must be "text", "json_object" or "json_schema"/) });
    // The engine still serves structured output after a refusal.
    const after = await reply(ask({ temperature: 0, response_format: schemaFormat('integers', INTEGERS) }));
    expect(schemaViolations(JSON.parse(after.text), INTEGERS)).toEqual([]);
  });

  it('frees every matcher: requests that end, abort, are left early or fail', async () => {
    const format = schemaFormat('nested', NESTED);
    const controller = new AbortController();
    const aborted = engine.generate('In the beginning', { maxTokens: 50, responseFormat: format, signal: controller.signal });
    const reading = (async () => {
      for await (const chunk of aborted) if (chunk.ids.length > 0) controller.abort();
    })();
    await expect(reading).rejects.toThrow(/aborted/);
    for await (const chunk of engine.generate('In the beginning', { maxTokens: 50, responseFormat: format })) if (chunk.ids.length > 0) break;
    await expect(engine.generate('x', { maxTokens: 5, responseFormat: format, session: { id: 12345 } })[Symbol.asyncIterator]().next()).rejects.toThrow(ArgumentError);
    expect(matchers.made).toBeGreaterThan(0);
    expect(matchers.freed).toBe(matchers.made);
  });
});
