// The checkpoint's tokenizer: a thin adapter over @huggingface/tokenizers (tokenizer.json does
// the work) plus what transformers takes from tokenizer_config.json: BOS/EOS insertion
// (add_bos_token / add_eos_token), the special tokens, clean-up on decode and the chat template.

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ArgumentError, TokenizerError } from '../errors.ts';
import type { CheckpointDir } from '../io/sources.ts';
import { ChatTemplate, loadChatTemplate, type ApplyChatTemplateOptions, type ChatMessage } from './chat_template.ts';
import { createStreamDecoder, type StreamDecoder } from './stream_decoder.ts';
import { checkPromptChars } from './prompt_size.ts';
import { patternProblem } from './regex_safety.ts';
import { AddedTokenMatcher, encodeLiteral, splitRendered } from './literal_content.ts';
import { vocabEncodingOf, type VocabEncoding } from './grammar_vocab.ts';
import {
  CHAT_TEMPLATE_FILE,
  TOKENIZER_CONFIG_FILE,
  TOKENIZER_FILE,
  describeFile,
  flag,
  parseJsonObject,
  tokenContent,
} from './tokenizer_files.ts';

export interface LoadTokenizerOptions {
  /** tokenizer.json, as text or parsed. */
  tokenizerJson: string | object;
  /** tokenizer_config.json, as text or parsed. Without it no BOS/EOS is added and there is no chat template. */
  tokenizerConfigJson?: string | object;
  /** The text of chat_template.jinja when the checkpoint has one; it wins over tokenizer_config.json's chat_template. */
  chatTemplate?: string;
  /** Where the files came from (a URL, a folder), for error messages. */
  source?: string;
}

export interface EncodeOptions {
  /**
   * Add BOS/EOS as tokenizer_config.json asks (add_bos_token, add_eos_token), as transformers'
   * `encode` does. Default true. Use false for text that already holds them, such as a chat prompt.
   */
  addSpecialTokens?: boolean;
  /** The context the ids are for: text longer than it could hold is refused (PromptTooLongError) before encoding. */
  maxTokens?: number;
}

export interface EncodeChatOptions extends ApplyChatTemplateOptions {
  /** The context the ids are for: messages longer than it could hold are refused before the template runs. */
  maxTokens?: number;
  /**
   * Let added tokens typed in message content (`<｜Assistant｜>`, EOS) act as control tokens. Default
   * false: content is encoded as the text it is, so a message cannot forge a turn; only the
   * template's own tokens are special (literal_content.ts).
   */
  specialTokensInContent?: boolean;
}

export interface DecodeOptions {
  /** Drop the tokens marked `"special": true` in tokenizer.json (BOS, EOS, padding). Default false. */
  skipSpecialTokens?: boolean;
}

/** A token of tokenizer.json's added_tokens: matched whole in the input, never split by BPE. */
export interface AddedTokenInfo {
  readonly id: number;
  readonly content: string;
  /** Marked special: dropped by skipSpecialTokens. DeepSeek-V3's chat markers (`<｜User｜>`) are added but not special. */
  readonly special: boolean;
}

/** What loadTokenizer() hands the Tokenizer constructor. */
export interface TokenizerParts {
  hf: HfTokenizer;
  config: Record<string, unknown>;
  bosTokenId: number | null;
  eosTokenId: number | null;
  prependBos: boolean;
  appendEos: boolean;
  chatTemplate: string | undefined;
  source: string | undefined;
  /** How the token strings encode bytes (grammar_vocab.ts); default 'raw'. */
  vocabEncoding?: VocabEncoding;
}

export class Tokenizer {
  /** Ids the tokenizer knows: the largest id of tokenizer.json + 1. The model's vocab_size may be larger (padded). */
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly addedTokens: readonly AddedTokenInfo[];
  /** The added tokens marked special, in id order. */
  readonly specialTokens: readonly AddedTokenInfo[];
  /** Whether applyChatTemplate can work: base models may come without a template. */
  readonly hasChatTemplate: boolean;
  /** How the token strings of encodedVocab() encode bytes, for a grammar library (grammar_vocab.ts). */
  readonly vocabEncoding: VocabEncoding;

  readonly #hf: HfTokenizer;
  readonly #config: Record<string, unknown>;
  readonly #prependBos: boolean;
  readonly #appendEos: boolean;
  readonly #chatTemplateText: string | undefined;
  readonly #source: string | undefined;
  #chatTemplate: ChatTemplate | undefined;
  #addedTokenMatcher: AddedTokenMatcher | undefined;

