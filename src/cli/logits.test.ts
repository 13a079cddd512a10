// webmoe logits, in-process with one engine for the file: the official prefill logits through
// the CLI, the last row alone, the readable summary, the W8A8 path (--fp8-activations), and refusals.

import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { errorLines, runCli, sharedEngines } from './testing.ts';

vi.mock('../node.ts', async (importOriginal) => (await import('./testing.ts')).withSharedEngines(await importOriginal<typeof import('../node.ts')>()));

interface OfficialPrompt {
  prompt: number[];
  prefill_logits: number[][];
}
const prompts = officialReference<{ modes: { f32_dequant: { prompts: OfficialPrompt[] } } }>().modes.f32_dequant.prompts;
const VOCAB = 320;

afterAll(() => sharedEngines.release());
afterEach(async () => {
  expect(sharedEngines.unloads).toBe(sharedEngines.loads);
  expect(await sharedEngines.openSessions()).toBe(0);
});

function maxAbsError(rows: number[][], reference: number[][]): number {
  let worst = 0;
  rows.forEach((row, r) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - reference[r][j])))));
  return worst;
}

describe('webmoe logits (official fixture)', () => {
  const p = prompts[0];

  it('--positions all --json gives the official prefill logits, every position, the whole vocabulary', async () => {
    const r = await runCli(['logits', officialFixture(), '--ids', p.prompt.join(','), '--positions', 'all', '--json']);
    expect(r.code).toBe(0);
    const { logits } = JSON.parse(r.out);
    expect(logits).toHaveLength(p.prompt.length);
    for (const row of logits) expect(row).toHaveLength(VOCAB);
    expect(maxAbsError(logits, p.prefill_logits)).toBeLessThan(1e-4);
  });

  it('gives the last row by default, and without --json its highest logits', async () => {
    const last = p.prefill_logits[p.prompt.length - 1];
    const json = await runCli(['logits', officialFixture(), '--ids', p.prompt.join(','), '--json']);
    const { logits } = JSON.parse(json.out);
    expect(logits).toHaveLength(1);
    expect(maxAbsError(logits, [last])).toBeLessThan(1e-4);

    const text = await runCli(['logits', officialFixture(), '--ids', p.prompt.join(',')]);
    expect(text.code).toBe(0);
    const best = [...last.keys()].sort((a, b) => last[b] - last[a]).slice(0, 5);
    const line = `position ${p.prompt.length - 1} (id ${p.prompt.at(-1)}): ${best.map((id) => `${id} ${last[id].toFixed(4)}`).join(', ')}\n`;
    // The fourth decimal may differ from the reference's rounding: compare the ids and the shape.
    expect(text.out.replace(/-?\d+\.\d{4}/g, 'x')).toBe(line.replace(/-?\d+\.\d{4}/g, 'x'));
  });

  it('--fp8-activations runs the W8A8 path: logits close to the f32 ones but not equal', async () => {
    const p = prompts[0];
    const plain = JSON.parse((await runCli(['logits', officialFixture(), '--ids', p.prompt.join(','), '--json'])).out).logits[0] as number[];
    const r = await runCli(['logits', officialFixture(), '--ids', p.prompt.join(','), '--fp8-activations', '--json']);
    expect(r.code).toBe(0);
    const fp8 = JSON.parse(r.out).logits[0] as number[];
    const diff = Math.max(...fp8.map((v, j) => Math.abs(v - plain[j])));
    expect(diff).toBeGreaterThan(1e-3);
    expect(diff).toBeLessThan(5);
  });

  it('exits 2 with one line for an id outside the vocabulary, before the GPU is opened (config.json says the vocabulary)', async () => {
    const loads = sharedEngines.loads;
    const r = await runCli(['logits', officialFixture(), '--ids', `1,${VOCAB}`, '--json']);
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(/token id 320 is not in \[0, 320\)/)]);
    expect(r.out).toBe('');
    expect(r.err).not.toMatch(/loaded/);
    expect(sharedEngines.loads).toBe(loads);
  });

  it.each([
    [['--json'], /give the token ids: --ids 1,2,3/],
    [['--ids', '1', '--positions', 'first'], /--positions must be "all" or "last", got "first"/],
    [['--ids', '1;2'], /--ids must be comma-separated non-negative integers/],
    [['--ids', '1', '--max-context', '1'], /--max-context must be an integer in \[2, ∞\]/],
  ])('refuses %j before loading, with one line', async (flags, message) => {
    const r = await runCli(['logits', officialFixture(), ...flags]);
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([expect.stringMatching(message)]);
    expect(r.err).not.toMatch(/loaded/);
  });
});
