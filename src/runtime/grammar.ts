// Structured output (OpenAI's response_format): grammar-constrained decoding with xgrammar. A
// request's format is checked at the API edge (checkResponseFormat), compiled once per format for
// the engine's tokenizer (Grammars: the compiled grammars are cached), and followed by one matcher
// per request (RequestGrammar), which gives the sampler a bitmask of the tokens the grammar allows
// before every step. The mask is applied on the GPU (shaders/sample.wgsl, variant mask == on), so
// no logits are read back; the matcher is freed when the request ends, fails or is dropped.

import { ArgumentError, GrammarError } from '../errors.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import type { GrammarLibrary, GrammarLibraryLoader } from '../text/xgrammar.ts';
import type { ResponseFormat } from './types.ts';

/** A response_format after its check: what to compile. */
export type CheckedResponseFormat = { type: 'json_object' } | { type: 'json_schema'; name: string | undefined; schema: string };

/** Checks a request's response_format (ArgumentError naming the bad field); undefined for none or `{ type: 'text' }`. */
export function checkResponseFormat(format: ResponseFormat | undefined): CheckedResponseFormat | undefined {
  if (format === undefined || format === null) return undefined;
  if (typeof format !== 'object' || Array.isArray(format)) throw new ArgumentError(`response_format must be an object like { "type": "json_object" }, got ${JSON.stringify(format)}`);
  const { type } = format as { type?: unknown };
  if (type === 'text') return undefined;
  if (type === 'json_object') return { type };
  if (type !== 'json_schema') throw new ArgumentError(`response_format.type must be "text", "json_object" or "json_schema", got ${JSON.stringify(type)}`);
  const spec = (format as { json_schema?: unknown }).json_schema;
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
    throw new ArgumentError('response_format.json_schema must be an object: { "name": "...", "schema": { ...JSON Schema... }, "strict": true }');
  }
  const { name, schema, strict } = spec as { name?: unknown; schema?: unknown; strict?: unknown };
  if (name !== undefined && typeof name !== 'string') throw new ArgumentError(`response_format.json_schema.name must be a string, got ${JSON.stringify(name)}`);
  if (strict !== undefined && strict !== null && typeof strict !== 'boolean') throw new ArgumentError(`response_format.json_schema.strict must be true or false, got ${JSON.stringify(strict)}`);
  if (schema === undefined) throw new ArgumentError('response_format.json_schema.schema is missing: give the JSON Schema the reply must follow');
  if (typeof schema !== 'boolean' && (schema === null || typeof schema !== 'object' || Array.isArray(schema))) {
    throw new ArgumentError(`response_format.json_schema.schema must be a JSON Schema object, got ${JSON.stringify(schema)}`);
  }
  const problem = schemaTypeProblem(schema, 'schema');
  if (problem) throw new GrammarError(`response_format.json_schema${name ? ` "${name}"` : ''}: ${problem}`, { reason: problem });
  return { type: 'json_schema', name, schema: JSON.stringify(schema) };
}

const JSON_SCHEMA_TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);
// Keywords whose values are data, not subschemas: their "type" keys are not the keyword.
const DATA_KEYWORDS = new Set(['enum', 'const', 'default', 'examples']);

/** The first `type` that names no JSON Schema type (the library's most common refusal, said here in every environment). */
function schemaTypeProblem(node: unknown, path: string): string | undefined {
  if (node === null || typeof node !== 'object') return undefined;
  if (Array.isArray(node)) {
    for (const [i, item] of node.entries()) {
      const p = schemaTypeProblem(item, `${path}[${i}]`);
      if (p) return p;
    }
    return undefined;
  }
  for (const [key, value] of Object.entries(node)) {
    if (key === 'type' && (typeof value === 'string' || Array.isArray(value))) {
      const bad = [value].flat().find((t) => typeof t !== 'string' || !JSON_SCHEMA_TYPES.has(t));
      if (bad !== undefined) return `${path}.type ${JSON.stringify(bad)} is not a JSON Schema type (${[...JSON_SCHEMA_TYPES].join(', ')})`;
      continue;
    }
    if (DATA_KEYWORDS.has(key)) continue;
    const p = schemaTypeProblem(value, `${path}.${key}`);
    if (p) return p;
  }
  return undefined;
}

