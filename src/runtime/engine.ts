// The engine in this thread: a loaded model, its tokenizer, sessions with their latent caches, and
// the scheduler that shares the GPU between requests. The Worker hosts exactly this; Node uses it
// directly. Every request checks its arguments and limits before any GPU work starts.

import { AbortError, ArgumentError, EngineBusyError, PromptTooLongError, throwIfAborted, TokenizerError, WebmoeError } from '../errors.ts';
import { withBufferLedger, type BufferLedger } from '../gpu/buffer_ledger.ts';
import { withGpuErrorScope, type Gpu } from '../gpu/device.ts';
import { parseConfig } from '../config.ts';
import { openCheckpoint } from '../io/checkpoint_files.ts';
import type { CheckpointDir } from '../io/sources.ts';
import { createGpuModel, DEFAULT_PREFILL_CHUNK, measuredVariants, type GpuModel, type PlannedWork } from '../model/gpu_model.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { processVariantStore } from '../gpu/variant_store.ts';
import { checkMemoryPlan, expertSlotsFor, planMemory } from '../model/memory_plan.ts';
import { offloadStats } from './offload_stats.ts';
import type { ModelNumerics } from '../model/model_kernels.ts';
import { loadWeights, moeLayerIndices, plannedBindingLimit, type ExpertStoreKind, type LoadedWeights, type WeightMode } from '../model/load_weights.ts';
import { countParameters } from '../model/weights.ts';
import { loadTokenizerFromDir } from '../text/tokenizer.ts';
import { TOKENIZER_FILE } from '../text/tokenizer_files.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import { importGrammarLibrary, type GrammarLibraryLoader } from '../text/xgrammar.ts';
import { createChat } from './chat.ts';
import { Grammars, type RequestGrammar } from './grammar.ts';
import { checkGenerateOptions, checkPromptLength, checkTokenIds, runGeneration, type GenerateContext, type GenerationOptions } from './generate.ts';
import type { ModelSource } from './model_source.ts';
import { Scheduler } from './scheduler.ts';
import { speculationPolicy, type SpeculationPolicy } from './speculation_policy.ts';
import { SessionState } from './session.ts';
import type { Engine, EngineLimits, EngineProgress, EngineStats, GenerateChunk, GenerateOptions, LogitsOptions, ModelInfo, Session } from './types.ts';

export const DEFAULT_MAX_CONTEXT = 4096;
export const DEFAULT_CACHE_BUDGET_BYTES = 512 * 2 ** 20;
/** Requests that may wait for cache memory at once; past that a request fails with EngineBusyError. */
export const MAX_WAITING_REQUESTS = 64;

