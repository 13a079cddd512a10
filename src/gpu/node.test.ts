// openNodeGpu's probe of the hardware Vulkan drivers, in a child process: what the drivers print
// goes to the process's native stderr, which only a parent can read.

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../testing/fixtures.ts';

const PROBE = `
const { openNodeGpu } = await import('./src/gpu/node.ts');
await openNodeGpu({ adapter: 'hardware' }).catch(() => {});
console.log(JSON.stringify(process.env.XDG_RUNTIME_DIR ?? null));
process.exit(0);`;

describe('openNodeGpu in Node', () => {
  it('probes the hardware drivers without libwayland\'s XDG_RUNTIME_DIR complaint, leaving the variable unset', () => {
    const env = { ...process.env };
    delete env.XDG_RUNTIME_DIR;
    delete env.VK_ICD_FILENAMES;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', PROBE], { cwd: REPO_ROOT, env, encoding: 'utf8', timeout: 30_000 });
    expect(r.stdout.trim()).toBe('null');
    expect(r.stderr).not.toMatch(/XDG_RUNTIME_DIR/);
  });
});
