// One generation request: bring the session's cache up to the request's ids (reusing the longest
// prefix it already holds), prefill the rest chunk by chunk, then decode one token per step on the
// GPU (sampling included; only the id comes back), streaming text and stopping on EOS, stop ids,
// stop strings, maxTokens or the caller's signal. Each chunk and step is one scheduler turn.

import { AbortError, ArgumentError, GrammarError, PromptTooLongError } from '../errors.ts';
import type { DraftMode, GpuModel, PlannedWork, Routing, SamplingParams } from '../model/gpu_model.ts';
import { SeenTokens } from '../model/head.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import { checkResponseFormat, maskAllows, type CheckedResponseFormat, type RequestGrammar } from './grammar.ts';
import type { Scheduler } from './scheduler.ts';
import { commonPrefix, type SessionState } from './session.ts';
import { acceptDraft } from './speculative.ts';
import type { SpeculationPolicy } from './speculation_policy.ts';
import { StopStrings } from './stop_strings.ts';
import type { EngineLimits, FinishReason, GenerateChunk, GenerateOptions, GenerationStats, TokenExperts } from './types.ts';

export const DEFAULT_MAX_TOKENS = 256;

/** A plan a request will use: rows, logit rows, MTP mode. */
export const DEFAULT_SAMPLING = { temperature: 0.7, topP: 0.95, topK: 0 } as const;

export interface GenerateContext {
  model: GpuModel;
  /** Absent for a checkpoint without tokenizer.json: chunks then carry ids and no text. */
  tokenizer: Tokenizer | undefined;
  scheduler: Scheduler;
  limits: EngineLimits;
  /**
   * Grows the session's cache to `positions` within the engine's cache budget (PromptTooLongError
   * beyond it) and makes the plans of the given row counts, all inside a GPU error scope
   * (GpuOutOfMemoryError when the device refuses), before any work is submitted.
   */
  /** `signal` ends a wait for cache memory (AbortError). */
  reserve(session: SessionState, positions: number, work: PlannedWork, signal?: AbortSignal): Promise<void>;
  /** Throws the device's DeviceLostError once it is lost. */
  checkDevice(): void;
  /** Throws AbortError once the engine is unloaded or the session closed. */
  checkOpen(session: SessionState): void;
  /** What speculative 'auto' decides by (absent without an MTP layer). */
  speculation?: SpeculationPolicy;
}

/**
 * A request's GenerateOptions after the one check they get, at the API edge (engine.generate, and
 * chat.completions.create through the engine's generateIds), with every default filled in. The
 * generation itself checks nothing again.
 */
export interface GenerationOptions {
  maxTokens: number;
  /** The kernel's parameters at step 0. */
  sampling: SamplingParams;
  /** 1: off. */
  repetitionPenalty: number;
  stop: string | string[] | undefined;
  stopTokenIds: readonly number[];
  ignoreEos: boolean;
  /** Asked for (default 'auto'); used only where the checkpoint has MTP and no repetition penalty. */
  speculative: boolean | 'auto';
  /** How the MTP module drafts at temperature > 0 (speculative.ts; default 'sampled', 'greedy' for a seeded request left to 'auto'). */
  drafts: DraftMode;
  experts: boolean;
  /** Structured output: the format to compile (the engine makes the request's matcher from it). */
  responseFormat: CheckedResponseFormat | undefined;
  signal: AbortSignal | undefined;
}