/** The grammar figures of one request (GenerationStats.grammar). */
export interface GrammarStats {
  /** The format's grammar came from the engine's cache (no compile). */
  cached: boolean;
  /** Compiling it (0 when cached). */
  compileMs: number;
  /** Masks computed (xgrammar's fill_next_token_bitmask), and their CPU time in all. */
  masks: number;
  maskMs: number;
  /** Bytes of token mask written to the GPU per logit row. */
  maskBytesPerRow: number;
}

type Xg = GrammarLibrary['xgrammar'];
type CompiledGrammar = InstanceType<Xg['CompiledGrammar']>;
type GrammarMatcher = Awaited<ReturnType<Xg['GrammarMatcher']['createGrammarMatcher']>>;

/** json_object: a JSON object, whatever its properties. */
const ANY_OBJECT = '{"type":"object"}';

/** Compiled grammars kept per format; the least recently used is freed past this. */
const MAX_CACHED_GRAMMARS = 16;

export interface GrammarsOptions {
  load: GrammarLibraryLoader;
  tokenizer: Tokenizer | undefined;
  /** config.json's vocab_size: the logit rows' width (ids past the tokenizer's are never allowed). */
  vocabSize: number;
  /** Ids that end the output where the grammar is complete (config.json's EOS). */
  stopTokenIds: readonly number[];
}

/** The engine's grammar compiler: the library and the tokenizer's info made on first use, one compiled grammar per format. */
export class Grammars {
  private compiler: Promise<{ library: GrammarLibrary; compiler: Awaited<ReturnType<Xg['GrammarCompiler']['createGrammarCompiler']>>; info: InstanceType<Xg['TokenizerInfo']> }> | undefined;
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  private readonly refused = new Map<string, GrammarError>();
  private disposed = false;

  constructor(private readonly options: GrammarsOptions) {}

  /** A matcher for one request, following `format` from its start. Free it with dispose(). */
  async matcher(format: CheckedResponseFormat): Promise<RequestGrammar> {
    const { library } = await this.ready();
    const key = format.type === 'json_object' ? 'json_object' : `json_schema:${format.schema}`;
    const started = performance.now();
    // A format the library refused is refused again without asking it (it aborts on each refusal).
    const refusal = this.refused.get(key);
    if (refusal) throw refusal;
    let compiled = this.cache.get(key);
    const cached = compiled !== undefined;
    if (compiled) {
      this.cache.delete(key); // re-inserted below: most recently used last
    } else {
      compiled = this.compile(format);
      compiled.catch((err: unknown) => {
        this.cache.delete(key);
        if (err instanceof GrammarError) this.remember(key, err);
      });
    }
    this.cache.set(key, compiled);
    this.evict();
    const grammar = await compiled;
    const compileMs = cached ? 0 : performance.now() - started;
    const matcher = await this.guard(() => library.xgrammar.GrammarMatcher.createGrammarMatcher(grammar, [...this.options.stopTokenIds]), 'its matcher cannot be made', format);
    return new RequestGrammar(matcher, this.options.vocabSize, { cached, compileMs });
  }

  dispose(): void {
    this.disposed = true;
    for (const compiled of this.cache.values()) void compiled.then((g) => g.dispose(), () => {});
    this.cache.clear();
    void this.compiler?.then(({ compiler, info }) => (compiler.dispose(), info.dispose()), () => {});
  }

  private ready() {
    if (this.disposed) throw new GrammarError('this engine was unloaded; create a new one');
    const { tokenizer } = this.options;
    if (!tokenizer) throw new GrammarError('response_format needs the checkpoint\'s tokenizer.json (the grammar is over its tokens); this checkpoint has none');
    return (this.compiler ??= (async () => {
      let library: GrammarLibrary;
      try {
        library = await this.options.load();
      } catch (err) {
        this.compiler = undefined;
        throw new GrammarError(`the grammar library (@mlc-ai/web-xgrammar) could not be loaded: ${(err as Error).message}`, { cause: err });
      }
      const { vocabType, prependSpace } = tokenizer.vocabEncoding;
      const info = await library.xgrammar.TokenizerInfo.createTokenizerInfo(tokenizer.encodedVocab(), vocabType, prependSpace, this.options.vocabSize, [...this.options.stopTokenIds]);
      // Without the library's own cache (this class keeps the compiled grammars): a compile that
      // aborts leaves its cache entry pending, and the same schema again would wait on it forever.
      const compiler = await library.xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
      return { library, compiler, info };
    })());
  }

