// A remote engine's sessions, kept on this side: an OpenAI server holds no conversation between
// requests (vLLM and SGLang reuse a shared prefix from their own prefix caches). A chat request
// sends the whole conversation anyway; a generate() on a session sends what the session holds
// followed by the new prompt, and the session then holds the prompt and the reply. Text is held as
// text; token ids as ids, which needs a server that returns the ids of its reply (webmoe serve).

import { ArgumentError } from '../errors.ts';
import type { Session } from '../runtime/types.ts';

export type Held = { kind: 'text'; text: string; addBos: boolean } | { kind: 'ids'; ids: number[] };

export class RemoteSession {
  busy = false;
  /** Set by closeSession during a request: the request aborts, and the session goes when it ends. */
  closing = false;
  held: Held | undefined;
  /** Aborts the request running on it. */
  abort: (() => void) | undefined;

  constructor(readonly id: number) {}

  /** The prompt to send for `prompt` on this session: what it holds, then the prompt. */
  promptFor(prompt: string | number[], addBos: boolean): { prompt: string | number[]; addBos: boolean } {
    const held = this.held;
    if (!held) return { prompt, addBos };
    if (held.kind === 'text') {
      if (typeof prompt !== 'string') throw new ArgumentError(`session ${this.id} holds text: continue it with a text prompt (a remote session cannot mix text and token ids)`);
      // BOS as the first request had it: the whole text is sent again.
      return { prompt: held.text + prompt, addBos: held.addBos };
    }
    if (typeof prompt === 'string') throw new ArgumentError(`session ${this.id} holds token ids: continue it with token ids (a remote session cannot mix text and token ids)`);
    return { prompt: [...held.ids, ...prompt], addBos };
  }

  /**
   * After a request (finished or aborted): the session holds its prompt and what came back. A
   * reply of ids needs their ids (the engine only sends ids prompts on sessions to servers that
   * return them); without, the session is left as it was.
   */
  keep(sent: { prompt: string | number[]; addBos: boolean }, reply: { text: string; ids: number[] | undefined }): void {
    if (typeof sent.prompt === 'string') this.held = { kind: 'text', text: sent.prompt + reply.text, addBos: sent.addBos };
    else if (reply.ids !== undefined) this.held = { kind: 'ids', ids: [...sent.prompt, ...reply.ids] };
  }
}

export class RemoteSessions {
  private readonly open = new Map<number, RemoteSession>();
  private next = 1;

  create(): Session {
    const s = new RemoteSession(this.next++);
    this.open.set(s.id, s);
    return { id: s.id };
  }

  get size(): number {
    return this.open.size;
  }

  get all(): Iterable<RemoteSession> {
    return this.open.values();
  }

  /** The session of a handle, free for a request (ArgumentError as the local engine's otherwise). */
  take(handle: Session): RemoteSession {
    const s = this.open.get(handle?.id);
    if (!s) throw new ArgumentError(`session ${handle?.id} does not exist (closed, or from another engine)`);
    if (s.busy) throw new ArgumentError(`session ${s.id} is already generating; wait for that request to finish`);
    s.busy = true;
    return s;
  }

  /** A request on `s` ended. */
  release(s: RemoteSession): void {
    s.busy = false;
    s.abort = undefined;
    if (s.closing) this.open.delete(s.id);
  }

  close(handle: Session): void {
    const s = this.open.get(handle?.id);
    if (!s) return;
    if (s.busy) {
      s.closing = true;
      s.abort?.();
    } else this.open.delete(s.id);
  }

  clear(): void {
    for (const s of this.open.values()) s.abort?.();
    this.open.clear();
  }
}
