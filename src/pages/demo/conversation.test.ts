import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadChatTemplate } from '../../text/chat_template.ts';
import type { Engine, Session } from '../../runtime/types.ts';
import { Conversation } from './conversation.ts';

// The turn texts the demo sends to its session, with the shipped checkpoint's DeepSeek-V3 template.
const template = loadChatTemplate({ tokenizerConfigJson: readFileSync(new URL('../../../public/models/webmoe-kjv-12m/tokenizer_config.json', import.meta.url), 'utf8') });
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

/** An engine that only hands out and closes sessions, recording both. */
function fakeEngine() {
  const log = { created: 0, closed: [] as number[] };
  const engine = {
    createSession: async (): Promise<Session> => ({ id: ++log.created }),
    closeSession: async (s: Session) => void log.closed.push(s.id),
  } as unknown as Engine;
  return { engine, log };
}

describe('Conversation', () => {
  it('sends the whole template on the first turn, then only the new user turn', async () => {
    const { engine, log } = fakeEngine();
    const chat = new Conversation(engine, template);
    const first = await chat.begin('In the beginning');
    expect(first).toEqual({ prompt: `${BOS}<｜User｜>In the beginning<｜Assistant｜>`, session: { id: 1 }, addBos: false });
    chat.end('In the beginning', 'God created', 'stop', 3);
    // Stopped on EOS: the session holds it, so the next text starts with the user's marker.
    const second = await chat.begin('And the earth');
    expect(second).toEqual({ prompt: '<｜User｜>And the earth<｜Assistant｜>', session: { id: 1 }, addBos: false });
    expect(log).toEqual({ created: 1, closed: [] });
  });

  it('closes an answer that ran out of tokens or was stopped before the next turn', async () => {
    const { engine } = fakeEngine();
    const chat = new Conversation(engine, template);
    await chat.begin('a');
    chat.end('a', 'partial', 'length', 12);
    expect((await chat.begin('b')).prompt).toBe(`${EOS}<｜User｜>b<｜Assistant｜>`);
    chat.end('b', 'cut', 'abort', 2);
    expect((await chat.begin('c')).prompt).toBe(`${EOS}<｜User｜>c<｜Assistant｜>`);
  });

  it('starts a fresh session with the whole conversation after a failure or a stop during the prefill', async () => {
    const { engine, log } = fakeEngine();
    const chat = new Conversation(engine, template);
    await chat.begin('a');
    chat.end('a', 'x', 'stop', 1);
    await chat.begin('b');
    chat.end('b', '', 'failed', 0); // forgotten: the next render leaves it out
    const retry = await chat.begin('c');
    expect(retry).toEqual({ prompt: `${BOS}<｜User｜>a<｜Assistant｜>x${EOS}<｜User｜>c<｜Assistant｜>`, session: { id: 2 }, addBos: false });
    chat.end('c', '', 'abort', 0);
    const after = await chat.begin('d');
    expect(after.session).toEqual({ id: 3 });
    expect(after.prompt).toBe(`${BOS}<｜User｜>a<｜Assistant｜>x${EOS}<｜User｜>c<｜Assistant｜>${EOS}<｜User｜>d<｜Assistant｜>`);
    expect(log.closed).toEqual([1, 2]);
  });

  it('continues plain text without a template, and reset frees the session', async () => {
    const { engine, log } = fakeEngine();
    const chat = new Conversation(engine, undefined);
    expect(await chat.begin('Psalm 23')).toEqual({ prompt: 'Psalm 23', session: { id: 1 }, addBos: true });
    chat.end('Psalm 23', ' The LORD is my shepherd', 'length', 5);
    expect((await chat.begin('I shall not want')).prompt).toBe('\nI shall not want');
    await chat.reset();
    expect(log.closed).toEqual([1]);
    expect(await chat.begin('again')).toEqual({ prompt: 'again', session: { id: 2 }, addBos: true });
  });
});
