// createRemoteEngine: the Engine API over an OpenAI-compatible HTTP server (webmoe serve, vLLM,
// SGLang), so that an app written against the local engine moves to a server unchanged. What
// HTTP gives, it does as the local engine does (chat, generate, sessions, AbortSignal, typed
// errors); what it cannot give (logits, the experts of each token) throws RemoteUnsupportedError;
// stats() and info say honestly what is known. It uses the global fetch (browsers, Node 20+) or
// the one given, and no client library.

import { AbortError, ArgumentError, RemoteError, RemoteUnsupportedError, WebmoeError } from '../errors.ts';
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Engine, EngineBackend, EngineStats, GenerateChunk, GenerateOptions, LogitsOptions, ModelInfo, Session } from '../runtime/types.ts';
import { chatBody, chatChunks, wholeChat } from './chat.ts';
import { completionBody, completionChunks, type Transcript } from './generate.ts';
import { DEFAULT_MAX_RETRIES, readJson, send, type HttpClient } from './http.ts';
import { remoteInfo } from './info.ts';
import { RequestScope } from './scope.ts';
import { RemoteSessions, type RemoteSession } from './sessions.ts';
import { RemoteTiming } from './timing.ts';
import type { WireModel } from './wire.ts';

export interface RemoteEngineOptions {
  /** The API's base URL, as OpenAI clients take it: "http://host:8000/v1" (webmoe serve, vLLM and SGLang serve under /v1). */
  baseURL: string;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** The model's name on the server (an id its GET /v1/models lists). */
  model: string;
  /** Default: the global fetch. */
  fetch?: typeof fetch;
  /** Retries of a request that got no answer, or a 429 / 503 with Retry-After; default 2. */
  maxRetries?: number;
  /** The served checkpoint's config.json (text or parsed), for `info` when the server does not describe its model (vLLM, SGLang). */
  config?: string | object;
  /** Ends the first request (GET /v1/models). */
  signal?: AbortSignal;
}

/** Checks the server and that it serves `model` (GET /v1/models), then returns the engine. */
export async function createRemoteEngine(options: RemoteEngineOptions): Promise<Engine> {
  const { baseURL, model } = options;
  if (typeof baseURL !== 'string' || !/^https?:\/\/[^/]/.test(baseURL)) throw new ArgumentError(`baseURL must be an http(s) URL such as "http://127.0.0.1:8080/v1", got ${JSON.stringify(baseURL)}`);
  if (typeof model !== 'string' || model === '') throw new ArgumentError('model must be the name of a model the server serves (see its /v1/models)');
  const maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES;
  if (!(Number.isInteger(maxRetries) && maxRetries >= 0)) throw new ArgumentError(`maxRetries must be an integer >= 0, got ${maxRetries}`);
  const fetchFn = options.fetch ?? (typeof fetch === 'function' ? fetch.bind(globalThis) : undefined);
  if (!fetchFn) throw new ArgumentError('there is no global fetch here (Node 20+ and browsers have one): pass `fetch`');
  const client: HttpClient = { fetch: fetchFn, apiKey: options.apiKey, maxRetries };
  const base = baseURL.replace(/\/+$/, '');

  const scope = new RequestScope(options.signal);
  let cards: WireModel[];
  const call = scope.call('GET', `${base}/models`);
  try {
    const list = (await readJson(await send(client, call), call)) as { data?: unknown };
    if (!Array.isArray(list?.data)) throw new RemoteError(call.url, 200, 'the reply is not a model list ({object: "list", data: [...]})');
    cards = list.data.filter((m): m is WireModel => typeof m?.id === 'string');
  } finally {
    scope.end();
  }
  const card = cards.find((m) => m.id === model);
  if (!card) throw new RemoteError(call.url, 404, `the server does not serve the model "${model}"; it serves ${cards.map((m) => `"${m.id}"`).join(', ') || 'none'}`);
  const backend: Extract<EngineBackend, { kind: 'remote' }> = { kind: 'remote', baseURL: base, model, server: typeof card.owned_by === 'string' ? card.owned_by : 'unknown' };
  const maxContext = typeof card.max_model_len === 'number' && card.max_model_len > 0 ? card.max_model_len : 0;
  return new RemoteEngine(client, remoteInfo(card, backend, options.config), backend, maxContext);
}

