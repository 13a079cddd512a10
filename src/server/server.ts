// `webmoe serve`'s HTTP server: OpenAI's API over one Engine, on Node's own http module. Every
// request passes the same gates in order: CORS, the route and its method, the API key, the body
// (bounded, JSON), and for the routes that generate, --max-concurrent. Requests share the GPU
// through the engine's scheduler. A client that disconnects aborts its request; close() aborts
// them all and waits for each to end. Failures are OpenAI's error body (http_error.ts).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AbortError, ArgumentError } from '../errors.ts';
import type { Engine } from '../runtime/types.ts';
import { apiKeyCheck } from './auth.ts';
import { DEFAULT_MAX_BODY_BYTES, readJsonBody } from './body.ts';
import { chatCompletions } from './chat_route.ts';
import { completions } from './completions_route.ts';
import { Admission } from './admission.ts';
import { answerPreflight, setCorsHeaders } from './cors.ts';
import { HttpError, httpErrorOf } from './http_error.ts';
import { listModels, retrieveModel } from './models_route.ts';
import { sendError, sendJson, type Route } from './route.ts';
import { EventStream } from './sse.ts';
import { detokenize, tokenize } from './tokenize_route.ts';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 8080;
export const DEFAULT_MAX_CONCURRENT = 16;
/** Generation requests that may wait for a slot; past that, 429. */
export const DEFAULT_MAX_WAITING = 64;

export interface ServerOptions {
  engine: Engine;
  /** The name clients give as `model` and GET /v1/models lists. */
  modelId: string;
  /** Default 127.0.0.1 (loopback). The CLI refuses another host without an API key. */
  host?: string;
  /** Default 8080; 0 takes a free port (see WebmoeServer.port). */
  port?: number;
  /** When given, every request must send `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Generation requests in flight at once; past it a request waits for a slot. Default 16. */
  maxConcurrent?: number;
  /** Requests that may wait for a slot; past it a request is answered 429 with Retry-After. Default 64. */
  maxWaiting?: number;
  /** Largest request body; default 4 MiB. */
  maxBodyBytes?: number;
  /** Where faults of the server itself are reported (default: stderr). */
  log?: (line: string) => void;
}

export interface WebmoeServer {
  /** http://host:port */
  readonly url: string;
  /** The OpenAI clients' base URL: url + /v1. */
  readonly baseURL: string;
  readonly port: number;
  /** Requests being answered now (every route). */
  readonly requestsInFlight: number;
  /** Resolves once no request is in flight (a disconnected one ends at the engine's next step). */
  idle(): Promise<void>;
  /** Stops taking connections, aborts the requests in flight (their clients get a 503 or an error event) and waits for them. Safe to call twice. */
  close(): Promise<void>;
}

interface RouteEntry {
  method: 'GET' | 'POST';
  route: Route;
}

const ROUTES: Record<string, RouteEntry> = {
  '/v1/models': { method: 'GET', route: listModels },
  '/v1/chat/completions': { method: 'POST', route: chatCompletions },
  '/v1/completions': { method: 'POST', route: completions },
  '/tokenize': { method: 'POST', route: tokenize },
  '/detokenize': { method: 'POST', route: detokenize },
  '/health': { method: 'GET', route: async ({ res }) => void res.writeHead(200, { 'Content-Length': '0' }).end() },
};
const MODEL_PREFIX = '/v1/models/';

/** The route of a path, and the tail of /v1/models/{id}. */
function findRoute(path: string): { entry: RouteEntry; tail?: string } | undefined {
  const entry = ROUTES[path];
  if (entry) return { entry };
  if (path.startsWith(MODEL_PREFIX) && path.length > MODEL_PREFIX.length) return { entry: { method: 'GET', route: retrieveModel }, tail: path.slice(MODEL_PREFIX.length) };
  return undefined;
}

