#!/usr/bin/env node
// Installs what `npm start` and `npm test` need on a fresh Debian machine, and nothing twice:
//   npm dependencies (when node_modules is missing or older than package-lock.json);
//   the generated demo checkpoint in public/models/tiny-random (when missing);
//   with --browser: Debian's chromium (the browser for e2e tests, and SwiftShader, the CPU
//   Vulkan driver WebGPU runs on without a GPU) and libvulkan1 (the Vulkan loader Dawn uses in Node).
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// Until the trained checkpoint ships, the page serves a generated one (random weights, real layout).
const DEMO_MODEL = join(root, 'public', 'models', 'tiny-random');
const wantBrowser = process.argv.includes('--browser');

function run(cmd, args) {
  console.log(`[setup] ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
}

function npmDepsStale() {
  const marker = join(root, 'node_modules', '.package-lock.json');
  if (!existsSync(marker)) return true;
  return statSync(join(root, 'package-lock.json')).mtimeMs > statSync(marker).mtimeMs;
}

if (npmDepsStale()) run('npm', ['ci', '--no-audit', '--no-fund']);

const vulkanLoader = ['/usr/lib/x86_64-linux-gnu/libvulkan.so.1', '/usr/lib/aarch64-linux-gnu/libvulkan.so.1'];
const missing = [];
if (wantBrowser && !existsSync('/usr/bin/chromium')) missing.push('chromium');
if (wantBrowser && !vulkanLoader.some(existsSync)) missing.push('libvulkan1');
if (missing.length > 0) {
  if (process.getuid?.() === 0) {
    run('apt-get', ['update', '-qq']);
    run('apt-get', ['install', '-y', '-qq', ...missing]);
  } else {
    console.error(`[setup] missing Debian packages: run  sudo apt-get install -y ${missing.join(' ')}  and try again.`);
    process.exit(1);
  }
}

if (!existsSync(join(DEMO_MODEL, 'model.safetensors.index.json'))) {
  run(join(root, 'node_modules', '.bin', 'tsx'), ['tools/checkpoint/main.ts', '--out', DEMO_MODEL, '--preset', 'tiny', '--shards', '2', '--seed', '1']);
}
