#!/usr/bin/env node
// `npm test`: install what is missing, typecheck, unit tests (vitest), e2e tests (Playwright in
// Debian chromium), then one closing line "N passed, N failed" over both suites.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const reports = join(root, 'test-results');
mkdirSync(reports, { recursive: true });

function step(name, cmd, args) {
  console.log(`\n[test] ${name}: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  return r.status === 0;
}

const bin = (name) => join(root, 'node_modules', '.bin', name);
let ok = step('setup', process.execPath, [join(root, 'tools', 'setup.mjs'), '--browser']);
if (!ok) process.exit(1);
const typecheck = step('typecheck', bin('tsc'), ['--noEmit', '-p', root]);
const unitJson = join(reports, 'vitest.json');
const unit = step('unit', bin('vitest'), ['run', '--reporter=default', '--reporter=json', `--outputFile=${unitJson}`]);
const e2eJson = join(reports, 'playwright.json');
const e2e = spawnSync(bin('playwright'), ['test', '-c', 'e2e'], {
  cwd: root,
  stdio: 'inherit',
}).status === 0;

let passed = 0;
let failed = 0;
let skipped = 0;
if (existsSync(unitJson)) {
  const r = JSON.parse(readFileSync(unitJson, 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + (r.numTodoTests ?? 0);
}
if (existsSync(e2eJson)) {
  const s = JSON.parse(readFileSync(e2eJson, 'utf8')).stats ?? {};
  passed += (s.expected ?? 0) + (s.flaky ?? 0);
  failed += s.unexpected ?? 0;
  skipped += s.skipped ?? 0;
}
if (!typecheck) failed += 1;
console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(typecheck && unit && e2e && failed === 0 ? 0 : 1);
