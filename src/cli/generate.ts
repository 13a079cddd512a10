// webmoe generate <model> (--prompt TEXT | --ids 1,2,3) [sampling flags] [--stop STR]... [--ignore-eos] [--speculative auto|on|off] [--no-mtp] [--chat] [--json]
// Streams the continuation to stdout as it comes, or with --json prints one object at the end.
// Ctrl-C or SIGTERM aborts the request through its AbortSignal, unloads, prints what was made (the
// --json object too) and exits with status 130 or 143; a closed stdout (`| head`) does the same,
// quietly, with status 0 (stop.ts).

import { AbortError, TokenizerError } from '../errors.ts';
import type { Engine, FinishReason, GenerateOptions, GenerationStats, OffloadStats } from '../runtime/types.ts';
import { parse, UsageError } from './args.ts';
import { ENGINE_FLAGS, engineFlags, loadEngine, parseIds, SAMPLING_FLAGS, samplingFlags } from './engine_args.ts';
import type { EngineFlags } from './engine_args.ts';
import { checkAgainstConfig } from './preflight.ts';
import { abortOnStop } from './stop.ts';

const FLAGS = {
  prompt: { type: 'string' },
  ids: { type: 'string' },
  ...SAMPLING_FLAGS,
  'top-k': { type: 'string' },
  stop: { type: 'string', multiple: true },
  'ignore-eos': { type: 'boolean' },
  speculative: { type: 'string' },
  'no-mtp': { type: 'boolean' },
  chat: { type: 'boolean' },
  json: { type: 'boolean' },
  ...ENGINE_FLAGS,
} as const;

interface GenerateRequest {
  model: string;
  /** Text (tokenized by the checkpoint's tokenizer, BOS added) or token ids as given. */
  prompt: string | number[];
  /** Send the prompt as one user message through chat.completions (the checkpoint's chat template). */
  chat: boolean;
  json: boolean;
  engine: EngineFlags;
  options: Omit<GenerateOptions, 'signal' | 'session'>;
}

/** The command line -> a request, or a UsageError; nothing is loaded yet. */
export function parseGenerateArgs(argv: string[]): GenerateRequest {
  const { values, positionals } = parse(argv, FLAGS, ['model']);
  if (values.prompt !== undefined && values.ids !== undefined) throw new UsageError('give either --prompt or --ids, not both');
  if (values.prompt === undefined && values.ids === undefined) throw new UsageError('give the prompt: --prompt TEXT or --ids 1,2,3');
  const prompt = values.ids !== undefined ? parseIds(values.ids) : values.prompt!;
  const chat = values.chat ?? false;
  if (chat) {
    // The chat API takes messages and the OpenAI fields only.
    if (typeof prompt !== 'string') throw new UsageError('--chat needs a text --prompt (it becomes a user message), not --ids');
  }
  return {
    model: positionals[0],
    prompt,
    chat,
    json: values.json ?? false,
    engine: engineFlags(values),
    options: { ...samplingFlags(values), stop: values.stop, ignoreEos: values['ignore-eos'], speculative: speculativeFlag(values.speculative, values['no-mtp']) },
  };
}

const SPECULATIVE: Record<string, boolean | 'auto'> = { auto: 'auto', on: true, off: false };

/** --speculative auto|on|off (default auto: where it pays on this adapter); --no-mtp is off. */
export function speculativeFlag(value: string | undefined, noMtp: boolean | undefined): boolean | 'auto' {
  if (value !== undefined && !(value in SPECULATIVE)) throw new UsageError(`--speculative takes auto, on or off, got "${value}"`);
  if (noMtp && value !== undefined && value !== 'off') throw new UsageError(`--no-mtp is --speculative off; it cannot go with --speculative ${value}`);
  return noMtp ? false : SPECULATIVE[value ?? 'auto'];
}

/** What was generated, filled in as it streams so that an aborted request still has it. */
interface Transcript {
  /** Generated ids. */
  ids: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number | null;
  /** The engine's figures; null after an abort. */
  stats: GenerationStats | null;
  /** The expert offload's figures after the request (null when every expert is resident). */
  offload: OffloadStats | null;
}

