// CORS for browser apps on other origins. Any origin may call: access is the API key's to grant
// (a header, never a cookie), as vLLM's default --allowed-origins '*'. A preflight asks for the
// headers the page will send (the openai package sends its own x-stainless-* ones): they are allowed.

import type { IncomingMessage, ServerResponse } from 'node:http';

export const ALLOWED_METHODS = 'GET, POST, OPTIONS';

/** The CORS headers of every response. */
export function setCorsHeaders(res: ServerResponse): void {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Expose-Headers', 'Retry-After');
}

/** Answers a preflight (OPTIONS): 204 with the methods and the headers asked for. */
export function answerPreflight(req: IncomingMessage, res: ServerResponse): void {
  const asked = req.headers['access-control-request-headers'];
  res.writeHead(204, {
    'Access-Control-Allow-Methods': ALLOWED_METHODS,
    'Access-Control-Allow-Headers': typeof asked === 'string' && asked.length <= 4096 ? asked : 'Authorization, Content-Type',
    'Access-Control-Max-Age': '600',
    'Content-Length': '0',
  });
  res.end();
}