  /** Use loadTokenizer(). */
  constructor(parts: TokenizerParts) {
    this.#hf = parts.hf;
    this.#config = parts.config;
    this.#prependBos = parts.prependBos;
    this.#appendEos = parts.appendEos;
    this.#chatTemplateText = parts.chatTemplate;
    this.#source = parts.source;
    this.bosTokenId = parts.bosTokenId;
    this.eosTokenId = parts.eosTokenId;
    this.vocabSize = parts.hf.model?.vocab.length ?? 0;
    this.addedTokens = [...parts.hf.get_added_tokens_decoder().values()]
      .map(({ id, content, special }) => ({ id, content, special }))
      .sort((a, b) => a.id - b.id);
    this.specialTokens = this.addedTokens.filter((t) => t.special);
    this.hasChatTemplate = parts.chatTemplate !== undefined || (parts.config.chat_template ?? null) !== null;
    this.vocabEncoding = parts.vocabEncoding ?? { vocabType: 'raw', prependSpace: false };
  }

  /** Every token's string as tokenizer.json spells it, by id (added tokens included; '' for an id without one). */
  encodedVocab(): string[] {
    const tokens = Array.from({ length: this.vocabSize }, (_, id) => this.#hf.id_to_token(id) ?? '');
    for (const t of this.addedTokens) tokens[t.id] = t.content;
    return tokens;
  }

  /** Text -> token ids. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    checkPromptChars(text.length, options.maxTokens);
    const addSpecialTokens = options.addSpecialTokens ?? true;
    const ids = this.#hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    if (addSpecialTokens && this.#prependBos) ids.unshift(this.bosTokenId!);
    if (addSpecialTokens && this.#appendEos) ids.push(this.eosTokenId!);
    return ids;
  }

  /** Token ids -> text. Ids with no token (the model's padded rows past vocabSize) decode to nothing, as in transformers. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const known: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) throw new ArgumentError(`token ids must be non-negative integers, got ${id}`);
      if (id < this.vocabSize) known.push(id);
    }
    // The library refuses an empty list.
    if (known.length === 0) return '';
    return this.#hf.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** A decoder for generated ids one at a time that never emits half a character (stream_decoder.ts). */
  createStreamDecoder(options: DecodeOptions = {}): StreamDecoder {
    return createStreamDecoder((ids) => this.decode(ids, options));
  }

  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  /** The checkpoint's chat template applied to a conversation (chat_template.ts); a TokenizerError if it has none. */
  applyChatTemplate(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions = {}): string {
    // Compiled on first use, so a checkpoint whose template this Jinja cannot parse still tokenizes plain text.
    this.#chatTemplate ??= loadChatTemplate({
      tokenizerConfigJson: this.#config,
      chatTemplate: this.#chatTemplateText,
      source: this.#source,
    });
    return this.#chatTemplate.applyChatTemplate(messages, options);
  }

  /**
   * A conversation -> prompt ids. The template writes BOS itself, so none is added again. Added
   * tokens typed in message content stay text unless `specialTokensInContent` (literal_content.ts).
   */
  encodeChat(messages: readonly ChatMessage[], options: EncodeChatOptions = {}): number[] {
    if (!Array.isArray(messages)) throw new ArgumentError('messages must be an array of {role, content}');
    const { maxTokens } = options;
    checkPromptChars(messages.reduce((n, m) => n + (typeof m?.content === 'string' ? m.content.length : 0), 0), maxTokens, 'the messages');
    const rendered = this.applyChatTemplate(messages, options);
    const matcher = (this.#addedTokenMatcher ??= new AddedTokenMatcher(this.addedTokens.map((t) => t.content)));
    if (options.specialTokensInContent || !messages.some((m) => matcher.find(m.content))) {
      return this.encode(rendered, { addSpecialTokens: false, maxTokens });
    }
    checkPromptChars(rendered.length, maxTokens);
    const render = (withPlaceholders: ChatMessage[]) => this.applyChatTemplate(withPlaceholders, options);
    const addedIds = new Set(this.addedTokens.filter((t) => t.content.length > 1).map((t) => t.id));
    const plain = (text: string) => this.encode(text, { addSpecialTokens: false });
    return splitRendered(messages, rendered, render, this.#chatTemplate!.origin, matcher).flatMap((s) =>
      s.content ? encodeLiteral(s.text, matcher, plain, addedIds) : plain(s.text),
    );
  }
}

