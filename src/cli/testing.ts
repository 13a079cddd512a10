// For the CLI tests: running the command in-process with its output captured, and the official
// fixture's weights with a tokenizer beside them, so that text prompts, --chat and the chat command
// run end to end. The model is random, so its text is gibberish: the tests check structure.

import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vi } from 'vitest';
import { officialFixture } from '../testing/fixtures.ts';
import { main } from './main.ts';

export interface CliRun {
  code: number;
  /** Everything written to stdout. */
  out: string;
  /** Everything written to stderr, console.error included. */
  err: string;
}

export interface RunOptions {
  /** Stands in for process.stdin. */
  stdin?: NodeJS.ReadableStream;
  /** Called with each piece written to stdout, as it is written. */
  onStdout?: (piece: string) => void;
}

/** Runs `webmoe <argv>` in this process through main(), capturing stdout and stderr. */
export async function runCli(argv: string[], options: RunOptions = {}): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  const spies: { mockRestore(): void }[] = [
    vi.spyOn(process.stdout, 'write').mockImplementation((piece) => {
      out.push(String(piece));
      options.onStdout?.(String(piece));
      return true;
    }),
    vi.spyOn(process.stderr, 'write').mockImplementation((piece) => {
      err.push(String(piece));
      return true;
    }),
    vi.spyOn(console, 'error').mockImplementation((...a) => void err.push(`${a.join(' ')}\n`)),
    vi.spyOn(console, 'log').mockImplementation((...a) => void out.push(`${a.join(' ')}\n`)),
  ];
  if (options.stdin) spies.push(vi.spyOn(process, 'stdin', 'get').mockReturnValue(options.stdin as typeof process.stdin));
  try {
    const code = await main(argv);
    return { code, out: out.join(''), err: err.join('') };
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
}

/** The lines of stderr that are the command's error lines (`webmoe <command>: ...`). */
export function errorLines(err: string): string[] {
  return err.split('\n').filter((line) => line.startsWith('webmoe '));
}

/** The chat markers of the test template; they are added tokens, so each is one id. */
export const USER = '<|User|>';
export const ASSISTANT = '<|Assistant|>';

/**
 * GPT-2's byte-level alphabet: byte b is written as one printable character (the printable
 * ASCII and Latin-1 bytes as themselves, the others as U+0100 onwards), as the ByteLevel
 * pre-tokenizer and decoder of tokenizer.json expect.
 */
function byteLevelAlphabet(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

/**
 * tokenizer.json of a byte-level BPE without merges: <s> = 0 and </s> = 1 (the fixture's BOS and
 * EOS ids), the 256 bytes at 2..257, then the chat markers. 260 tokens in a model of vocab 320:
 * ids past them decode to nothing.
 */
function tokenizerJson() {
  const special = (id: number, content: string, isSpecial: boolean) => ({ id, content, special: isSpecial, single_word: false, lstrip: false, rstrip: false, normalized: false });
  const vocab: Record<string, number> = { '<s>': 0, '</s>': 1 };
  byteLevelAlphabet().forEach((c, b) => (vocab[c] = 2 + b));
  vocab[USER] = 258;
  vocab[ASSISTANT] = 259;
  return {
    version: '1.0',
    added_tokens: [special(0, '<s>', true), special(1, '</s>', true), special(258, USER, false), special(259, ASSISTANT, false)],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', vocab, merges: [] },
  };
}

const CHAT_TEMPLATE =
  `{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}${USER}{{ m.content }}` +
  `{% else %}${ASSISTANT}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}` +
  `{% if add_generation_prompt %}${ASSISTANT}{% endif %}`;

/** A fresh temp folder: the official fixture's config.json and model.safetensors, tokenizer.json and tokenizer_config.json. */
export function fixtureWithTokenizer(): string {
  const dir = mkdtempSync(join(tmpdir(), 'webmoe-cli-'));
  for (const file of ['config.json', 'model.safetensors']) copyFileSync(officialFixture(file), join(dir, file));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', add_bos_token: true, chat_template: CHAT_TEMPLATE }));
  return dir;
}
