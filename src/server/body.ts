// A request body, bounded: over the limit it is refused (413) as soon as Content-Length says so or
// the bytes read pass it, without buffering the rest. Then strict UTF-8 and JSON, which must be an
// object (400 otherwise).

import type { IncomingMessage } from 'node:http';
import { HttpError } from './http_error.ts';

export const DEFAULT_MAX_BODY_BYTES = 4 * 2 ** 20;

export type JsonObject = Record<string, unknown>;

export async function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<JsonObject> {
  const tooLarge = () => new HttpError(413, 'request_too_large', `the request body is over this server's limit of ${maxBytes} bytes`);
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > maxBytes) throw tooLarge();
    chunks.push(chunk);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new HttpError(400, 'invalid_json', 'the request body is not valid UTF-8');
  }
  if (text.trim() === '') throw new HttpError(400, 'invalid_json', 'the request body is empty: send a JSON object');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, 'invalid_json', `the request body is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, 'invalid_json', 'the request body must be a JSON object');
  return value as JsonObject;
}