/** Checks a request's options (ArgumentError naming the first bad one) and fills in the defaults. */
export function checkGenerateOptions(options: GenerateOptions): GenerationOptions {
  const maxTokens = options.maxTokens ?? DEFAULT_MAX_TOKENS;
  if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new ArgumentError(`maxTokens must be a positive integer, got ${maxTokens}`);
  const temperature = options.temperature ?? DEFAULT_SAMPLING.temperature;
  const topP = options.topP ?? DEFAULT_SAMPLING.topP;
  const topK = options.topK ?? DEFAULT_SAMPLING.topK;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (!(Number.isFinite(temperature) && temperature >= 0)) throw new ArgumentError(`temperature must be a number >= 0, got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new ArgumentError(`top_p must be in (0, 1], got ${topP}`);
  if (!(Number.isInteger(topK) && topK >= 0)) throw new ArgumentError(`top_k must be an integer >= 0, got ${topK}`);
  if (!(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32)) throw new ArgumentError(`seed must be an integer in [0, 2^32), got ${seed}`);
  const repetitionPenalty = options.repetitionPenalty ?? 1;
  if (!(Number.isFinite(repetitionPenalty) && repetitionPenalty > 0)) throw new ArgumentError(`repetition_penalty must be a number > 0 (1: off), got ${repetitionPenalty}`);
  // The types too: a caller in plain JS (or over the Worker) may pass anything.
  const { stop, stopTokenIds } = options;
  if (stop !== undefined && !(typeof stop === 'string' || (Array.isArray(stop) && stop.every((s) => typeof s === 'string')))) {
    throw new ArgumentError(`stop must be a string or an array of strings, got ${JSON.stringify(stop)}`);
  }
  if (stopTokenIds !== undefined && !(Array.isArray(stopTokenIds) && stopTokenIds.every((id) => Number.isInteger(id) && id >= 0))) {
    throw new ArgumentError(`stopTokenIds must be an array of token ids, got ${JSON.stringify(stopTokenIds)}`);
  }
  for (const flag of ['ignoreEos', 'experts'] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== 'boolean') throw new ArgumentError(`${flag} must be true or false, got ${JSON.stringify(options[flag])}`);
  }
  const { speculative, drafts } = options;
  if (speculative !== undefined && typeof speculative !== 'boolean' && speculative !== 'auto') {
    throw new ArgumentError(`speculative must be true, false or "auto", got ${JSON.stringify(speculative)}`);
  }
  if (drafts !== undefined && drafts !== 'sampled' && drafts !== 'greedy') throw new ArgumentError(`drafts must be "sampled" or "greedy", got ${JSON.stringify(drafts)}`);
  return {
    maxTokens,
    sampling: { temperature, topP, topK, seed, step: 0 },
    repetitionPenalty,
    stop: options.stop,
    stopTokenIds: options.stopTokenIds ?? [],
    ignoreEos: options.ignoreEos ?? false,
    speculative: speculative ?? 'auto',
    // A seeded request left to 'auto' keeps its tokens whatever the policy chooses: greedy drafts
    // give plain decoding's tokens for a seed, sampled ones only its distribution.
    drafts: drafts ?? (options.seed !== undefined && (speculative ?? 'auto') === 'auto' ? 'greedy' : 'sampled'),
    experts: options.experts ?? false,
    responseFormat: checkResponseFormat(options.responseFormat),
    signal: options.signal,
  };
}

/** The one check of token ids that enter the engine (the caller's, or the tokenizer's): integers in [0, vocab). */
export function checkTokenIds(ids: readonly number[], vocab: number): void {
  for (const id of ids) if (!(Number.isInteger(id) && id >= 0 && id < vocab)) throw new ArgumentError(`token id ${id} is not in [0, ${vocab})`);
}

/** The whole sequence a generation follows (what the session holds plus the new ids) against the context limit. */
export function checkPromptLength(ids: readonly number[], limits: EngineLimits): void {
  if (ids.length === 0) throw new ArgumentError('the prompt is empty: give at least one token');
  if (ids.length >= limits.maxContext) {
    throw new PromptTooLongError(`the prompt has ${ids.length} tokens; this engine's context holds ${limits.maxContext} positions (prompt plus at least one generated token)`);
  }
}

/**
 * Generates after `ids` (the whole sequence the session should hold: earlier turns included).
 * The ids and options were checked at the API edge (checkTokenIds, checkPromptLength,
 * checkGenerateOptions). The session is left holding the rows of every id that was run; on abort
 * it throws AbortError. With `grammar` (the request's response_format matcher, the caller's to
 * free) every sampled row is masked to the tokens the grammar allows there.
 */
