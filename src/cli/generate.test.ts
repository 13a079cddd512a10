// webmoe generate, in-process with one engine per checkpoint for the file: the official fixture's
// greedy continuation through the CLI, text prompts and --chat on the fixture with a tokenizer
// beside it, Ctrl-C (also as a real signal to a child process), and bad flags.

import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { errorLines, fixtureWithTokenizer, runCli, sharedEngines, spawnCli } from './testing.ts';
import { speculativeFlag } from './generate.ts';

vi.mock('../node.ts', async (importOriginal) => (await import('./testing.ts')).withSharedEngines(await importOriginal<typeof import('../node.ts')>()));

interface OfficialPrompt {
  prompt: number[];
  greedy: { tokens: number[] };
}
const prompts = officialReference<{ modes: { f32_dequant: { prompts: OfficialPrompt[] } } }>().modes.f32_dequant.prompts;
const JSON_KEYS = ['decode_tokens_per_s', 'finish_reason', 'ids', 'mtp', 'offload', 'prefill_tokens_per_s', 'prompt_tokens', 'text', 'ttft_ms'];

let withTokenizer: string;
beforeAll(() => {
  withTokenizer = fixtureWithTokenizer();
});
afterAll(() => sharedEngines.release());
// Every command that loaded the model unloaded it, and left no session open.
afterEach(async () => {
  expect(sharedEngines.unloads).toBe(sharedEngines.loads);
  expect(await sharedEngines.openSessions()).toBe(0);
});