  private async compile(format: CheckedResponseFormat): Promise<CompiledGrammar> {
    const { compiler } = await this.ready();
    // Compact JSON on one line (no free whitespace: a small model would spend its budget on it);
    // strict: no properties the schema does not name. json_object: any object, any properties.
    const [schema, strict] = format.type === 'json_object' ? [ANY_OBJECT, false] : [format.schema, true];
    return this.guard(() => compiler.compileJSONSchema(schema, false, -1, [',', ':'], strict), 'the schema cannot be compiled', format);
  }

  /** The library aborts on what it refuses ("Aborted()"); the reason it printed goes into a GrammarError. */
  private async guard<T>(work: () => Promise<T>, what: string, format: CheckedResponseFormat): Promise<T> {
    const { library } = await this.ready();
    library.takeLastError();
    try {
      return await work();
    } catch (err) {
      const reason = library.takeLastError();
      const label = format.type === 'json_object' ? 'json_object' : `json_schema${format.name ? ` "${format.name}"` : ''}`;
      throw new GrammarError(
        `response_format ${label}: ${what} for constrained decoding: ${(reason ?? `the grammar library refused it (${(err as Error).message})`).replace(/\.$/, '')}. Use the JSON Schema subset xgrammar supports (types, properties, required, items, enum, const, anyOf, pattern, min/max).`,
        { reason, cause: err },
      );
    }
  }

  private remember(key: string, refusal: GrammarError): void {
    this.refused.set(key, refusal);
    if (this.refused.size > MAX_CACHED_GRAMMARS) this.refused.delete(this.refused.keys().next().value!);
  }

  private evict(): void {
    while (this.cache.size > MAX_CACHED_GRAMMARS) {
      const [oldest, compiled] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      // A matcher made from it keeps what it needs (the library shares the grammar by reference count).
      void compiled.then((g) => g.dispose(), () => {});
    }
  }
}

/** One request's grammar state: the mask before each step, the tokens it accepts, rollback. */
export class RequestGrammar {
  private masks = 0;
  private maskMs = 0;
  private disposed = false;
  /** [ceil(vocab / 32)] u32 words per mask row. */
  readonly words: number;

  constructor(
    private readonly matcher: GrammarMatcher,
    vocabSize: number,
    private readonly compiled: { cached: boolean; compileMs: number },
  ) {
    this.words = Math.ceil(vocabSize / 32);
  }

  /** The tokens allowed next: [ceil(vocab / 32)] u32, bit id % 32 of word id / 32. */
  async nextMask(): Promise<Uint32Array<ArrayBuffer>> {
    const started = performance.now();
    const bits = await this.matcher.getNextTokenBitmask();
    this.maskMs += performance.now() - started;
    this.masks++;
    return new Uint32Array(bits.buffer as ArrayBuffer, bits.byteOffset, this.words);
  }

  /** Advances the state by `id`; false (and no change) when the grammar refuses it. */
  accept(id: number): boolean {
    return this.matcher.acceptToken(id);
  }

  /** Undoes the last `tokens` accepted. */
  rollBack(tokens: number): void {
    this.matcher.rollBack(tokens);
  }

  /** The grammar is complete and its stop token accepted: nothing may follow. */
  isTerminated(): boolean {
    return this.matcher.isTerminated();
  }

  stats(): GrammarStats {
    return { ...this.compiled, masks: this.masks, maskMs: this.maskMs, maskBytesPerRow: 4 * this.words };
  }

  /** Frees the matcher (safe to call twice). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.matcher.dispose();
  }
}

/** Whether `mask` allows `id`. */
export function maskAllows(mask: Uint32Array, id: number): boolean {
  return ((mask[id >>> 5] >>> (id & 31)) & 1) === 1;
}
