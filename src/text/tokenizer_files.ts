// The tokenizer files of a Hugging Face checkpoint: their names, JSON parsing, and the token
// fields of tokenizer_config.json, with every failure a TokenizerError that names the file.

import { TokenizerError } from '../errors.ts';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
/** Newer checkpoints keep the chat template in its own file; it wins over tokenizer_config.json's. */
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

/** How messages name a file: "tokenizer.json in <source>", or the bare name when the source is unknown. */
export function describeFile(file: string, source: string | undefined): string {
  return source ? `${file} in ${source}` : file;
}

/** A JSON file given as text or as an already parsed value -> its top-level object. */
export function parseJsonObject(json: string | object, file: string, source?: string): Record<string, unknown> {
  let value: unknown = json;
  if (typeof json === 'string') {
    try {
      value = JSON.parse(json);
    } catch (err) {
      throw new TokenizerError(`${describeFile(file, source)} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TokenizerError(`${describeFile(file, source)} must hold a JSON object at the top level`);
  }
  return value as Record<string, unknown>;
}

/**
 * A special token of tokenizer_config.json (`bos_token`, `eos_token`, ...): a plain string, or an
 * AddedToken object `{"__type": "AddedToken", "content": ...}` as DeepSeek-V3 writes them.
 * null when the key is absent or null.
 */
export function tokenContent(config: Record<string, unknown>, key: string, source?: string): string | null {
  const value = config[key];
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  throw new TokenizerError(
    `${describeFile(TOKENIZER_CONFIG_FILE, source)}: ${key} must be a string or an object with a string "content", got ${JSON.stringify(value)}`,
  );
}

/** A boolean flag of tokenizer_config.json; `fallback` when absent. */
export function flag(config: Record<string, unknown>, key: string, fallback: boolean, source?: string): boolean {
  const value = config[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'boolean') {
    throw new TokenizerError(`${describeFile(TOKENIZER_CONFIG_FILE, source)}: ${key} must be true or false, got ${JSON.stringify(value)}`);
  }
  return value;
}