/** Build a Tokenizer from the checkpoint's tokenizer files; anything unusable is a TokenizerError naming the file. */
export function loadTokenizer(options: LoadTokenizerOptions): Tokenizer {
  const { source } = options;
  let json = parseJsonObject(options.tokenizerJson, TOKENIZER_FILE, source);
  const config = options.tokenizerConfigJson === undefined ? {} : parseJsonObject(options.tokenizerConfigJson, TOKENIZER_CONFIG_FILE, source);
  // The library iterates added_tokens unconditionally; a file written without them has none.
  if (json.added_tokens === undefined) json = { ...json, added_tokens: [] };

  if (json.model === null || typeof json.model !== 'object' || Array.isArray(json.model)) {
    throw new TokenizerError(`${describeFile(TOKENIZER_FILE, source)} has no "model" object: it is not a Hugging Face tokenizer.json`);
  }

  checkPatterns(json, source);

  // The library reads special tokens of the config as strings; tokenizer_config.json may hold AddedToken objects.
  const libraryConfig = { ...config };
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    if (key in config) libraryConfig[key] = tokenContent(config, key, source);
  }
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(json, libraryConfig);
  } catch (err) {
    throw new TokenizerError(`${describeFile(TOKENIZER_FILE, source)} cannot be loaded: ${(err as Error).message}`, { cause: err });
  }

  const bosTokenId = specialTokenId(hf, config, 'bos_token', source);
  const eosTokenId = specialTokenId(hf, config, 'eos_token', source);
  const addBos = flag(config, 'add_bos_token', false, source);
  const addEos = flag(config, 'add_eos_token', false, source);
  if (addBos && bosTokenId === null) throw new TokenizerError(`${describeFile(TOKENIZER_CONFIG_FILE, source)}: add_bos_token is true but there is no bos_token`);
  if (addEos && eosTokenId === null) throw new TokenizerError(`${describeFile(TOKENIZER_CONFIG_FILE, source)}: add_eos_token is true but there is no eos_token`);

  // transformers (LlamaTokenizerFast) makes add_bos_token/add_eos_token rewrite the post-processor;
  // here they are applied after it, unless tokenizer.json's own post-processor already adds them.
  const bare = hf.encode('', { add_special_tokens: true }).ids;
  return new Tokenizer({
    hf,
    config,
    bosTokenId,
    eosTokenId,
    prependBos: addBos && bare[0] !== bosTokenId,
    appendEos: addEos && bare[bare.length - 1] !== eosTokenId,
    chatTemplate: options.chatTemplate,
    source,
    vocabEncoding: vocabEncodingOf(json),
  });
}

/** Read tokenizer.json (required), tokenizer_config.json and chat_template.jinja (when present) from a checkpoint folder. */
export async function loadTokenizerFromDir(dir: CheckpointDir, signal?: AbortSignal): Promise<Tokenizer> {
  const readIfThere = async (file: string) => ((await dir.exists(file, signal)) ? dir.readText(file, signal) : undefined);
  const tokenizerJson = await dir.readText(TOKENIZER_FILE, signal);
  const tokenizerConfigJson = await readIfThere(TOKENIZER_CONFIG_FILE);
  const chatTemplate = await readIfThere(CHAT_TEMPLATE_FILE);
  return loadTokenizer({ tokenizerJson, tokenizerConfigJson, chatTemplate, source: dir.description });
}

/**
 * Every regex of tokenizer.json (a `"pattern": {"Regex": ...}` anywhere: pre-tokenizer, normalizer,
 * decoder) must be safe to backtrack over untrusted text (regex_safety.ts): refused by its path.
 */
function checkPatterns(json: Record<string, unknown>, source: string | undefined): void {
  const visit = (node: unknown, path: string): void => {
    if (node === null || typeof node !== 'object' || path === '.model' || path === '.added_tokens') return;
    for (const [key, value] of Object.entries(node)) {
      const here = Array.isArray(node) ? `${path}[${key}]` : `${path}.${key}`;
      const regex = key === 'pattern' && value && typeof value === 'object' ? (value as { Regex?: unknown }).Regex : undefined;
      if (typeof regex === 'string') {
        const problem = patternProblem(regex);
        if (problem) {
          throw new TokenizerError(
            `${describeFile(TOKENIZER_FILE, source)}: the regex at ${here.slice(1)}.Regex ${JSON.stringify(regex.slice(0, 80))} is refused: ` +
              `${problem.reason}; it could hang the tokenizer on some inputs`,
          );
        }
      } else visit(value, here);
    }
  };
  visit(json, '');
}

/** The id of a special token named in tokenizer_config.json; it must exist in tokenizer.json. */
function specialTokenId(hf: HfTokenizer, config: Record<string, unknown>, key: string, source: string | undefined): number | null {
  const content = tokenContent(config, key, source);
  if (content === null) return null;
  const id = hf.token_to_id(content);
  if (id === undefined) {
    throw new TokenizerError(
      `${describeFile(TOKENIZER_CONFIG_FILE, source)}: ${key} ${JSON.stringify(content)} is not a token of ${TOKENIZER_FILE}: the two files do not belong together`,
    );
  }
  return id;
}