export async function* runGeneration(ctx: GenerateContext, session: SessionState, ids: readonly number[], options: GenerationOptions, grammar?: RequestGrammar): AsyncGenerator<GenerateChunk> {
  const started = now();
  const { model, tokenizer, scheduler, limits } = ctx;
  const { signal, sampling, maxTokens, repetitionPenalty } = options;
  const vocab = model.config.vocab_size;
  // The ids seen so far (prompt and output), as presence bits for the GPU.
  const repetition = repetitionPenalty === 1 ? undefined : { penalty: repetitionPenalty, seen: new SeenTokens(vocab, ids) };
  const stopIds = new Set([...(options.ignoreEos ? [] : model.config.eos_token_ids), ...options.stopTokenIds]);
  const stops = new StopStrings(options.stop);
  const budget = Math.min(maxTokens, limits.maxContext - ids.length);

  // Speculative decoding with the checkpoint's MTP module (speculative.ts): the same tokens as plain
  // decoding when greedy, the same distribution when sampling. Not with a repetition penalty (the
  // draft row would need the draft in its mask). 'auto' asks the policy once, here (speculation_policy.ts).
  const canSpeculate = model.weights.mtp !== undefined && !repetition;
  const policy = ctx.speculation;
  const speculative = canSpeculate && (options.speculative === 'auto' ? (policy?.chooseForRequest() ?? false) : options.speculative);

  // Reuse the rows the session holds for the common prefix; at least one id must run to give logits.
  const reuse = Math.min(commonPrefix(session.history, ids), ids.length - 1);
  await ctx.reserve(session, ids.length + budget, { prefill: ids.length - reuse, mtp: speculative, decode: speculative ? 'verify' : 'plain' }, options.signal);
  session.truncate(reuse);
  session.tail = [];
  const toPrefill = ids.slice(reuse);

  const abortIfAsked = () => {
    ctx.checkDevice();
    ctx.checkOpen(session);
    if (signal?.aborted) throw new AbortError('The generation was aborted.');
  };
  // A step that fails because the device was lost says so with the typed error.
  const turn = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      // Checked again when the turn comes: an abort while waiting in the queue runs nothing.
      return await scheduler.turn(() => {
        abortIfAsked();
        return work();
      });
    } catch (err) {
      ctx.checkDevice();
      throw err;
    }
  };

  // Prefill, one chunk per turn.
  let next: number | undefined;
  let draft: number | undefined;
  for (const { start, end, isLast } of model.chunks(toPrefill.length)) {
    abortIfAsked();
    const part = toPrefill.slice(start, end);
    // With MTP every chunk also fills the MTP layer's cache rows; it needs the id after the chunk.
    const after = isLast ? undefined : toPrefill[end];
    // The first token is sampled after the last chunk: the grammar's start state masks it.
    const tokenMask = isLast && grammar ? await grammar.nextMask() : undefined;
    const result = await turn(() =>
      model.forward(session.plans, part, session.history.length, { sample: isLast ? sampling : undefined, repetition, mtp: speculative, nextId: after, tokenMask, drafts: options.drafts }),
    );
    session.history.push(...part);
    if (isLast) {
      next = result.id;
      draft = result.draft;
    }
  }
  const prefillDone = now();
  const decoder = tokenizer?.createStreamDecoder({ skipSpecialTokens: true }) ?? { push: () => '', flush: () => '' };
  const generated: number[] = [];
  let finishReason: FinishReason = 'length';

  // Experts of the tokens run since the last chunk (GenerateOptions.experts).
  let experts: TokenExperts[] = [];
  const K = model.config.num_experts_per_tok;
  const noteExperts = (routing: Routing | undefined, tokens: number[]) => {
    if (!routing) return;
    tokens.forEach((token, row) => experts.push({ token, experts: [...routing.values()].map((ids) => [...ids.subarray(row * K, (row + 1) * K)]) }));
  };
  const emit = (id: number): GenerateChunk => {
    const chunk: GenerateChunk = { text: stops.push(decoder.push(id)), ids: [id] };
    if (experts.length > 0) [chunk.experts, experts] = [experts, []];
    return chunk;
  };
  let decodeStart = prefillDone;
  let drafted = 0;
  let accepted = 0;
  // Sampled drafts: where the q of `draft` is (gpu_model.ts VerifyOptions.draftRow): 1 after the prefill.
  const sampledDrafts = options.drafts === 'sampled' && sampling.temperature > 0;
  let draftRow: 0 | 1 = 1;
  // Tokens to emit, in order; all but the last are already in the cache (an accepted draft).
  const queue: number[] = next === undefined ? [] : [next];
  while (queue.length > 0) {
    const id = queue.shift()!;
    const inCache = queue.length > 0;
    generated.push(id);
    const finish = (reason: FinishReason) => {
      finishReason = reason;
      session.tail = inCache ? [] : [id];
    };
    // The sampler only picks what the mask allows, so a refusal here is a fault, not the model's.
    if (grammar && !grammar.accept(id)) throw new GrammarError(`internal: token ${id} was sampled where the grammar refuses it`);
    if (stopIds.has(id) || grammar?.isTerminated()) {
      finish('stop');
      break;
    }
    // Until it is run through the model, the id the caller now sees is the session's tail.
    session.tail = inCache ? [] : [id];
    yield emit(id);
    if (stops.stopped) {
      finish('stop');
      break;
    }
    if (generated.length >= budget) {
      finish('length');
      break;
    }
    if (inCache) continue;
    abortIfAsked();
    if (generated.length === 1) decodeStart = now();
    repetition?.seen.add(id);
    const step = { ...sampling, step: generated.length };
    const position = session.history.length;
    // The grammar's state after `id`: the mask of the next sampled row.
    const mask = grammar ? await grammar.nextMask() : undefined;
    if (speculative && draft !== undefined) {
      const guess = draft;
      const verifyMask = grammar && mask ? await verifyRowsMask(grammar, mask, guess) : undefined;
      const v = await turn(() =>
        timed(() => model.verify(session.plans, id, guess, position, step, { routing: options.experts, tokenMask: verifyMask, drafts: options.drafts, draftRow: sampledDrafts ? draftRow : undefined })),
      );
      const outcome = acceptDraft(guess, v.ids);
      policy?.observeVerify(v.ms, outcome.accepted);
      drafted++;
      noteExperts(v.routing, outcome.accepted ? [id, guess] : [id]);
      if (outcome.accepted) accepted++;
      session.history.push(...(outcome.accepted ? [id, guess] : [id]));
      session.tail = [];
      queue.push(...outcome.tokens);
      draft = outcome.accepted ? v.drafts[1] : v.drafts[0];
      draftRow = outcome.accepted ? 1 : 0;
    } else {
      const result = await turn(() => timed(() => model.forward(session.plans, [id], position, { sample: step, repetition, routing: options.experts, tokenMask: mask })));
      if (!repetition && !grammar) policy?.observePlain(result.ms); // a mask upload is not a plain step's cost
      noteExperts(result.routing, [id]);
      session.history.push(id);
      session.tail = [];
      queue.push(result.id!);
      draft = undefined;
    }
  }
  const ended = now();
  const tailText = stops.push(decoder.flush()) + stops.flush();
  const decoded = Math.max(0, generated.length - 1);
  const stats: GenerationStats = {
    promptTokens: ids.length,
    prefilledTokens: toPrefill.length,
    generatedTokens: generated.length,
    ttftMs: prefillDone - started,
    prefillTokensPerS: toPrefill.length / Math.max(1e-9, (prefillDone - started) / 1000),
    decodeTokensPerS: decoded > 0 ? decoded / Math.max(1e-9, (ended - decodeStart) / 1000) : 0,
    totalMs: ended - started,
    ...(speculative ? { mtp: { drafted, accepted } } : {}),
    ...(grammar ? { grammar: grammar.stats() } : {}),
  };
  yield { text: tailText, ids: [], ...(experts.length > 0 ? { experts } : {}), done: { finishReason, stats } };
}