export async function startServer(options: ServerOptions): Promise<WebmoeServer> {
  const { engine, modelId } = options;
  const host = options.host ?? DEFAULT_HOST;
  const port = options.port ?? DEFAULT_PORT;
  const maxConcurrent = options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
  const maxWaiting = options.maxWaiting ?? DEFAULT_MAX_WAITING;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const log = options.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) throw new ArgumentError(`port must be an integer in [0, 65535], got ${port}`);
  if (!(Number.isInteger(maxConcurrent) && maxConcurrent >= 1)) throw new ArgumentError(`maxConcurrent must be an integer >= 1, got ${maxConcurrent}`);
  if (!(Number.isInteger(maxWaiting) && maxWaiting >= 0)) throw new ArgumentError(`maxWaiting must be an integer >= 0, got ${maxWaiting}`);
  if (!(Number.isInteger(maxBodyBytes) && maxBodyBytes >= 1)) throw new ArgumentError(`maxBodyBytes must be an integer >= 1, got ${maxBodyBytes}`);
  if (options.apiKey !== undefined && options.apiKey.length === 0) throw new ArgumentError('apiKey must not be empty');
  const checkKey = apiKeyCheck(options.apiKey);

  const active = new Set<Promise<void>>();
  const controllers = new Set<AbortController>();
  const admission = new Admission(maxConcurrent, maxWaiting);
  let closing = false;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    setCorsHeaders(res);
    const controller = new AbortController();
    controllers.add(controller);
    let clientGone = false;
    res.on('close', () => {
      if (res.writableFinished) return;
      clientGone = true;
      controller.abort();
    });
    let release: (() => void) | undefined;
    try {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method === 'OPTIONS') return answerPreflight(req, res);
      const found = findRoute(path);
      if (!found) throw new HttpError(404, 'unknown_url', `no route ${req.method} ${path}: this server answers GET /v1/models, POST /v1/chat/completions and POST /v1/completions`);
      const { entry, tail } = found;
      if (req.method !== entry.method) throw new HttpError(405, 'method_not_allowed', `${path} takes ${entry.method}, not ${req.method}`);
      checkKey(req);
      if (closing) throw new HttpError(503, 'shutting_down', 'the server is shutting down');
      const body = entry.method === 'POST' ? await readJsonBody(req, maxBodyBytes) : {};
      const admit = async () => {
        release = await admission.enter(controller.signal);
      };
      await entry.route({ req, res, body, signal: controller.signal, engine, modelId, tail, admit });
    } catch (err) {
      if (clientGone) return; // nobody is left to answer
      const stopped = closing && err instanceof AbortError;
      const { error, internal } = httpErrorOf(stopped ? new HttpError(503, 'shutting_down', 'the server is shutting down: the request was stopped') : err);
      if (internal) log(`webmoe serve: internal error on ${req.method} ${req.url}: ${(err as Error)?.stack ?? String(err)}`);
      if (res.headersSent) new EventStream(res).fail(error.body());
      else sendError(res, error);
    } finally {
      release?.();
      controllers.delete(controller);
    }
  }

  const server: Server = createServer({ requestTimeout: 60_000 }, (req, res) => {
    const work = handle(req, res).catch((err: unknown) => {
      log(`webmoe serve: ${String(err)}`);
      res.destroy();
    });
    active.add(work);
    void work.finally(() => active.delete(work));
  });

  await new Promise<void>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => reject(listenError(err, host, port));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
  server.on('error', (err) => log(`webmoe serve: ${err.message}`));
  const bound = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;

  const idle = async () => {
    while (active.size > 0) await Promise.allSettled([...active]);
  };
  let closed: Promise<void> | undefined;
  return {
    url,
    baseURL: `${url}/v1`,
    port: bound,
    get requestsInFlight() {
      return active.size;
    },
    idle,
    close() {
      closed ??= (async () => {
        closing = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        for (const c of controllers) c.abort();
        await idle();
        server.closeAllConnections();
        await stopped;
      })();
      return closed;
    },
  };
}

function listenError(err: NodeJS.ErrnoException, host: string, port: number): Error {
  const where = `${host}:${port}`;
  if (err.code === 'EADDRINUSE') return new ArgumentError(`cannot listen on ${where}: the port is in use; choose another with --port`);
  if (err.code === 'EACCES') return new ArgumentError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges); choose another with --port`);
  if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') return new ArgumentError(`cannot listen on ${where}: no such address on this machine; check --host`);
  return new ArgumentError(`cannot listen on ${where}: ${err.message}`);
}
