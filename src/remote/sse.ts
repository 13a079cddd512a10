// Server-sent events from a streamed reply, as the values of their `data:` lines parsed as JSON,
// until `data: [DONE]` or the end of the body. Per the SSE format: lines end in \n, \r\n or \r, a
// blank line ends an event, several data lines join with \n, lines starting with ':' are comments.
// An event over MAX_EVENT_BYTES, or data that is not JSON, is a RemoteError (a broken server, not
// a broken network); a read that fails is a FetchError. Leaving early cancels the body, which
// closes the connection: the server sees its client go and stops generating.

import { RemoteError } from '../errors.ts';
import { readFailure, type Call } from './http.ts';

export const MAX_EVENT_BYTES = 1 << 20;

/** A parsed event; `event` is the SSE event name when the server gave one (OpenAI sends none; 'error' is an error). */
export interface ServerEvent {
  event: string | undefined;
  data: unknown;
}

export async function* serverEvents(response: Response, call: Call): AsyncGenerator<ServerEvent> {
  if (!response.body) throw new RemoteError(call.url, response.status, 'the reply has no body to stream');
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let data: string[] = [];
  let event: string | undefined;
  let finished = false;
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<string>;
      try {
        chunk = await reader.read();
      } catch (err) {
        throw readFailure(err, call);
      }
      if (chunk.done) {
        finished = true;
        return; // an event without its blank line is dropped, as the SSE format says
      }
      buffer += chunk.value;
      for (;;) {
        const end = lineEnd(buffer);
        if (end === undefined) break;
        const line = buffer.slice(0, end.at);
        buffer = buffer.slice(end.at + end.length);
        if (line === '') {
          if (data.length > 0) {
            const text = data.join('\n');
            data = [];
            const name = event;
            event = undefined;
            if (text === '[DONE]') {
              finished = true;
              return;
            }
            yield { event: name, data: parseData(text, response, call) };
          }
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') data.push(value);
        else if (field === 'event') event = value;
      }
      if (buffer.length + data.reduce((n, d) => n + d.length, 0) > MAX_EVENT_BYTES) {
        throw new RemoteError(call.url, response.status, `a server-sent event is over ${MAX_EVENT_BYTES} bytes: the server is not sending OpenAI's stream`);
      }
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
  }
}

/** Where the first line of `text` ends, if it does. A lone \r at the very end may be half of \r\n: wait for more. */
function lineEnd(text: string): { at: number; length: number } | undefined {
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') return { at: i, length: 1 };
    if (c === '\r') {
      if (i + 1 === text.length) return undefined;
      return { at: i, length: text[i + 1] === '\n' ? 2 : 1 };
    }
  }
  return undefined;
}

function parseData(text: string, response: Response, call: Call): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new RemoteError(call.url, response.status, `malformed server-sent event (not JSON): ${JSON.stringify(text.slice(0, 120))}`);
  }
}
