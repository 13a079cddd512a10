// What a route handler gets, and the small answers every route gives.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Engine } from '../runtime/types.ts';
import type { JsonObject } from './body.ts';
import { HttpError } from './http_error.ts';
import { modelField } from './fields.ts';

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** The JSON body of a POST ({} for a GET). */
  body: JsonObject;
  /** Aborts when the client disconnects or the server closes. */
  signal: AbortSignal;
  engine: Engine;
  /** The name clients give as `model`. */
  modelId: string;
  /** The path's tail after a route that takes one (GET /v1/models/{id}). */
  tail?: string;
  /** A route that generates calls this once its request is checked: it waits for a --max-concurrent slot (429 when too many wait). */
  admit: () => Promise<void>;
}

export type Route = (ctx: RouteContext) => Promise<void>;

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

export function sendError(res: ServerResponse, error: HttpError): void {
  const headers: Record<string, string> = {};
  if (error.retryAfterS !== undefined) headers['Retry-After'] = String(error.retryAfterS);
  if (error.status === 405) headers.Allow = 'GET, POST, OPTIONS';
  // The rest of a body over the limit is not read: the connection ends with this answer.
  if (error.status === 413) headers.Connection = 'close';
  sendJson(res, error.status, error.body(), headers);
}

/** The body's model must be the served one (or absent, as vLLM allows): 404 otherwise, as OpenAI answers. */
export function checkModel(body: JsonObject, modelId: string): void {
  const model = modelField(body);
  if (model !== undefined && model !== modelId) throw modelNotFound(model, modelId);
}

export function modelNotFound(model: string, modelId: string): HttpError {
  return new HttpError(404, 'model_not_found', `The model \`${model}\` does not exist: this server serves \`${modelId}\``, { param: 'model' });
}

/** `chatcmpl-…` / `cmpl-…`: unique per response, as OpenAI's ids. */
export function responseId(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().replaceAll('-', '')}`;
}
