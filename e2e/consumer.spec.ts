import { expect, test } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, preview, type PreviewServer } from 'vite';

// The npm package as a stranger gets it: `npm pack` (which builds dist/), a new Vite app that
// installs the tarball and imports 'webmoe' with no configuration at all, `vite build`, and the
// built app in Chromium generating tokens with the engine in its bundled Worker. The app ships the
// generated checkpoint (public/models/tiny-random: random weights, vocab 320, no tokenizer, so ids).

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const checkpoint = join(root, 'public', 'models', 'tiny-random');
const PROMPT = [1, 17, 42, 99, 5];
const MAX_TOKENS = 4;

// The consumer's whole app. It is typechecked against the package's .d.ts (strict), so a type
// export that does not resolve fails here, not in someone's editor.
const app = {
  'package.json': JSON.stringify({ name: 'webmoe-consumer', private: true, type: 'module' }),
  'tsconfig.json': JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', lib: ['ES2022', 'DOM'], types: [], strict: true, noEmit: true, skipLibCheck: true },
    files: ['main.ts'],
  }),
  'index.html': `<!doctype html>
<html>
  <head><meta charset="utf-8"><title>webmoe consumer</title></head>
  <body><pre id="tokens"></pre><script type="module" src="./main.ts"></script></body>
</html>
`,
  'main.ts': `import { createEngine, WebmoeError, type GenerateChunk } from 'webmoe';

const out = document.getElementById('tokens')!;

async function main(): Promise<void> {
  const engine = await createEngine({ model: './models/tiny-random/', cacheShards: false });
  const ids: number[] = [];
  let last: GenerateChunk | undefined;
  for await (const chunk of engine.generate(${JSON.stringify(PROMPT)}, { temperature: 0, maxTokens: ${MAX_TOKENS}, ignoreEos: true })) {
    ids.push(...chunk.ids);
    out.textContent = ids.join(' ');
    last = chunk;
  }
  document.body.dataset.finish = last?.done?.finishReason ?? 'none';
  document.body.dataset.state = 'done';
}

main().catch((err: unknown) => {
  out.textContent = err instanceof WebmoeError ? err.code + ': ' + err.message : String(err);
  document.body.dataset.state = 'failed';
});
`,
};

/** Runs npm without the npm_* variables of an enclosing `npm test` (they would point it at this repo). */
function npm(args: string[], cwd: string): string {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_')));
  return execFileSync('npm', args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

let work: string;
let server: PreviewServer | undefined;

test.beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'webmoe-consumer-'));
});

test.afterAll(async () => {
  await server?.close();
  rmSync(work, { recursive: true, force: true });
});

test('a Vite app built against the packed tarball generates tokens in its Worker', async ({ page }) => {
  const appDir = join(work, 'app');

  const tarball = await test.step('npm pack', () => {
    npm(['pack', '--pack-destination', work], root);
    const packed = readdirSync(work).filter((f) => f.endsWith('.tgz'));
    expect(packed).toHaveLength(1);
    return join(work, packed[0]);
  });

  await test.step('install the tarball into a new app', () => {
    mkdirSync(appDir);
    for (const [name, text] of Object.entries(app)) writeFileSync(join(appDir, name), text);
    cpSync(checkpoint, join(appDir, 'public', 'models', 'tiny-random'), { recursive: true });
    // The package's dependencies are in npm's cache since this repo's `npm ci`.
    npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], appDir);
  });

  await test.step('typecheck the app against the .d.ts', () => {
    execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', appDir], { encoding: 'utf8' });
  });

  await test.step('vite build, no config file', async () => {
    await build({ root: appDir, configFile: false, logLevel: 'warn' });
    const assets = readdirSync(join(appDir, 'dist', 'assets'));
    expect(assets.filter((f) => f.startsWith('worker-'))).toHaveLength(1); // the engine's Worker, taken from the package
  });

  server = await preview({ root: appDir, configFile: false, logLevel: 'warn', preview: { port: 0, host: '127.0.0.1' } });
  const { port } = server.httpServer.address() as AddressInfo;

  const logs: string[] = [];
  page.on('console', (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`pageerror: ${err.message}`));
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.waitForSelector('body[data-state]', { timeout: 120_000 });

  const result = await page.evaluate(() => ({ state: document.body.dataset.state, finish: document.body.dataset.finish, text: document.getElementById('tokens')!.textContent ?? '' }));
  expect(result.state, `${result.text}\n${logs.join('\n')}`).toBe('done');
  const ids = result.text.split(' ').map(Number);
  expect(ids).toHaveLength(MAX_TOKENS);
  for (const id of ids) expect(id >= 0 && id < 320 && Number.isInteger(id)).toBe(true);
  expect(result.finish).toBe('length');
  // createEngine's default: the engine ran in a Worker loaded from the app's copy of the package's worker.
  expect(page.workers().map((w) => new URL(w.url()).pathname)).toEqual([expect.stringMatching(/^\/assets\/worker-[\w-]+\.js$/)]);
});