export async function generateCommand(argv: string[]): Promise<number> {
  const request = parseGenerateArgs(argv);
  const controller = new AbortController();
  const { signal } = controller;
  const stops = abortOnStop(controller);
  const transcript: Transcript = { ids: [], text: '', finishReason: 'abort', promptTokens: null, stats: null, offload: null };
  let engine: Engine | undefined;
  try {
    const ids = typeof request.prompt === 'string' ? undefined : request.prompt;
    await checkAgainstConfig(request.model, { ids, topK: request.options.topK }, signal);
    engine = await loadEngine(request.model, { ...request.engine, signal });
    const show = request.json ? () => {} : (piece: string) => void process.stdout.write(piece);
    if (request.chat) await streamChat(engine, request, transcript, show, signal);
    else await streamGeneration(engine, request, transcript, show, signal);
    transcript.offload = (await engine.stats()).offload ?? null;
  } catch (err) {
    if (!(err instanceof AbortError && signal.aborted)) throw err;
  } finally {
    stops.restore();
    await engine?.unload();
  }
  // Loaded and generating (perhaps aborted): end the streamed line, or print the one object.
  if (engine && stops.reason !== 'stdout-closed') process.stdout.write(request.json ? `${JSON.stringify(jsonReport(transcript))}\n` : '\n');
  return stops.status();
}

async function streamGeneration(engine: Engine, request: GenerateRequest, transcript: Transcript, show: (piece: string) => void, signal: AbortSignal) {
  // A checkpoint without a tokenizer (ids in, ids out) streams ids; text would stay empty.
  const showIds = typeof request.prompt !== 'string' && !(await hasTokenizer(engine));
  const ids = transcript.ids;
  for await (const chunk of engine.generate(request.prompt, { ...request.options, signal })) {
    for (const id of chunk.ids) {
      if (showIds) show(ids.length === 0 ? `${id}` : ` ${id}`);
      ids.push(id);
    }
    if (!showIds) show(chunk.text);
    transcript.text += chunk.text;
    if (chunk.done) {
      transcript.finishReason = chunk.done.finishReason;
      transcript.stats = chunk.done.stats;
      transcript.promptTokens = chunk.done.stats.promptTokens;
    }
  }
}

async function streamChat(engine: Engine, request: GenerateRequest, transcript: Transcript, show: (piece: string) => void, signal: AbortSignal) {
  const { maxTokens, temperature, topP, topK, seed, stop, ignoreEos, speculative } = request.options;
  const stream = await engine.chat.completions.create({
    messages: [{ role: 'user', content: request.prompt as string }],
    stream: true,
    max_tokens: maxTokens,
    temperature,
    top_p: topP,
    top_k: topK,
    seed,
    stop,
    ignore_eos: ignoreEos,
    speculative,
    signal,
  });
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice.delta.content) {
      show(choice.delta.content);
      transcript.text += choice.delta.content;
    }
    if (chunk.webmoe) transcript.ids.push(...chunk.webmoe.ids);
    if (chunk.webmoe?.stats) transcript.stats = chunk.webmoe.stats;
    if (choice.finish_reason) transcript.finishReason = choice.finish_reason;
    if (chunk.usage) transcript.promptTokens = chunk.usage.prompt_tokens;
  }
}

/** Whether the checkpoint has tokenizer.json: the engine answers detokenize with a TokenizerError when not. */
async function hasTokenizer(engine: Engine): Promise<boolean> {
  try {
    await engine.detokenize([]);
    return true;
  } catch (err) {
    if (err instanceof TokenizerError) return false;
    throw err;
  }
}

/** The --json object (issue 4's keys); figures the engine did not report are null. */
function jsonReport(t: Transcript) {
  return {
    ids: t.ids,
    text: t.text,
    prompt_tokens: t.promptTokens,
    ttft_ms: t.stats?.ttftMs ?? null,
    prefill_tokens_per_s: t.stats?.prefillTokensPerS ?? null,
    decode_tokens_per_s: t.stats?.decodeTokensPerS ?? null,
    finish_reason: t.finishReason,
    mtp: t.stats?.mtp ?? null,
    offload: offloadJson(t.offload),
  };
}

/** stats().offload as --json keys (null when every expert is resident). */
export function offloadJson(o: OffloadStats | null | undefined) {
  if (!o) return null;
  return { budget_bytes: o.budgetBytes, resident_bytes: o.residentBytes, host_bytes: o.hostBytes, expert_slots: o.expertSlots, expert_hits: o.expertHits, expert_misses: o.expertMisses, uploaded_bytes: o.uploadedBytes, route_wait_ms: o.routeWaitMs };
}
