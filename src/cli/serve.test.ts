// webmoe serve: its flags refused before the load (another host than loopback needs an API key),
// a server in-process answering the openai client until Ctrl-C (status 130, the engine unloaded,
// the signals handed back), and a real process stopped by SIGTERM (status 143, stderr holding only
// the load's line).

import OpenAI from 'openai';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { SHIPPED_MODEL } from '../server/testing.ts';
import { UsageError } from './args.ts';
import { isLoopback, parseServeArgs } from './serve.ts';
import { errorLines, runCli, sharedEngines, spawnCli } from './testing.ts';

vi.mock('../node.ts', async (importOriginal) => (await import('./testing.ts')).withSharedEngines(await importOriginal<typeof import('../node.ts')>()));

afterAll(() => sharedEngines.release());
afterEach(async () => {
  expect(sharedEngines.unloads).toBe(sharedEngines.loads);
  expect(await sharedEngines.openSessions()).toBe(0);
  expect(process.listenerCount('SIGINT')).toBe(0);
  expect(process.listenerCount('SIGTERM')).toBe(0);
});

const SERVING = /^serving (\S+) at (http:\/\/\S+\/v1) /m;

describe('webmoe serve flags', () => {
  it('defaults to loopback:8080, the folder\'s name as the model and 16 requests at once', () => {
    expect(parseServeArgs([`${SHIPPED_MODEL}/`], {})).toMatchObject({ host: '127.0.0.1', port: 8080, apiKey: undefined, maxConcurrent: 16, modelId: 'webmoe-kjv-12m' });
    expect(parseServeArgs(['m', '--port', '0', '--max-concurrent', '2', '--served-model-name', 'deepseek-ai/DeepSeek-V3'], {})).toMatchObject({ port: 0, maxConcurrent: 2, modelId: 'deepseek-ai/DeepSeek-V3' });
  });

  it('refuses another host than loopback without an API key, from the flag or WEBMOE_API_KEY', () => {
    expect(() => parseServeArgs(['m', '--host', '0.0.0.0'], {})).toThrow(/--host 0.0.0.0 is reachable from other machines: give --api-key KEY/);
    expect(parseServeArgs(['m', '--host', '0.0.0.0', '--api-key', 'k'], {}).apiKey).toBe('k');
    expect(parseServeArgs(['m', '--host', '0.0.0.0'], { WEBMOE_API_KEY: 'from-env' }).apiKey).toBe('from-env');
    expect(['127.0.0.1', '127.1.2.3', 'localhost', '::1'].every(isLoopback)).toBe(true);
    expect(['0.0.0.0', '::', '192.168.1.2', 'example.com'].some(isLoopback)).toBe(false);
  });

  it.each([
    [['m', '--port', '70000'], /--port must be an integer in \[0, 65535\]/],
    [['m', '--max-concurrent', '0'], /--max-concurrent must be an integer in \[1, ∞\]/],
    [['m', '--api-key', ''], /--api-key must not be empty/],
    [['m', '--top-k', '3'], /Unknown option '--top-k'/],
  ])('refuses %j', (argv, message) => {
    expect(() => parseServeArgs(argv, {})).toThrow(UsageError);
    expect(() => parseServeArgs(argv, {})).toThrow(message);
  });

  it('exits 2 with one line before loading anything', async () => {
    const r = await runCli(['serve', SHIPPED_MODEL, '--host', '0.0.0.0']);
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(/^webmoe serve: --host 0.0.0.0 is reachable/)]);
    expect(sharedEngines.loads).toBe(0);
  });
});

describe('webmoe serve running', () => {
  it('serves the openai client until Ctrl-C: status 130, the engine unloaded', async () => {
    let resolveUrl!: (url: string) => void;
    const url = new Promise<string>((r) => (resolveUrl = r));
    const run = runCli(['serve', SHIPPED_MODEL, '--port', '0', '--served-model-name', 'kjv'], {
      onStdout: (piece) => {
        const m = SERVING.exec(piece);
        if (m) resolveUrl(m[2]);
      },
    });
    const client = new OpenAI({ baseURL: await url, apiKey: 'x', maxRetries: 0 });
    const reply = await client.chat.completions.create({ model: 'kjv', messages: [{ role: 'user', content: 'In the beginning' }], max_tokens: 2 });
    expect(reply.usage?.completion_tokens).toBe(2);
    process.emit('SIGINT');
    const r = await run;
    expect(r.code).toBe(130);
    expect(r.out).toMatch(SERVING);
    expect(errorLines(r.err)).toEqual([]);
    await expect(fetch(`${await url}/models`)).rejects.toThrow(); // the port is closed
  });

  it('as a process: SIGTERM closes the server and exits 143, stderr holds only the load line', async () => {
    let models: unknown;
    const r = await spawnCli(['serve', SHIPPED_MODEL, '--port', '0'], {
      deadlineMs: 60_000,
      onStdout: (piece, child) => {
        const m = SERVING.exec(piece);
        if (!m) return;
        void fetch(`${m[2]}/models`)
          .then((res) => res.json())
          .then((body) => (models = body))
          .finally(() => child.kill('SIGTERM'));
      },
    });
    expect(r.code).toBe(143);
    expect(models).toMatchObject({ object: 'list', data: [{ id: 'webmoe-kjv-12m', owned_by: 'webmoe' }] });
    expect(r.err).toMatch(/^loaded [^\n]*webmoe-kjv-12m: [\d.]+ MiB of weights in [\d.]+ s\n$/);
  });
});