/** What the finaliser of a dropped iterator ends (it holds no reference to the iterator). */
interface Holder {
  end?: () => void;
}

class RemoteEngine implements Engine {
  readonly chat: Engine['chat'];
  private readonly sessions = new RemoteSessions();
  private readonly scopes = new Set<RequestScope>();
  private unloaded = false;
  /** An iterator dropped without return(): its request is cancelled and its session freed when it is garbage-collected. */
  private readonly dropped = new FinalizationRegistry<Holder>((holder) => holder.end?.());

  constructor(
    private readonly client: HttpClient,
    readonly info: ModelInfo,
    private readonly backend: Extract<EngineBackend, { kind: 'remote' }>,
    private readonly maxContext: number,
  ) {
    const create = (async (request: ChatCompletionRequest) => (request?.stream ? this.reclaimed((h) => this.chatStream(h, request)) : this.chatWhole(request))) as Engine['chat']['completions']['create'];
    this.chat = { completions: { create } };
  }

  private get base(): string {
    return this.backend.baseURL;
  }

  generate(prompt: string | number[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk> {
    return this.reclaimed((holder) => this.generateStream(holder, prompt, options));
  }

  private async *generateStream(holder: Holder, prompt: string | number[], options: GenerateOptions): AsyncGenerator<GenerateChunk> {
    this.checkLoaded();
    if (typeof prompt !== 'string' && !Array.isArray(prompt)) throw new ArgumentError('the prompt must be a string or an array of token ids');
    const addBos = options.addBos ?? true;
    if (options.session && typeof prompt !== 'string' && this.backend.server !== 'webmoe') {
      throw new RemoteUnsupportedError('session of token ids', `${this.backend.server} does not return the token ids of its replies, so a remote session cannot hold them: continue a remote session with text, or use webmoe serve`);
    }
    const session = options.session ? this.sessions.take(options.session) : undefined;
    let sent: { prompt: string | number[]; addBos: boolean } | undefined;
    let scope: RequestScope | undefined;
    const transcript: Transcript = { text: '', ids: [] };
    let accepted = false;
    try {
      sent = session ? session.promptFor(prompt, addBos) : { prompt, addBos };
      const body = completionBody(sent.prompt, sent.addBos, options, this.backend.model);
      const active = (scope = this.begin(options.signal, session));
      holder.end = () => this.finish(active, session);
      const call = scope.call('POST', `${this.base}/completions`, body);
      const response = await send(this.client, call);
      accepted = true;
      yield* completionChunks(response, call, new RemoteTiming(), transcript);
    } finally {
      // As locally, a session keeps what the server ran (a stopped reply too), and nothing of a refused request.
      if (session && sent && accepted) session.keep(sent, transcript);
      holder.end = undefined;
      if (scope) this.finish(scope, session);
      else if (session) this.sessions.release(session);
    }
  }

  private async chatWhole(request: ChatCompletionRequest): Promise<ChatCompletion> {
    this.checkLoaded();
    const body = chatBody({ ...request, stream: false }, this.backend.model);
    const session = request.session ? this.sessions.take(request.session) : undefined;
    const scope = this.begin(request.signal, session);
    try {
      const call = scope.call('POST', `${this.base}/chat/completions`, body);
      const timing = new RemoteTiming();
      const response = await send(this.client, call);
      return wholeChat(await readJson(response, call), call, response.status, this.backend.model, timing);
    } finally {
      this.finish(scope, session);
    }
  }

  private async *chatStream(holder: Holder, request: ChatCompletionRequest): AsyncGenerator<ChatCompletionChunk> {
    this.checkLoaded();
    const body = chatBody(request, this.backend.model);
    const session = request.session ? this.sessions.take(request.session) : undefined;
    const scope = this.begin(request.signal, session);
    holder.end = () => this.finish(scope, session);
    try {
      const call = scope.call('POST', `${this.base}/chat/completions`, body);
      const timing = new RemoteTiming();
      yield* chatChunks(await send(this.client, call), call, this.backend.model, timing, () => {});
    } finally {
      holder.end = undefined;
      this.finish(scope, session);
    }
  }

  async tokenize(text: string, options: { addBos?: boolean } = {}): Promise<number[]> {
    if (typeof text !== 'string') throw new ArgumentError('tokenize takes a string');
    const reply = (await this.besideApi('/tokenize', { model: this.backend.model, prompt: text, add_special_tokens: options.addBos ?? true })) as { tokens?: unknown };
    if (!Array.isArray(reply?.tokens) || !reply.tokens.every(Number.isInteger)) throw new RemoteError(`${this.root}/tokenize`, 200, 'the reply has no tokens array');
    return reply.tokens as number[];
  }

  async detokenize(ids: number[]): Promise<string> {
    if (!Array.isArray(ids)) throw new ArgumentError('detokenize takes an array of token ids');
    const reply = (await this.besideApi('/detokenize', { model: this.backend.model, tokens: ids })) as { prompt?: unknown };
    if (typeof reply?.prompt !== 'string') throw new RemoteError(`${this.root}/detokenize`, 200, 'the reply has no prompt string');
    return reply.prompt;
  }

  async logits(_ids: number[], _options?: LogitsOptions): Promise<Float32Array[]> {
    throw new RemoteUnsupportedError('logits', `a remote engine cannot return logits: ${this.backend.server} at ${this.base} sends sampled text over OpenAI's API, not the model's logits (use a local engine)`);
  }

  async createSession(): Promise<Session> {
    this.checkLoaded();
    return this.sessions.create();
  }

  async closeSession(session: Session): Promise<void> {
    this.sessions.close(session);
  }

  async stats(): Promise<EngineStats> {
    return {
      sessions: this.sessions.size,
      cacheBytes: 0,
      cacheBytesPerToken: 0,
      cachedTokens: 0,
      weightBytes: 0,
      gpuBytes: 0,
      gpuBuffers: 0,
      limits: { maxContext: this.maxContext, cacheBudgetBytes: 0 },
      adapter: `remote: ${this.backend.server} at ${this.base}`,
      speculation: null,
      remote: { baseURL: this.base, model: this.backend.model, requestsInFlight: this.scopes.size },
    };
  }

  async unload(): Promise<void> {
    if (this.unloaded) return;
    this.unloaded = true;
    for (const scope of this.scopes) scope.abort(new AbortError('The engine was unloaded during the request.'));
    this.sessions.clear();
  }

  /** webmoe serve's and vLLM's /tokenize and /detokenize sit beside /v1, at the server's root. */
  private get root(): string {
    return this.base.replace(/\/v1$/, '');
  }

  private async besideApi(path: string, body: unknown): Promise<unknown> {
    this.checkLoaded();
    const scope = this.begin(undefined);
    const call = scope.call('POST', `${this.root}${path}`, body);
    try {
      return await readJson(await send(this.client, call), call);
    } catch (err) {
      if (err instanceof RemoteError && (err.status === 404 || err.status === 405)) {
        throw new RemoteUnsupportedError(path.slice(1), `${this.backend.server} at ${this.root} has no ${path} endpoint (webmoe serve and vLLM have one)`);
      }
      throw err;
    } finally {
      this.finish(scope);
    }
  }

  private reclaimed<T>(make: (holder: Holder) => AsyncGenerator<T>): AsyncGenerator<T> {
    const holder: Holder = {};
    const it = make(holder);
    this.dropped.register(it, holder);
    return it;
  }

  private begin(signal: AbortSignal | undefined, session?: RemoteSession): RequestScope {
    const scope = new RequestScope(signal);
    this.scopes.add(scope);
    if (session) session.abort = () => scope.abort(new AbortError(`Session ${session.id} was closed during the request.`));
    return scope;
  }

  /** Ends a request once: its response cancelled if still open, its session free again. */
  private finish(scope: RequestScope, session?: RemoteSession): void {
    if (!this.scopes.delete(scope)) return;
    scope.end();
    if (session) this.sessions.release(session);
  }

  private checkLoaded(): void {
    if (this.unloaded) throw new WebmoeError('BAD_ARGUMENT', 'this engine was unloaded; create a new one');
  }
}
