// Argument parsing shared by the subcommands: node:util's parseArgs with our one-line errors.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { nodeDir } from '../io/node_source.ts';
import type { CheckpointDir } from '../io/sources.ts';
import { urlDir } from '../io/url_source.ts';

/** Bad command-line usage: exit status 2 with this message. */
export class UsageError extends Error {}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, positionals: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.positionals.length !== positionals.length) {
    throw new UsageError(`expected ${positionals.map((p) => `<${p}>`).join(' ')}, got ${parsed.positionals.length ? parsed.positionals.join(' ') : 'nothing'}`);
  }
  return parsed;
}

/** A checkpoint location from the command line: an http(s) URL or a local folder. */
export function checkpointDir(location: string): CheckpointDir {
  return /^https?:\/\//.test(location) ? urlDir(location) : nodeDir(location);
}

export function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${name} must be a positive integer, got "${value}"`);
  return n;
}