describe('webmoe generate on token ids (official fixture, no tokenizer)', () => {
  it('--json with greedy sampling gives the official continuation, as one object with the documented keys', async () => {
    const p = prompts[1];
    const r = await runCli(['generate', officialFixture(), '--ids', p.prompt.join(','), '--temperature', '0', '--ignore-eos', '--max-tokens', '5', '--json']);
    expect(r.code).toBe(0);
    expect(r.out.split('\n')).toEqual([expect.any(String), '']); // one line
    const report = JSON.parse(r.out);
    expect(Object.keys(report).sort()).toEqual(JSON_KEYS);
    expect(report).toMatchObject({ ids: p.greedy.tokens.slice(0, 5), text: '', prompt_tokens: p.prompt.length, finish_reason: 'length' });
    for (const key of ['ttft_ms', 'prefill_tokens_per_s', 'decode_tokens_per_s']) expect(report[key]).toBeGreaterThan(0);
    // The fixture has an MTP layer: speculation is 'auto' by default (on where it pays: mtp says whether it ran).
    if (report.mtp !== null) expect(report.mtp.accepted).toBeLessThanOrEqual(report.mtp.drafted);
    // Progress went to stderr (one line: stderr is not a terminal here), nothing else.
    expect(r.err).toMatch(/^loaded .*dsv3-tiny-official: [\d.]+ MiB of weights in [\d.]+ s\n$/);
    expect(sharedEngines.loads).toBe(1);
  });

  it('--expert-slots 2 (--expert-store checkpoint too): the routed experts offloaded, the official continuation, and --json offload counts them (null when resident)', async () => {
    const p = prompts[1];
    const args = ['generate', officialFixture(), '--ids', p.prompt.join(','), '--temperature', '0', '--ignore-eos', '--max-tokens', '5', '--json', '--speculative', 'off'];
    const report = JSON.parse((await runCli([...args, '--expert-slots', '2'])).out);
    expect(report).toMatchObject({ ids: p.greedy.tokens.slice(0, 5), offload: { budget_bytes: null, expert_slots: 2 } });
    expect(Object.keys(report.offload).sort()).toEqual(['budget_bytes', 'expert_hits', 'expert_misses', 'expert_slots', 'host_bytes', 'resident_bytes', 'route_wait_ms', 'uploaded_bytes']);
    expect(report.offload.expert_misses).toBeGreaterThan(0);
    expect(report.offload.uploaded_bytes).toBeGreaterThan(0);
    expect(JSON.parse((await runCli(args)).out).offload).toBeNull();
    expect((await runCli([...args, '--expert-slots', '0'])).code).toBe(2);
    // read from the checkpoint at each miss: nothing held in CPU memory, the same continuation
    const fromFiles = JSON.parse((await runCli([...args, '--expert-slots', '2', '--expert-store', 'checkpoint'])).out);
    expect(fromFiles).toMatchObject({ ids: p.greedy.tokens.slice(0, 5), offload: { host_bytes: 0, expert_slots: 2 } });
    expect((await runCli([...args, '--expert-store', 'disk'])).code).toBe(2);
  });

  it('--speculative on drafts, --no-mtp (--speculative off) does not, to the same tokens', async () => {
    const p = prompts[1];
    const args = ['generate', officialFixture(), '--ids', p.prompt.join(','), '--temperature', '0', '--ignore-eos', '--max-tokens', '5', '--json'];
    const on = JSON.parse((await runCli([...args, '--speculative', 'on'])).out);
    expect(on).toMatchObject({ ids: p.greedy.tokens.slice(0, 5) });
    expect(on.mtp.drafted).toBeGreaterThan(0);
    expect(on.mtp.accepted).toBeLessThanOrEqual(on.mtp.drafted);
    for (const off of [['--no-mtp'], ['--speculative', 'off']]) expect(JSON.parse((await runCli([...args, ...off])).out)).toMatchObject({ ids: p.greedy.tokens.slice(0, 5), mtp: null });
  });

  it('--no-fused-norms (the norms as dispatches of their own) gives the official continuation too', async () => {
    const p = prompts[1];
    const r = await runCli(['generate', officialFixture(), '--ids', p.prompt.join(','), '--temperature', '0', '--ignore-eos', '--max-tokens', '5', '--json', '--no-fused-norms']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ ids: p.greedy.tokens.slice(0, 5) });
    expect(r.err).toMatch(/^loaded /); // an engine of its own (the shared engines are keyed by their options)
    expect((await runCli(['generate', officialFixture(), '--ids', '1', '--no-fused-norms=1'])).code).toBe(2);
  });

  it('--speculative takes auto, on or off, and not against --no-mtp', () => {
    expect(speculativeFlag(undefined, undefined)).toBe('auto');
    expect(speculativeFlag('on', undefined)).toBe(true);
    expect(speculativeFlag('off', true)).toBe(false);
    expect(() => speculativeFlag('yes', undefined)).toThrow(/--speculative takes auto, on or off, got "yes"/);
    expect(() => speculativeFlag('on', true)).toThrow(/--no-mtp is --speculative off; it cannot go with --speculative on/);
  });

  it('without --json streams the generated ids, since there is no text', async () => {
    const p = prompts[1];
    const r = await runCli(['generate', officialFixture(), '--ids', p.prompt.join(', '), '--temperature', '0', '--ignore-eos', '--max-tokens', '3']);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`${p.greedy.tokens.slice(0, 3).join(' ')}\n`);
  });

  it('Ctrl-C aborts the generation: exit 130 after what was streamed, SIGINT handed back', async () => {
    const p = prompts[1];
    let interrupted = false;
    const r = await runCli(['generate', officialFixture(), '--ids', p.prompt.join(','), '--temperature', '0', '--ignore-eos', '--max-tokens', '200'], {
      onStdout: () => {
        if (!interrupted) process.emit('SIGINT');
        interrupted = true;
      },
    });
    expect(r.code).toBe(130);
    expect(r.out).toBe(`${p.greedy.tokens[0]}\n`); // the abort stops the next step
    expect(errorLines(r.err)).toEqual([]);
    expect(process.listenerCount('SIGINT')).toBe(0);
  });

  it('a real Ctrl-C (SIGINT to the process) stops it cleanly with status 130', async () => {
    const p = prompts[1];
    let signalled = false;
    const r = await spawnCli(['generate', officialFixture(), '--ids', p.prompt.join(','), '--temperature', '0', '--ignore-eos', '--max-tokens', '300'], {
      onStdout: (_, child) => {
        if (!signalled) child.kill('SIGINT');
        signalled = true;
      },
    });
    expect(r.code).toBe(130);
    const ids = r.out.trim().split(' ').map(Number);
    expect(ids.length).toBeLessThan(300);
    expect(ids).toEqual(p.greedy.tokens.slice(0, ids.length));
    expect(errorLines(r.err)).toEqual([]);
  });

  it('a text prompt exits 2 with one line: the checkpoint has no tokenizer', async () => {
    const r = await runCli(['generate', officialFixture(), '--prompt', 'hello']);
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(/^webmoe generate: .*dsv3-tiny-official has no tokenizer\.json: give token ids/)]);
    expect(r.out).toBe('');
  });
});

