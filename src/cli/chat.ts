// webmoe chat <model> [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--max-context N]
// A conversation in the terminal. One engine session lives for the whole chat, so each turn
// prefills only its new tokens; every turn sends the conversation so far to chat.completions and
// streams the reply. /exit or end of input (Ctrl-D) ends it. Ctrl-C during a reply stops that reply
// (what was said stays in the conversation); Ctrl-C at the prompt leaves with status 130. SIGTERM
// ends the chat whatever it is doing (status 143), and so does a closed stdout (quietly, status 0).
// Works with piped input too: each line is a user turn, each reply is printed on its own line.

import { createInterface, type Interface } from 'node:readline';
import { AbortError, TokenizerError } from '../errors.ts';
import type { ChatMessage } from '../text/chat_template.ts';
import type { Engine, Session } from '../runtime/types.ts';
import { parse } from './args.ts';
import { ENGINE_FLAGS, engineFlags, loadEngine, SAMPLING_FLAGS, samplingFlags } from './engine_args.ts';
import { escapeControls } from './escape.ts';
import { exitNow, INTERRUPTED, onStop, STOP_STATUS, type StopReason } from './stop.ts';

const FLAGS = { ...SAMPLING_FLAGS, ...ENGINE_FLAGS } as const;

const EXIT = '/exit';

type Sampling = { max_tokens?: number; temperature?: number; top_p?: number; seed?: number };

export async function chatCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, FLAGS, ['model']);
  const { maxTokens, temperature, topP, seed } = samplingFlags(values);
  const sampling: Sampling = { max_tokens: maxTokens, temperature, top_p: topP, seed };
  const flags = engineFlags(values);
  const input = process.stdin;
  // A person at a terminal gets a prompt and line editing; piped input gets neither.
  const interactive = input.isTTY === true;

  // What Ctrl-C stops depends on when it comes: the load, a reply, or the prompt (the whole chat).
  const loading = new AbortController();
  let reply: AbortController | undefined;
  let lines: Interface | undefined;
  /** Why the whole chat ends early, if it does. */
  let ended: StopReason | undefined;
  const end = (reason: StopReason) => {
    if (ended) {
      if (reason !== 'stdout-closed') exitNow(reason);
      return;
    }
    ended = reason;
    loading.abort();
    reply?.abort();
    lines?.close();
  };
  const interrupt = () => {
    const work = reply ?? (lines ? undefined : loading);
    if (!work) return end('SIGINT');
    if (work.signal.aborted) exitNow('SIGINT');
    work.abort();
  };
  const restoreStops = onStop((reason) => (reason === 'SIGINT' ? interrupt() : end(reason)));
  // An aborted load or setup: Ctrl-C's status unless something ended the whole chat.
  const stoppedStatus = () => (ended ? STOP_STATUS[ended] : INTERRUPTED);

  let engine: Engine | undefined;
  let session: Session | undefined;
  try {
    try {
      engine = await loadEngine(positionals[0], { ...flags, signal: loading.signal });
    } catch (err) {
      if (err instanceof AbortError && loading.signal.aborted) return stoppedStatus();
      throw err;
    }
    await checkTokenizer(engine);
    session = await engine.createSession();
    if (loading.signal.aborted) return stoppedStatus();

    lines = createInterface({ input, output: interactive ? process.stdout : undefined, terminal: interactive, prompt: '> ' });
    // In a terminal readline reads Ctrl-C as a key (raw mode) and reports it here, not as a signal.
    lines.on('SIGINT', interrupt);
    if (interactive) {
      process.stdout.write(`chatting with ${escapeControls(engine.info.name)}: ${EXIT} or Ctrl-D to leave, Ctrl-C stops a reply\n`);
      lines.prompt();
    }
    const messages: ChatMessage[] = [];
    for await (const line of lines) {
      if (ended || line.trim() === EXIT) break;
      if (line.trim() !== '') {
        messages.push({ role: 'user', content: line });
        reply = new AbortController();
        try {
          messages.push({ role: 'assistant', content: await streamReply(engine, session, messages, sampling, reply.signal) });
        } finally {
          reply = undefined;
        }
      }
      if (ended) break;
      if (interactive) lines.prompt();
    }
    if (interactive && ended !== 'stdout-closed') process.stdout.write('\n'); // the shell's prompt starts on its own line
    return ended ? STOP_STATUS[ended] : 0;
  } finally {
    lines?.close();
    restoreStops();
    if (session) await engine?.closeSession(session);
    await engine?.unload();
  }
}

/**
 * Streams one reply to stdout and returns its text. After an abort the text so far is the reply:
 * it stays in the conversation, as in chat apps that let you stop a reply.
 */
async function streamReply(engine: Engine, session: Session, messages: ChatMessage[], sampling: Sampling, signal: AbortSignal): Promise<string> {
  let content = '';
  try {
    // A copy: the conversation grows after this call, the request is this turn's.
    const stream = await engine.chat.completions.create({ messages: [...messages], session, stream: true, signal, ...sampling });
    for await (const chunk of stream) {
      const piece = chunk.choices[0].delta.content;
      if (piece) {
        process.stdout.write(piece);
        content += piece;
      }
    }
  } catch (err) {
    if (!(err instanceof AbortError && signal.aborted)) throw err;
  }
  process.stdout.write('\n');
  return content;
}

/** Chat is text in, text out: say so before the first prompt rather than after the first line typed. */
async function checkTokenizer(engine: Engine): Promise<void> {
  try {
    await engine.tokenize('');
  } catch (err) {
    if (!(err instanceof TokenizerError)) throw err;
    throw new TokenizerError(`${engine.info.name} has no tokenizer.json, and chat needs one (webmoe generate --ids runs a checkpoint on token ids)`, { cause: err });
  }
}
