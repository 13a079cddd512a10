// --api-key: every request but a CORS preflight (which browsers send without credentials) must
// carry `Authorization: Bearer <key>`, as OpenAI's clients send it. Compared in constant time.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { HttpError } from './http_error.ts';

const digest = (text: string) => createHash('sha256').update(text).digest();

/** A check of requests against `apiKey`; none when the server has no key. */
export function apiKeyCheck(apiKey: string | undefined): (req: IncomingMessage) => void {
  if (apiKey === undefined) return () => {};
  const expected = digest(apiKey);
  return (req) => {
    const header = req.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    if (!match) throw new HttpError(401, 'invalid_api_key', 'this server needs an API key: send the header "Authorization: Bearer <key>"');
    if (!timingSafeEqual(digest(match[1]), expected)) throw new HttpError(401, 'invalid_api_key', 'the API key is not the one this server was started with');
  };
}
