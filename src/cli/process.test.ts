// webmoe as a real process, where the shell's plumbing reaches it: a stdout closed under it
// (`webmoe generate … | head`), SIGTERM, and stderr, which must carry only the progress line and
// the one error line: no stack trace, and no driver noise from opening the GPU.

import { describe, expect, it } from 'vitest';
import { officialFixture, officialReference } from '../testing/fixtures.ts';
import { fixtureWithTokenizer, spawnCli } from './testing.ts';

const prompt = officialReference<{ modes: { f32_dequant: { prompts: { prompt: number[] }[] } } }>().modes.f32_dequant.prompts[1].prompt.join(',');

/** stderr holds nothing but the load's progress line. */
function expectOnlyProgress(err: string) {
  expect(err).toMatch(/^loaded .*dsv3-tiny-official: [\d.]+ MiB of weights in [\d.]+ s\n$/);
}

describe('webmoe as a process', () => {
  // Not stopping is a hang here: the 500 tokens nobody reads take about a minute on SwiftShader,
  // stopping at the first write takes the load's few seconds.
  it('generate into a closed pipe stops at its first write, quietly: status 0 within 40 s, no stack trace', async () => {
    const r = await spawnCli(['generate', officialFixture(), '--ids', '1,2,3', '--ignore-eos', '--max-tokens', '500'], { closeStdout: true, deadlineMs: 40_000 });
    expect(r.err).not.toMatch(/EPIPE|\n\s+at /);
    expect(r.code).toBe(0);
  });

  it('logits --json into a closed pipe: status 0, and stderr holds only the progress line (no Vulkan or Wayland noise)', async () => {
    const r = await spawnCli(['logits', officialFixture(), '--ids', prompt, '--positions', 'all', '--json'], { closeStdout: true });
    expectOnlyProgress(r.err);
    expect(r.code).toBe(0);
  });

  it('chat into a closed pipe ends the chat quietly: status 0', async () => {
    const r = await spawnCli(['chat', fixtureWithTokenizer(), '--max-tokens', '20'], { stdin: 'hello\nagain\n', closeStdout: true });
    expect(r.err).toMatch(/^loaded [^\n]*\n$/);
    expect(r.code).toBe(0);
  });

  it('SIGTERM stops generate --json as Ctrl-C does: the object, finish_reason "abort", status 143', async () => {
    let signalled = false;
    const r = await spawnCli(['generate', officialFixture(), '--ids', prompt, '--ignore-eos', '--max-tokens', '400', '--json'], {
      onStderr: (_, child) => {
        if (!signalled) child.kill('SIGTERM'); // the model is loaded: it is generating
        signalled = true;
      },
    });
    expect(r.code).toBe(143);
    const report = JSON.parse(r.out);
    expect(report.finish_reason).toBe('abort');
    expect(report.ids.length).toBeLessThan(400);
    expectOnlyProgress(r.err);
  });
});