export interface LocalEngineOptions {
  gpu: Gpu;
  dir: CheckpointDir;
  onProgress?: (progress: EngineProgress) => void;
  signal?: AbortSignal;
  /** Positions per session; default min(max_position_embeddings, 4096). */
  maxContext?: number;
  /** Latent cache bytes all sessions may hold together; default 512 MiB. */
  cacheBudgetBytes?: number;
  prefillChunk?: number;
  /** 'w8a8': activations rounded to FP8 before every FP8 Linear, as the official fp8 path (research; slower). */
  numerics?: ModelNumerics;
  /**
   * How a release's BF16 Linears are held: 'fp8' (default) quantises them at load to block-scaled
   * e4m3, as an FP8 release stores them (half the memory); 'bf16' keeps them exact. An FP8
   * release stays FP8 either way.
   */
  weights?: WeightMode;
  /**
   * Plan the weights with storage bindings of at most this many MiB (default: the GPU's largest,
   * maxStorageBufferBindingSize / maxBufferSize). A tensor larger than that is split into
   * buffers of row bands or expert ranges; lower it to test the split path, or to leave room.
   */
  maxBindingMib?: number;
  /**
   * GPU memory the model may take in all, in MiB: the weights, one session's latent cache at
   * maxContext and its plans. Checked from the headers before the download (GpuOutOfMemoryError
   * saying what would fit); default: no budget (the GPU's own limits are checked in any case).
   */
  gpuBudgetMib?: number;
  /**
   * Keep the routed experts in CPU memory and this many per MoE layer in a GPU cache (a model
   * larger than the GPU; src/model/expert_offload.ts). Default: all resident, unless gpuBudgetMib
   * is too small for that, when the most slots the budget holds are taken.
   */
  expertSlots?: number;
  /**
   * Where offloaded experts are kept: 'memory' (default: CPU memory, filled as the checkpoint
   * streams in) or 'checkpoint' (read from its files at each miss: nothing held; an FP8 release,
   * or weights 'bf16').
   */
  expertStore?: ExpertStoreKind;
  /**
   * The MTP module drafts from the logits of token ids 0 .. draftVocab - 1 only (byte-level BPE
   * numbers the frequent tokens first), so its head reads that share of its weights; the output
   * is the same, only the acceptance moves. Default: defaultDraftVocab (a quarter of the
   * vocabulary, at least 2048 ids).
   */
  draftVocab?: number;
  /**
   * Decode steps run the RMSNorms inside the GEMVs and the residual adds inside the kernels before
   * them (48 dispatches a token for the shipped checkpoint instead of 58); default true. false
   * keeps the separate dispatches: to measure what the fusion gains (`--no-fused-norms`).
   */
  fuseNorms?: boolean;
  /** Destroy the GPU device on unload (the engine opened it). */
  ownsGpu?: boolean;
  /**
   * How structured output (response_format) loads its grammar library, on the first request that
   * asks for it. Default: the package imported as a module (browsers and Workers, through a
   * bundler); the Node entry passes nodeGrammarLibrary (text/xgrammar_node.ts).
   */
  grammarLibrary?: GrammarLibraryLoader;
}

/**
 * What createEngine (src/create_engine.ts) takes: the engine's options with a model source in
 * place of the folder. The Worker's load request (worker/protocol.ts) is the part that crosses.
 */
export interface CreateEngineOptions extends Omit<LocalEngineOptions, 'gpu' | 'dir' | 'ownsGpu' | 'grammarLibrary'> {
  /** A URL of the checkpoint folder, browser Files or a directory handle, or a CheckpointDir (in-thread only). */
  model: ModelSource;
  /** Host the engine in a Worker. Default: true where Workers exist and no `gpu` is given. */
  worker?: boolean;
  /** In-thread only: a device opened by the caller (it stays the caller's to destroy). */
  gpu?: Gpu;
  /** Keep downloaded shards in IndexedDB (default true in browsers). */
  cacheShards?: boolean;
}

