// webmoe chat on the official fixture with a tokenizer beside it: piped lines as turns (in-process
// with one engine for the file, and once as a real process with real stdin), one session kept
// across turns, /exit, Ctrl-C during a reply and at the prompt, and a checkpoint with no tokenizer.

import { PassThrough, Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { officialFixture } from '../testing/fixtures.ts';
import { errorLines, fixtureWithTokenizer, runCli, sharedEngines, spawnCli } from './testing.ts';

vi.mock('../node.ts', async (importOriginal) => (await import('./testing.ts')).withSharedEngines(await importOriginal<typeof import('../node.ts')>()));

const SAMPLING = ['--max-tokens', '5', '--temperature', '0'];
const lines = (...text: string[]) => Readable.from(text.map((t) => `${t}\n`));

let model: string;
beforeAll(() => {
  model = fixtureWithTokenizer();
});
afterAll(() => sharedEngines.release());
afterEach(async () => {
  expect(sharedEngines.unloads).toBe(sharedEngines.loads);
  expect(await sharedEngines.openSessions()).toBe(0);
  expect(process.listenerCount('SIGINT')).toBe(0);
  expect(process.listenerCount('SIGTERM')).toBe(0);
  sharedEngines.chatRequests.length = 0;
});

describe('webmoe chat', () => {
  // The greedy transcript of the first test, for the child process to reproduce.
  let transcript = '';
  let firstReply = '';

  it('takes piped lines as turns: one session, the conversation so far in each request, each reply on its line', async () => {
    const r = await runCli(['chat', model, ...SAMPLING], { stdin: lines('hello', 'how are you') });
    expect(r.code).toBe(0);
    expect(errorLines(r.err)).toEqual([]);
    const [first, second] = sharedEngines.chatRequests;
    expect(sharedEngines.chatRequests).toHaveLength(2);
    expect(first).toMatchObject({ stream: true, max_tokens: 5, temperature: 0, messages: [{ role: 'user', content: 'hello' }] });
    expect(first.session).toBeDefined();
    expect(second.session).toBe(first.session);
    firstReply = second.messages[1].content;
    expect(second.messages).toEqual([
      { role: 'user', content: 'hello' },
      { role: 'assistant', content: firstReply },
      { role: 'user', content: 'how are you' },
    ]);
    expect(r.out.startsWith(`${firstReply}\n`)).toBe(true);
    expect(r.out.endsWith('\n')).toBe(true);
    transcript = r.out;
  });

  it('ends at /exit and skips blank lines', async () => {
    const r = await runCli(['chat', model, ...SAMPLING], { stdin: lines('hello', '', '  ', '/exit', 'never sent') });
    expect(r.code).toBe(0);
    expect(sharedEngines.chatRequests).toHaveLength(1);
    expect(r.out).toBe(`${firstReply}\n`);
  });

  it('Ctrl-C during a reply stops that reply, keeps what was said, and the chat goes on', async () => {
    let interrupted = false;
    const r = await runCli(['chat', model, ...SAMPLING], {
      stdin: lines('hello', 'go on'),
      onStdout: () => {
        if (!interrupted) process.emit('SIGINT');
        interrupted = true;
      },
    });
    expect(r.code).toBe(0);
    const [, second] = sharedEngines.chatRequests;
    expect(sharedEngines.chatRequests).toHaveLength(2);
    const stopped = second.messages[1].content;
    expect(firstReply.startsWith(stopped) && stopped.length < firstReply.length).toBe(true);
    expect(r.out.startsWith(`${stopped}\n`)).toBe(true);
  });

  it('Ctrl-C at the prompt leaves with status 130', async () => {
    const input = new PassThrough();
    input.write('hello\n'); // and no end of input: only Ctrl-C ends this chat
    let interrupted = false;
    const r = await runCli(['chat', model, '--max-tokens', '1', '--temperature', '0'], {
      stdin: input,
      // The reply's line is ended: the chat is back at the prompt.
      onStdout: (piece) => {
        if (piece === '\n' && !interrupted) setTimeout(() => process.emit('SIGINT'), 20);
        interrupted ||= piece === '\n';
      },
    });
    expect(r.code).toBe(130);
    expect(sharedEngines.chatRequests).toHaveLength(1);
  });

  it('exits 2 before the first prompt for a checkpoint without a tokenizer', async () => {
    const r = await runCli(['chat', officialFixture()], { stdin: lines('hello') });
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(/dsv3-tiny-official has no tokenizer\.json, and chat needs one/)]);
    expect(sharedEngines.chatRequests).toHaveLength(0);
  });

  it.each([
    [['--top-k', '3'], /Unknown option '--top-k'/],
    [['--temperature', 'warm'], /--temperature must be a number >= 0/],
  ])('refuses %j before loading', async (flags, message) => {
    const r = await runCli(['chat', model, ...flags], { stdin: lines('hello') });
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(message)]);
  });

  it('runs as a process on piped stdin (real load, real unload) and says the same as in-process', async () => {
    const r = await spawnCli(['chat', model, ...SAMPLING], { stdin: 'hello\nhow are you\n' });
    expect(errorLines(r.err)).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(transcript);
  });
});
