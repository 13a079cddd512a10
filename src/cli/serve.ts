// webmoe serve <model> [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--max-concurrent N] [--served-model-name NAME] [engine flags]
// An OpenAI-compatible HTTP server on the engine (src/server). It listens on loopback unless told
// otherwise, and refuses another host without an API key (the key may come from WEBMOE_API_KEY,
// which keeps it out of `ps`). Ctrl-C or SIGTERM closes the server (requests in flight end with a
// 503 or an error event), unloads the engine and exits with status 130 or 143.

import { basename } from 'node:path';
import { AbortError } from '../errors.ts';
import type { Engine } from '../runtime/types.ts';
import { DEFAULT_HOST, DEFAULT_MAX_CONCURRENT, DEFAULT_PORT, startServer, type WebmoeServer } from '../server/server.ts';
import { parse, UsageError } from './args.ts';
import { ENGINE_FLAGS, engineFlags, intFlag, loadEngine, type EngineFlags } from './engine_args.ts';
import { escapeControls } from './escape.ts';
import { abortOnStop } from './stop.ts';

const FLAGS = {
  host: { type: 'string' },
  port: { type: 'string' },
  'api-key': { type: 'string' },
  'max-concurrent': { type: 'string' },
  'served-model-name': { type: 'string' },
  ...ENGINE_FLAGS,
} as const;

export interface ServeRequest {
  model: string;
  host: string;
  port: number;
  apiKey: string | undefined;
  maxConcurrent: number;
  /** The name clients give as `model`: --served-model-name, else the checkpoint folder's name. */
  modelId: string;
  engine: EngineFlags;
}

/** Hosts that only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The command line -> a request, or a UsageError; nothing is loaded yet. */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ServeRequest {
  const { values, positionals } = parse(argv, FLAGS, ['model']);
  const host = values.host ?? DEFAULT_HOST;
  if (host.trim() === '') throw new UsageError('--host must not be empty');
  const apiKey = values['api-key'] ?? (env.WEBMOE_API_KEY || undefined);
  if (apiKey !== undefined && apiKey.length === 0) throw new UsageError('--api-key must not be empty');
  if (!isLoopback(host) && apiKey === undefined) {
    throw new UsageError(`--host ${host} is reachable from other machines: give --api-key KEY (or set WEBMOE_API_KEY) so that only your clients can use the model, or serve on 127.0.0.1`);
  }
  const model = positionals[0];
  const modelId = values['served-model-name'] ?? basename(model.replace(/[/\\]+$/, ''));
  if (modelId.trim() === '') throw new UsageError('--served-model-name must not be empty');
  return {
    model,
    host,
    port: intFlag(values, 'port', 0, 65535) ?? DEFAULT_PORT,
    apiKey,
    maxConcurrent: intFlag(values, 'max-concurrent', 1) ?? DEFAULT_MAX_CONCURRENT,
    modelId,
    engine: engineFlags(values),
  };
}

export async function serveCommand(argv: string[]): Promise<number> {
  const request = parseServeArgs(argv);
  const controller = new AbortController();
  const { signal } = controller;
  const stops = abortOnStop(controller);
  let engine: Engine | undefined;
  let server: WebmoeServer | undefined;
  try {
    engine = await loadEngine(request.model, { ...request.engine, signal });
    server = await startServer({ engine, modelId: request.modelId, host: request.host, port: request.port, apiKey: request.apiKey, maxConcurrent: request.maxConcurrent });
    process.stdout.write(`serving ${escapeControls(request.modelId)} at ${server.baseURL} (OpenAI API; Ctrl-C stops)\n`);
    if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  } catch (err) {
    if (!(err instanceof AbortError && signal.aborted)) throw err;
  } finally {
    await server?.close();
    stops.restore();
    await engine?.unload();
  }
  return stops.status();
}
