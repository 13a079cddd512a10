// For the CLI tests: running the command in-process with its output captured (or as a child
// process, for real stdin and signals); one engine per model folder shared by the commands of a
// test file; and the official fixture's weights with a tokenizer beside them, so that text
// prompts, --chat and the chat command run end to end. The model is random, so its text is
// gibberish: the tests check structure.

import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vi } from 'vitest';
import type { NodeEngineOptions } from '../node.ts';
import { delegateEngine } from '../runtime/delegate_engine.ts';
import type { ChatCompletionRequest, Engine } from '../runtime/types.ts';
import { officialFixture, REPO_ROOT } from '../testing/fixtures.ts';

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
  /** The same for stderr (console.error included). */
  onStderr?: (piece: string) => void;
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
      options.onStderr?.(String(piece));
      return true;
    }),
    vi.spyOn(console, 'error').mockImplementation((...a) => {
      err.push(`${a.join(' ')}\n`);
      options.onStderr?.(`${a.join(' ')}\n`);
    }),
    vi.spyOn(console, 'log').mockImplementation((...a) => void out.push(`${a.join(' ')}\n`)),
  ];
  if (options.stdin) spies.push(vi.spyOn(process, 'stdin', 'get').mockReturnValue(options.stdin as typeof process.stdin));
  try {
    // Imported here: a test file's vi.mock('../node.ts') factory imports this module, and main.ts imports node.ts.
    const { main } = await import('./main.ts');
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

/** How spawnCli runs the child. */
export interface SpawnOptions {
  /** Written to its stdin, which is then closed. */
  stdin?: string;
  /** Close the reading end of its stdout before it writes anything, as `| head -c 0` would: its writes fail with EPIPE. */
  closeStdout?: boolean;
  /** Sees stdout as it comes, with the child (to signal it). */
  onStdout?: (piece: string, child: ChildProcess) => void;
  /** Sees stderr as it comes, with the child. */
  onStderr?: (piece: string, child: ChildProcess) => void;
  /** Kill it (SIGKILL, code -1) if it runs longer: a test of a hang fails without leaving the child behind. */
  deadlineMs?: number;
}

/** Runs `webmoe <argv>` as its own process (node with tsx, as `npm run webmoe` does). `code` is -1 when a signal ended it. */
export function spawnCli(argv: string[], options: SpawnOptions = {}): Promise<CliRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--import', './tools/register-raw.mjs', 'src/cli/bin.ts', ...argv], { cwd: REPO_ROOT });
  let out = '';
  let err = '';
  if (options.closeStdout) child.stdout.destroy();
  else {
    child.stdout.setEncoding('utf8').on('data', (piece: string) => {
      out += piece;
      options.onStdout?.(piece, child);
    });
  }
  child.stderr.setEncoding('utf8').on('data', (piece: string) => {
    err += piece;
    options.onStderr?.(piece, child);
  });
  child.stdin.end(options.stdin ?? '');
  const deadline = options.deadlineMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.deadlineMs);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(deadline);
      resolve({ code: code ?? -1, out, err });
    });
  });
}

/**
 * createNodeEngine for the CLI tests, through vi.mock('../node.ts') (see withSharedEngines): one
 * engine per model folder and context for the whole test file, so each command skips the load and
 * the GPU pipelines compile once. A command's unload() is counted, not done; the tests check that
 * every command unloaded and closed its sessions.
 */
export const sharedEngines = {
  /** createNodeEngine calls and unload() calls the commands made. */
  loads: 0,
  unloads: 0,
  /** Every chat.completions request the commands made, as made. */
  chatRequests: [] as ChatCompletionRequest[],
  engines: new Map<string, Promise<Engine>>(),
  /** Sessions open over all shared engines. */
  async openSessions(): Promise<number> {
    let open = 0;
    for (const engine of this.engines.values()) open += (await (await engine).stats()).sessions;
    return open;
  },
  async release(): Promise<void> {
    for (const engine of this.engines.values()) await (await engine).unload();
    this.engines.clear();
  },
};

/** The vi.mock factory's result: node.ts with createNodeEngine sharing engines. */
export function withSharedEngines<T extends { createNodeEngine(options: NodeEngineOptions): Promise<Engine> }>(real: T): T {
  const createNodeEngine = async (options: NodeEngineOptions): Promise<Engine> => {
    const key = `${String(options.model)}|${options.maxContext}|${options.numerics ?? ""}|${options.weights ?? ""}|${options.maxBindingMib ?? ""}|${options.gpuBudgetMib ?? ""}|${options.expertSlots ?? ""}|${options.draftVocab ?? ""}|${options.expertStore ?? ""}|${options.fuseNorms ?? ""}`;
    let loading = sharedEngines.engines.get(key);
    if (!loading) {
      loading = real.createNodeEngine(options);
      sharedEngines.engines.set(key, loading);
      loading.catch(() => sharedEngines.engines.delete(key));
    }
    const engine = await loading;
    sharedEngines.loads++;
    return commandView(engine);
  };
  return { ...real, createNodeEngine };
}

/** The shared engine as one command sees it: chat requests recorded, unload counted. */
function commandView(engine: Engine): Engine {
  const create = (request: ChatCompletionRequest) => {
    sharedEngines.chatRequests.push(request);
    return engine.chat.completions.create(request);
  };
  return delegateEngine(engine, {
    chat: { completions: { create: create as Engine['chat']['completions']['create'] } },
    unload: async () => void sharedEngines.unloads++,
  });
}