describe('webmoe generate on text (the fixture with a tokenizer)', () => {
  let streamed = '';

  it('streams the same text that --json reports for the same seed, and --stop cuts it', async () => {
    const flags = ['--prompt', 'hello', '--seed', '7', '--max-tokens', '8', '--ignore-eos'];
    const stream = await runCli(['generate', withTokenizer, ...flags]);
    expect(stream.code).toBe(0);
    const json = await runCli(['generate', withTokenizer, ...flags, '--json']);
    const report = JSON.parse(json.out);
    expect(report.ids).toHaveLength(8);
    expect(report.prompt_tokens).toBe(1 + 'hello'.length); // BOS, then one token per byte
    expect(stream.out).toBe(`${report.text}\n`);
    streamed = report.text;
    // Stop at the first occurrence of a piece of that text: what comes before it is the answer.
    expect(streamed.length).toBeGreaterThan(3);
    const stop = streamed.slice(2, 4);
    const cut = JSON.parse((await runCli(['generate', withTokenizer, ...flags, '--json', '--stop', 'never seen', '--stop', stop])).out);
    expect(cut).toMatchObject({ text: streamed.slice(0, streamed.indexOf(stop)), finish_reason: 'stop' });
  });

  it('--chat sends the prompt as a user message through the chat template', async () => {
    const r = await runCli(['generate', withTokenizer, '--prompt', 'hello', '--chat', '--temperature', '0', '--max-tokens', '4', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(Object.keys(report).sort()).toEqual(JSON_KEYS);
    // BOS, <|User|>, 5 bytes, <|Assistant|>. The chat stream's webmoe fields carry the ids and figures.
    expect(report).toMatchObject({ prompt_tokens: 8 });
    expect(report.ids.length).toBeGreaterThan(0);
    expect(report.ttft_ms).toBeGreaterThan(0);
    expect(report.mtp === null || report.mtp.drafted >= 0).toBe(true); // speculation 'auto': on where it pays
    expect(['length', 'stop']).toContain(report.finish_reason);
    expect(typeof report.text).toBe('string');
  });
});

describe('webmoe generate: bad flags fail before loading, with one line', () => {
  it.each([
    [['--prompt', 'a', '--ids', '1'], /either --prompt or --ids, not both/],
    [[], /give the prompt: --prompt TEXT or --ids 1,2,3/],
    [['--ids', '1,x,3'], /--ids must be comma-separated non-negative integers, got "x"/],
    [['--ids', ''], /--ids needs at least one token id/],
    [['--ids', '1', '--temperature=-1'], /--temperature must be a number >= 0/],
    [['--ids', '1', '--top-p', '0'], /--top-p must be a number in \(0, 1\]/],
    [['--ids', '1', '--top-k', '2.5'], /--top-k must be an integer/],
    [['--ids', '1', '--seed', '4294967296'], /--seed must be an integer in \[0, 4294967295\]/],
    [['--ids', '1', '--max-tokens', '0'], /--max-tokens must be an integer in \[1, ∞\]/],
    [['--ids', '1', '--chat'], /--chat needs a text --prompt/],
    [['--ids', '1', '--weights', 'int4'], /--weights must be one of fp8, bf16, got "int4"/],
    [['--ids', '1', '--max-binding-mib', '0'], /--max-binding-mib must be a positive number of MiB, got "0"/],
    [['--ids', '1', '--bogus'], /Unknown option '--bogus'/],
  ])('%j', async (flags, message) => {
    const r = await runCli(['generate', '/no/such/model', ...flags]);
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(message)]);
    expect(r.err).not.toMatch(/loaded/);
  });

  it.each([
    [['--ids', '1,99999'], /--ids: token id 99999 is not in \[0, 320\) \(vocab_size of /],
    [['--ids', '1', '--top-k', '99999999999'], /--top-k must be an integer in \[0, 4294967295\]/],
    [['--ids', '1', '--top-k', '321'], /--top-k must be at most vocab_size 320 \(0: off\), got 321/],
  ])('checks what needs only config.json before the GPU is opened: %j', async (flags, message) => {
    const loads = sharedEngines.loads;
    const r = await runCli(['generate', officialFixture(), ...flags]);
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(message)]);
    expect(r.err).not.toMatch(/loaded/);
    expect(sharedEngines.loads).toBe(loads);
  });

  it('names the missing folder', async () => {
    const r = await runCli(['generate', '/no/such/model', '--ids', '1']);
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(/config\.json not found in \/no\/such\/model/)]);
  });
});
