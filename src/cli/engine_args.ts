// What the commands that run the model share: their flags (token ids, sampling, context) and
// loading the engine with progress on stderr (stop.ts turns Ctrl-C and SIGTERM into an abort).
// Flags are checked here, before the slow load, so a typo fails at once with a one-line UsageError.

import { createNodeEngine } from '../node.ts';
import type { Engine, EngineProgress, SamplingOptions } from '../runtime/types.ts';
import { EXPERT_STORES, WEIGHT_MODES, type ExpertStoreKind, type WeightMode } from '../model/load_weights.ts';
import { UsageError } from './args.ts';
import { escapeControls } from './escape.ts';

/** parseArgs options of every command that loads a model. */
export const ENGINE_FLAGS = {
  'max-context': { type: 'string' },
  weights: { type: 'string' },
  'max-binding-mib': { type: 'string' },
  'gpu-budget-mib': { type: 'string' },
  'expert-slots': { type: 'string' },
  'draft-vocab': { type: 'string' },
  'expert-store': { type: 'string' },
  'no-fused-norms': { type: 'boolean' },
} as const;

/** What ENGINE_FLAGS set: --max-context N, --weights fp8|bf16, --max-binding-mib N, --gpu-budget-mib N, --expert-slots N, --expert-store memory|checkpoint, --draft-vocab N, --no-fused-norms. */
export interface EngineFlags {
  maxContext?: number;
  weights?: WeightMode;
  maxBindingMib?: number;
  gpuBudgetMib?: number;
  expertSlots?: number;
  draftVocab?: number;
  expertStore?: ExpertStoreKind;
  /** false with --no-fused-norms (the decode step's norms as dispatches of their own). */
  fuseNorms?: boolean;
}

export function engineFlags(values: FlagValues): EngineFlags {
  const weights = stringFlag(values, 'weights');
  const expertStore = stringFlag(values, 'expert-store');
  if (expertStore !== undefined && !(EXPERT_STORES as readonly string[]).includes(expertStore)) {
    throw new UsageError(`--expert-store must be one of ${EXPERT_STORES.join(', ')}, got "${expertStore}"`);
  }
  if (weights !== undefined && !(WEIGHT_MODES as readonly string[]).includes(weights)) {
    throw new UsageError(`--weights must be one of ${WEIGHT_MODES.join(', ')}, got "${weights}"`);
  }
  return {
    maxContext: intFlag(values, 'max-context', 2),
    weights: weights as WeightMode | undefined,
    maxBindingMib: numberFlag(values, 'max-binding-mib', (n) => n > 0, 'a positive number of MiB'),
    gpuBudgetMib: numberFlag(values, 'gpu-budget-mib', (n) => n > 0, 'a positive number of MiB'),
    expertSlots: intFlag(values, 'expert-slots', 1),
    draftVocab: intFlag(values, 'draft-vocab', 1),
    expertStore: expertStore as ExpertStoreKind | undefined,
    fuseNorms: values['no-fused-norms'] === true ? false : undefined,
  };
}

/** parseArgs options of the commands that sample. */
export const SAMPLING_FLAGS = {
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
} as const;

type FlagValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** "1,2,3" -> [1, 2, 3]; spaces around the commas are allowed. The range is the engine's to check (it knows the vocabulary). */
export function parseIds(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.length === 1 && parts[0] === '') throw new UsageError('--ids needs at least one token id, as in --ids 1,2,3');
  return parts.map((part) => {
    if (!/^\d+$/.test(part)) throw new UsageError(`--ids must be comma-separated non-negative integers, got "${part}" in "${value}"`);
    return Number(part);
  });
}

/** An optional integer flag in [min, max]. */
export function intFlag(values: FlagValues, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const value = stringFlag(values, name);
  if (value === undefined) return undefined;
  const n = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!(Number.isSafeInteger(n) && n >= min && n <= max)) {
    throw new UsageError(`--${name} must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? '∞' : max}], got "${value}"`);
  }
  return n;
}

/** An optional number flag; `ok` says whether a value is allowed, `expected` says which are. */
export function numberFlag(values: FlagValues, name: string, ok: (n: number) => boolean, expected: string): number | undefined {
  const value = stringFlag(values, name);
  if (value === undefined) return undefined;
  const n = value.trim() === '' ? NaN : Number(value);
  if (!(Number.isFinite(n) && ok(n))) throw new UsageError(`--${name} must be ${expected}, got "${value}"`);
  return n;
}

function stringFlag(values: FlagValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

/** --max-tokens, --temperature, --top-p, --seed (and --top-k where the command has it); absent flags leave the engine's defaults. */
export function samplingFlags(values: FlagValues): SamplingOptions & { maxTokens?: number } {
  return {
    maxTokens: intFlag(values, 'max-tokens', 1),
    temperature: numberFlag(values, 'temperature', (t) => t >= 0, 'a number >= 0 (0: greedy)'),
    topP: numberFlag(values, 'top-p', (p) => p > 0 && p <= 1, 'a number in (0, 1]'),
    topK: intFlag(values, 'top-k', 0, 2 ** 32 - 1), // the sampler's u32
    seed: intFlag(values, 'seed', 0, 2 ** 32 - 1),
  };
}

/**
 * Loads the model with createNodeEngine. Progress goes to stderr, never stdout: one updating line
 * on a terminal, and in any case one line once loaded.
 */
export async function loadEngine(model: string, options: EngineFlags & { signal?: AbortSignal; numerics?: 'weight_only' | 'w8a8' }): Promise<Engine> {
  const stderr = process.stderr;
  const started = performance.now();
  let shown = 0;
  const onProgress = (p: EngineProgress) => {
    if (!stderr.isTTY || p.phase !== 'weights') return;
    const t = performance.now();
    if (t - shown < 100 && p.bytesDone < p.bytesTotal) return; // ~10 redraws a second
    shown = t;
    const percent = p.bytesTotal > 0 ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 0;
    stderr.write(`\r\x1b[2Kloading ${escapeControls(p.file ?? model)}: ${percent}% (${mib(p.bytesDone)} of ${mib(p.bytesTotal)} MiB)`);
  };
  let engine: Engine;
  try {
    engine = await createNodeEngine({ model, maxContext: options.maxContext, weights: options.weights, maxBindingMib: options.maxBindingMib, gpuBudgetMib: options.gpuBudgetMib, expertSlots: options.expertSlots, draftVocab: options.draftVocab, expertStore: options.expertStore, fuseNorms: options.fuseNorms, signal: options.signal, onProgress, numerics: options.numerics });
  } finally {
    if (stderr.isTTY) stderr.write('\r\x1b[2K');
  }
  const { weightBytes } = await engine.stats();
  stderr.write(`loaded ${escapeControls(engine.info.name)}: ${mib(weightBytes)} MiB of weights in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return engine;
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}