export async function createLocalEngine(options: LocalEngineOptions): Promise<Engine> {
  const { dir, signal } = options;
  const { gpu, ledger } = withBufferLedger(options.gpu); // stats() counts every buffer made from here
  options.onProgress?.({ phase: 'files', bytesDone: 0, bytesTotal: 0 });
  const checkpoint = await openCheckpoint(dir, { signal });
  const config = parseConfig(checkpoint.configText, `${dir.description}/config.json`);
  const limits: EngineLimits = {
    maxContext: options.maxContext ?? Math.min(config.max_position_embeddings, DEFAULT_MAX_CONTEXT),
    cacheBudgetBytes: options.cacheBudgetBytes ?? DEFAULT_CACHE_BUDGET_BYTES,
  };
  // Checked before any byte of the weights is read.
  if (!(Number.isInteger(limits.maxContext) && limits.maxContext >= 2 && limits.maxContext <= config.max_position_embeddings)) {
    throw new ArgumentError(`maxContext must be an integer in [2, ${config.max_position_embeddings}] (max_position_embeddings), got ${limits.maxContext}`);
  }
  if (!(Number.isFinite(limits.cacheBudgetBytes) && limits.cacheBudgetBytes > 0)) {
    throw new ArgumentError(`cacheBudgetBytes must be a positive number of bytes, got ${limits.cacheBudgetBytes}`);
  }
  const { maxBindingMib, gpuBudgetMib } = options;
  for (const [name, value] of [['maxBindingMib', maxBindingMib], ['gpuBudgetMib', gpuBudgetMib]] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) throw new ArgumentError(`${name} must be a positive number of MiB, got ${value}`);
  }
  const maxBindingBytes = maxBindingMib === undefined ? undefined : Math.max(4, Math.floor(maxBindingMib * 2 ** 20));
  const moeLayers = moeLayerIndices(config, true).size;
  if (options.expertSlots !== undefined && !(moeLayers > 0 && Number.isInteger(options.expertSlots) && options.expertSlots >= 1 && options.expertSlots <= config.n_routed_experts)) {
    throw new ArgumentError(moeLayers > 0 ? `expertSlots must be an integer in [1, ${config.n_routed_experts}] (n_routed_experts), got ${options.expertSlots}` : 'expertSlots: this model has no MoE layer');
  }
  if (options.draftVocab !== undefined && !(Number.isInteger(options.draftVocab) && options.draftVocab >= 1 && options.draftVocab <= config.vocab_size)) {
    throw new ArgumentError(`draftVocab must be an integer in [1, ${config.vocab_size}] (vocab_size), got ${options.draftVocab}`);
  }
  // The memory plan, from the headers: refused here, before a byte of the weights is read.
  const { limits: gpuLimits } = gpu.device;
  const bindingLimit = plannedBindingLimit(gpuLimits, maxBindingBytes);
  const budgetBytes = gpuBudgetMib === undefined ? undefined : gpuBudgetMib * 2 ** 20;
  const planInput = (weights: WeightMode) => ({
    config, tensors: [...checkpoint.tensors.values()], weights, maxContext: limits.maxContext, prefillChunk: options.prefillChunk ?? DEFAULT_PREFILL_CHUNK,
    cacheBudgetBytes: limits.cacheBudgetBytes, bindingLimit, maxBufferSize: gpuLimits.maxBufferSize, where: dir.description,
  });
  const planFor = (weights: WeightMode, expertSlots?: number) => planMemory({ ...planInput(weights), expertSlots, expertStore: options.expertStore });
  const mode = options.weights ?? 'fp8';
  // Over the budget with every expert resident: as many experts per layer as it holds, the rest in CPU memory.
  let expertSlots = options.expertSlots;
  if (expertSlots === undefined && budgetBytes !== undefined && moeLayers > 0 && planFor(mode).oneSessionBytes > budgetBytes) expertSlots = expertSlotsFor(planInput(mode), budgetBytes);
  // Only to advise in a refusal: --weights fp8 (its layout may itself be refused: FP8 pieces are
  // whole 128-row blocks), and what one expert per layer would need.
  const fp8Instead = mode === 'bf16' && config.quantization_config === null ? orUndefined(() => planFor('fp8')) : undefined;
  const oneSlot = expertSlots === undefined && moeLayers > 0 ? orUndefined(() => planFor(mode, 1)) : undefined;
  // The working buffers are checked against the GPU's own binding limit (maxBindingMib lowers the weights' only).
  checkMemoryPlan(planFor(mode, expertSlots), { bindingLimit: plannedBindingLimit(gpuLimits), maxBufferSize: gpuLimits.maxBufferSize, budgetBytes }, dir.description, fp8Instead, oneSlot);
  // A checkpoint without tokenizer.json still runs on token ids (generate(ids), logits).
  const tokenizer = (await dir.exists(TOKENIZER_FILE, signal)) ? await loadTokenizerFromDir(dir, signal) : undefined;
  const loaded = await loadWeights(gpu, checkpoint, {
    signal,
    weights: options.weights,
    maxBindingBytes,
    expertSlots,
    expertStore: options.expertStore,
    onProgress: (p) => options.onProgress?.({ phase: 'weights', ...p }),
  });
  let model: GpuModel;
  let speculation: SpeculationPolicy | undefined;
  const draftVocab = options.draftVocab ?? defaultDraftVocab(config.vocab_size);
  try {
    // The norms' reduction and the GEMV strategy measured on this adapter (once: remembered).
    const pipelineCache = new PipelineCache(gpu.device);
    const variants = await measuredVariants(gpu, pipelineCache, config, processVariantStore());
    model = createGpuModel(gpu, loaded, { pipelineCache, prefillChunk: options.prefillChunk, numerics: options.numerics, draftVocab, fuseNorms: options.fuseNorms, ...variants });
  } catch (err) {
    loaded.destroy();
    throw err;
  }
  try {
    // What a plain and a verify step cost here, for speculative 'auto' (remembered per adapter and model).
    if (model.weights.mtp) {
      const identity = [adapterName(gpu), dir.description, loaded.weights, options.numerics ?? 'weight_only', options.prefillChunk ?? DEFAULT_PREFILL_CHUNK, `draft ${draftVocab}`, `slots ${expertSlots ?? 'all'}`, ...(options.fuseNorms === false ? ['unfused norms'] : []), fnv1a(checkpoint.configText)].join('|');
      speculation = await speculationPolicy(model, identity);
    }
    throwIfAborted(signal);
  } catch (err) {
    model.destroy();
    loaded.destroy();
    throw err;
  }
  const grammars = new Grammars({ load: options.grammarLibrary ?? importGrammarLibrary, tokenizer, vocabSize: config.vocab_size, stopTokenIds: config.eos_token_ids });
  const engine = new LocalEngine(gpu, ledger, loaded, model, tokenizer, limits, dir.description, options.ownsGpu ?? false, speculation, grammars, budgetBytes);
  options.onProgress?.({ phase: 'ready', bytesDone: loaded.bytesOnGpu, bytesTotal: loaded.bytesOnGpu });
  return engine;
}