/**
 * The verify step's two mask rows under a grammar. Row 0: the state after the current token
 * (`mask`), so y0 is a sample of the masked distribution and the draft is accepted only where
 * y0 = draft, i.e. never when the grammar refuses the draft. Row 1: the state after the draft
 * too (accepted into the matcher for its mask, then rolled back: the generation loop accepts
 * each output token itself, the draft included when it is accepted). Where the grammar refuses
 * the draft, or the draft completes it, row 1 is never output: it allows every token.
 */
async function verifyRowsMask(grammar: RequestGrammar, mask: Uint32Array, draft: number): Promise<Uint32Array<ArrayBuffer>> {
  const rows = new Uint32Array(2 * grammar.words);
  rows.set(mask, 0);
  if (maskAllows(mask, draft) && grammar.accept(draft)) {
    try {
      if (!grammar.isTerminated()) rows.set(await grammar.nextMask(), grammar.words);
      else rows.fill(0xffffffff, grammar.words);
    } finally {
      grammar.rollBack(1);
    }
  } else {
    rows.fill(0xffffffff, grammar.words);
  }
  return rows;
}

function now(): number {
  return performance.now();
}

/** A step's result with the ms it ran (inside its turn: the wait for the GPU is not its cost). */
async function timed<T extends object>(step: () => Promise<T>): Promise<T & { ms: number }> {
  const started = now();
  const result = await step();
  return Object.assign(result, { ms: now() - started });
}
