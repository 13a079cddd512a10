// webmoe logits <model> --ids 1,2,3 [--positions all|last] [--fp8-activations] [--json]
// The main model's logits after the ids (from position 0), for research and for comparing with
// other implementations. --json: {logits: number[][]}, one row per position asked for, the whole
// vocabulary. Without --json: each row's highest logits, for a quick look. --fp8-activations: the
// W8A8 path (activations rounded to FP8 per 128-channel group before every FP8 Linear).

import { AbortError, TokenizerError } from '../errors.ts';
import type { Engine } from '../runtime/types.ts';
import { parse, UsageError } from './args.ts';
import { ENGINE_FLAGS, engineFlags, loadEngine, parseIds } from './engine_args.ts';
import { escapeControls } from './escape.ts';
import { checkAgainstConfig } from './preflight.ts';
import { abortOnStop } from './stop.ts';

const FLAGS = {
  ids: { type: 'string' },
  positions: { type: 'string' },
  'fp8-activations': { type: 'boolean' },
  json: { type: 'boolean' },
  ...ENGINE_FLAGS,
} as const;

/** Logits shown per row without --json. */
const TOP = 5;

export async function logitsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, FLAGS, ['model']);
  if (values.ids === undefined) throw new UsageError('give the token ids: --ids 1,2,3');
  const ids = parseIds(values.ids);
  const positions = values.positions ?? 'last';
  if (positions !== 'all' && positions !== 'last') throw new UsageError(`--positions must be "all" or "last", got "${positions}"`);
  const flags = engineFlags(values);

  const controller = new AbortController();
  const { signal } = controller;
  const stops = abortOnStop(controller);
  let engine: Engine | undefined;
  try {
    await checkAgainstConfig(positionals[0], { ids }, signal);
    engine = await loadEngine(positionals[0], { ...flags, signal, numerics: values['fp8-activations'] ? 'w8a8' : 'weight_only' });
    const rows = await engine.logits(ids, { positions, signal });
    if (values.json) process.stdout.write(`${JSON.stringify({ logits: rows.map((row) => Array.from(row)) })}\n`);
    else process.stdout.write(await summary(engine, ids, rows));
    return stops.status();
  } catch (err) {
    if (err instanceof AbortError && signal.aborted) return stops.status();
    throw err;
  } finally {
    stops.restore();
    await engine?.unload();
  }
}

/** One line per row: the position, the id there, and the TOP highest logits (with their text when there is a tokenizer). */
async function summary(engine: Engine, ids: number[], rows: Float32Array[]): Promise<string> {
  const first = ids.length - rows.length;
  const lines: string[] = [];
  for (const [r, row] of rows.entries()) {
    const top = highest(row, TOP);
    const shown = await Promise.all(top.map(async (id) => `${id}${await tokenText(engine, id)} ${row[id].toFixed(4)}`));
    lines.push(`position ${first + r} (id ${ids[first + r]}): ${shown.join(', ')}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Ids of the k largest values, largest first (one pass: the vocabulary may be 129k wide). */
function highest(row: Float32Array, k: number): number[] {
  const top: number[] = [];
  for (let id = 0; id < row.length; id++) {
    if (top.length === k && row[id] <= row[top[k - 1]]) continue;
    let at = top.length;
    while (at > 0 && row[top[at - 1]] < row[id]) at--;
    top.splice(at, 0, id);
    if (top.length > k) top.pop();
  }
  return top;
}

/** ` "text"` of one id, or nothing for a checkpoint without tokenizer.json. */
async function tokenText(engine: Engine, id: number): Promise<string> {
  try {
    // JSON.stringify escapes C0 controls; the tokenizer's C1 controls (CSI) need escaping too.
    return ` ${escapeControls(JSON.stringify(await engine.detokenize([id])))}`;
  } catch (err) {
    if (err instanceof TokenizerError) return '';
    throw err;
  }
}