/** The session (and grammar matcher) a request opened, for the finaliser of its dropped iterator (holds no reference to the iterator). */
interface SessionHolder {
  session?: SessionState;
  grammar?: RequestGrammar;
}

/**
 * The MTP draft head's default vocabulary: the first quarter of the ids, at least 2048 (or all
 * of a smaller vocabulary). On the shipped checkpoint the first 2048 of 8192 ids are 96% of the
 * tokens it generates, and the head reads a quarter of its bytes (BENCHMARKS.md).
 */
export function defaultDraftVocab(vocab: number): number {
  return Math.min(vocab, Math.max(2048, Math.ceil(vocab / 4)));
}

function adapterName(gpu: Gpu): string {
  return [gpu.adapter.vendor, gpu.adapter.architecture, gpu.adapter.description].filter(Boolean).join(' ');
}

/** A short fingerprint of a text (FNV-1a, 32 bits, hex): the config in a remembered measurement's key. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

function orUndefined<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch (err) {
    if (err instanceof WebmoeError) return undefined;
    throw err;
  }
}

class LocalEngine implements Engine {
  readonly info: ModelInfo;
  readonly chat: Engine['chat'];
  private readonly sessions = new Map<number, SessionState>();
  private readonly scheduler = new Scheduler();
  private nextSession = 1;
  private unloaded = false;
  private readonly context: GenerateContext;

  constructor(
    private readonly gpu: Gpu,
    private readonly ledger: BufferLedger,
    private readonly loaded: LoadedWeights,
    private readonly model: GpuModel,
    private readonly tokenizer: Tokenizer | undefined,
    private readonly limits: EngineLimits,
    name: string,
    private readonly ownsGpu: boolean,
    private readonly speculation: SpeculationPolicy | undefined,
    private readonly grammars: Grammars,
    private readonly budgetBytes: number | undefined,
  ) {
    const counts = countParameters(model.config);
    const c = model.config;
    const cacheLayers = c.num_hidden_layers + (model.weights.mtp ? 1 : 0);
    this.info = {
      name,
      config: c,
      parameters: counts.total,
      hasMtp: model.weights.mtp !== undefined,
      weights: loaded.weights,
      moeLayers: model.weights.layers.filter((l) => l.moe).map((l) => l.index),
      cacheBytesPerToken: { latent: 4 * c.latent_cache_dim * cacheLayers, mha: 4 * c.num_attention_heads * (c.qk_head_dim + c.v_head_dim) * cacheLayers },
    };
    this.context = {
      model,
      tokenizer,
      scheduler: this.scheduler,
      limits,
      reserve: (s, n, plans, signal) => this.reserve(s, n, plans, signal),
      checkDevice: () => {
        if (gpu.lostError) throw gpu.lostError;
      },
      speculation,
      checkOpen: (session) => {
        if (this.unloaded) throw new AbortError('The engine was unloaded during the request.');
        if (session.closing) throw new AbortError(`Session ${session.id} was closed during the request.`);
      },
    };
    this.chat = createChat(this, () => this.text(), name, limits.maxContext);
  }

  // The API edge of generation: the options and the ids that enter (the caller's, or the
  // tokenizer's) are checked here, once; runGeneration and the model trust them.
  generate(prompt: string | number[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk> {
    return this.reclaimedWhenDropped((holder) => this.generateText(holder, prompt, options));
  }

  /** Generation over a whole conversation's ids (the chat API): the session reuses its common prefix. */
  generateIds(ids: number[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk> {
    return this.reclaimedWhenDropped((holder) => this.generateFromIds(holder, ids, options));
  }

  /**
   * A caller that drops an iterator without return() (or break) never runs the generator's
   * finally: when the iterator is garbage-collected, the session it opened is closed here.
   */
  private readonly dropped = new FinalizationRegistry<SessionHolder>((holder) => {
    holder.grammar?.dispose();
    const s = holder.session;
    if (!s || this.sessions.get(s.id) !== s) return;
    // A kept session stays the caller's, free for its next request (or closed, if that was asked).
    if (s.ephemeral || s.closing) this.closeSessionState(s);
    else s.busy = false;
  });

  private reclaimedWhenDropped(make: (holder: SessionHolder) => AsyncGenerator<GenerateChunk>): AsyncGenerator<GenerateChunk> {
    const holder: SessionHolder = {};
    const it = make(holder);
    this.dropped.register(it, holder);
    return it;
  }

  private async *generateText(holder: SessionHolder, prompt: string | number[], options: GenerateOptions): AsyncGenerator<GenerateChunk> {
    this.checkLoaded();
    if (typeof prompt !== 'string' && !Array.isArray(prompt)) throw new ArgumentError('the prompt must be a string or an array of token ids');
    const checked = checkGenerateOptions(options);
    yield* this.onSession(holder, options.session, checked, (held) => {
      const promptIds = typeof prompt === 'string' ? this.text().encode(prompt, { addSpecialTokens: (options.addBos ?? true) && held.length === 0, maxTokens: this.limits.maxContext }) : [...prompt];
      // The ids the session holds were checked when they came in.
      checkTokenIds(promptIds, this.model.config.vocab_size);
      return [...held, ...promptIds];
    });
  }

  private async *generateFromIds(holder: SessionHolder, ids: number[], options: GenerateOptions): AsyncGenerator<GenerateChunk> {
    this.checkLoaded();
    const checked = checkGenerateOptions(options);
    checkTokenIds(ids, this.model.config.vocab_size);
    yield* this.onSession(holder, options.session, checked, () => ids);
  }

  /** Runs a generation on the given session (or a new one, closed after): `ids` gets what the session holds. */
  private async *onSession(holder: SessionHolder, handle: Session | undefined, options: GenerationOptions, ids: (held: number[]) => number[]): AsyncGenerator<GenerateChunk> {
    const session = handle ? this.session(handle) : this.openSession();
    session.ephemeral = !handle;
    holder.session = session;
    if (session.busy) throw new ArgumentError(`session ${session.id} is already generating; wait for that request to finish`);
    session.busy = true;
    try {
      const all = ids([...session.history, ...session.tail]);
      checkPromptLength(all, this.limits);
      // Compiled (or found in the cache) before any GPU work: a schema the library refuses fails here.
      const grammar = options.responseFormat ? (holder.grammar = await this.grammars.matcher(options.responseFormat)) : undefined;
      yield* runGeneration(this.context, session, all, options, grammar);
    } finally {
      holder.grammar?.dispose();
      session.busy = false;
      if (!handle || session.closing) this.closeSessionState(session);
    }
  }

  async tokenize(text: string, options: { addBos?: boolean } = {}): Promise<number[]> {
    return this.text().encode(text, { addSpecialTokens: options.addBos ?? true, maxTokens: this.limits.maxContext });
  }

  async detokenize(ids: number[]): Promise<string> {
    return this.text().decode(ids);
  }

  async logits(ids: number[], options: LogitsOptions = {}): Promise<Float32Array[]> {
    this.checkLoaded();
    const positions = options.positions ?? 'last';
    if (positions !== 'all' && positions !== 'last') throw new ArgumentError(`positions must be "all" or "last", got ${String(positions)}`);
    if (!Array.isArray(ids) || ids.length === 0) throw new ArgumentError('logits needs a non-empty array of token ids');
    checkTokenIds(ids, this.model.config.vocab_size);
    if (ids.length > this.limits.maxContext) throw new PromptTooLongError(`${ids.length} ids exceed the context limit of ${this.limits.maxContext}`);
    const session = this.openSession();
    // A request in flight, to admission: its cache is freed when it ends.
    session.ephemeral = true;
    session.busy = true;
    try {
      const model = this.model;
      await this.reserve(session, ids.length, { prefill: ids.length, logits: positions }, options.signal);
      const rows: Float32Array[] = [];
      for (const { start, end, isLast } of model.chunks(ids.length)) {
        const part = ids.slice(start, end);
        const logits = positions === 'all' ? 'all' : isLast ? 'last' : undefined;
        // As generate's steps: typed errors when the engine is unloaded or the device lost meanwhile.
        const out = await this.scheduler
          .turn(() => {
            this.context.checkDevice();
            this.context.checkOpen(session);
            return model.forward(session.plans, part, start, { logits, signal: options.signal });
          })
          .catch((err: unknown) => {
            if (this.unloaded) throw err instanceof AbortError ? err : new AbortError('The engine was unloaded during the request.');
            throw this.gpu.lostError ?? err;
          });
        // Copies: the rows are views of one readback each, and may cross a worker boundary.
        if (out.logits) rows.push(...out.logits.map((r) => r.slice()));
      }
      return rows;
    } finally {
      this.closeSessionState(session);
    }
  }

  async createSession(): Promise<Session> {
    this.checkLoaded();
    return { id: this.openSession().id };
  }

  async closeSession(session: Session): Promise<void> {
    const state = this.sessions.get(session?.id);
    if (!state) return;
    // A request on it stops at its next step (AbortError) and closes it as it ends.
    if (state.busy) state.closing = true;
    else this.closeSessionState(state);
  }

  async stats(): Promise<EngineStats> {
    let cacheBytes = 0;
    let cachedTokens = 0;
    for (const s of this.sessions.values()) {
      cacheBytes += s.bytes;
      cachedTokens += s.history.length;
    }
    const c = this.model.config;
    const cacheLayers = c.num_hidden_layers + (this.model.weights.mtp ? 1 : 0);
    return {
      sessions: this.sessions.size,
      cacheBytes,
      cacheBytesPerToken: 4 * c.latent_cache_dim * cacheLayers,
      cachedTokens,
      weightBytes: this.loaded.bytesOnGpu,
      gpuBytes: this.ledger.liveBytes,
      gpuBuffers: this.ledger.liveBuffers,
      limits: { ...this.limits },
      adapter: adapterName(this.gpu),
      speculation: this.speculation?.snapshot() ?? null,
      offload: offloadStats(this.model.offload, this.loaded.bytesOnGpu, this.budgetBytes),
    };
  }

  async unload(): Promise<void> {
    if (this.unloaded) return;
    this.unloaded = true;
    // Requests stop at their next step; wait for the step on the GPU now to finish first.
    await this.scheduler.turn(async () => {});
    for (const s of [...this.sessions.values()]) this.closeSessionState(s);
    this.wakeWaiting();
    this.model.destroy();
    this.loaded.destroy();
    this.grammars.dispose();
    if (this.ownsGpu) this.gpu.destroy();
  }

  /** The tokenizer, or a TokenizerError for a checkpoint that has none. */
  private text(): Tokenizer {
    if (!this.tokenizer) throw new TokenizerError(`${this.info.name} has no ${TOKENIZER_FILE}: give token ids instead of text`);
    return this.tokenizer;
  }

  private checkLoaded(): void {
    if (this.unloaded) throw new WebmoeError('BAD_ARGUMENT', 'this engine was unloaded; create a new one');
  }

  private session(handle: Session): SessionState {
    const state = this.sessions.get(handle?.id);
    if (!state) throw new ArgumentError(`session ${handle?.id} does not exist (closed, or from another engine)`);
    return state;
  }

  private openSession(): SessionState {
    const state = new SessionState(this.nextSession++, this.model);
    this.sessions.set(state.id, state);
    return state;
  }

  private closeSessionState(state: SessionState): void {
    state.destroy();
    this.sessions.delete(state.id);
    this.wakeWaiting();
  }

  /** Requests waiting for cache memory, woken when a session frees some (or the engine unloads). */
  private waiters: (() => void)[] = [];

  private wakeWaiting(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** Grows a session's cache within the engine-wide budget and makes its plans, in a GPU error scope. */
  private async reserve(session: SessionState, positions: number, work: PlannedWork, signal?: AbortSignal): Promise<void> {
    if (this.gpu.lostError) throw this.gpu.lostError;
    const wanted = session.bytesFor(positions, this.limits.maxContext);
    // Admission: over the budget, wait while requests in flight will free their caches; refuse
    // when nothing will (the others are idle sessions kept by their callers) or the queue is full.
    for (;;) {
      let others = 0;
      let freeing = false;
      for (const s of this.sessions.values()) {
        if (s === session) continue;
        others += s.bytes;
        freeing ||= s.ephemeral && s.busy && !s.waiting && s.bytes > 0;
      }
      if (wanted <= session.bytes || others + wanted <= this.limits.cacheBudgetBytes) break;
      if (!freeing || wanted > this.limits.cacheBudgetBytes) {
        throw new PromptTooLongError(
          `${positions} positions need ${wanted} bytes of latent cache; with the other sessions' ${others} bytes that is over the engine's cache budget of ${this.limits.cacheBudgetBytes} bytes: close a session, ask for fewer tokens, or raise cacheBudgetBytes`,
        );
      }
      if (this.waiters.length >= MAX_WAITING_REQUESTS) {
        throw new EngineBusyError(`${MAX_WAITING_REQUESTS} requests are already waiting for latent-cache memory (budget ${this.limits.cacheBudgetBytes} bytes): try again when some finish`);
      }
      session.waiting = true;
      await new Promise<void>((wake) => {
        const done = () => {
          signal?.removeEventListener('abort', done);
          const i = this.waiters.indexOf(done);
          if (i >= 0) this.waiters.splice(i, 1);
          wake();
        };
        this.waiters.push(done);
        signal?.addEventListener('abort', done, { once: true });
      });
      session.waiting = false;
      if (this.unloaded) throw new AbortError('The engine was unloaded during the request.');
      if (this.gpu.lostError) throw this.gpu.lostError;
      throwIfAborted(signal);
      if (session.closing) throw new AbortError(`Session ${session.id} was closed during the request.`);
    }
    try {
      await withGpuErrorScope(this.gpu.device, `the latent cache and working buffers of ${positions} positions`, () => {
        session.reserve(positions, this.limits.maxContext);
        this.model.preparePlans(session.plans, work);
      });
    } catch (err) {
      // The allocation failed after the session moved to new buffers: start it over, empty.
      session.reset();
      throw err;
    }
  }
}

export type { LocalEngine };
