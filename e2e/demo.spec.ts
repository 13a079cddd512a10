import { expect, test, type Page } from '@playwright/test';
import { checkWidth } from './layout.ts';

// The demo page with the shipped checkpoint (public/models/webmoe-kjv-12m) in an engine Worker, on
// SwiftShader: the page loads it by itself and answers a message typed with no click at all; the
// figures, the experts heatmap and the cache chart follow it, Stop ends a long answer and the page
// stays usable, and it fits 1280 and 360 px screens. One page and one load for all tests
// (SwiftShader is slow); screenshots go to test-results/screenshots/ and the report. A browser
// without WebGPU is covered by smoke.spec.ts.
test.describe.configure({ mode: 'serial' });

let page: Page;

const assistant = () => page.locator('#messages .message-assistant').last();

/** A full-page screenshot in the test's output folder (test-results/e2e/...), attached to the report. */
async function snapshot(name: string): Promise<void> {
  const path = test.info().outputPath(`${name}.png`);
  await page.screenshot({ path, fullPage: true });
  await test.info().attach(name, { path, contentType: 'image/png' });
}

/** Sends `text` with Enter (the keyboard path) and the given max tokens. */
async function send(text: string, maxTokens: number): Promise<void> {
  await page.locator('#max-tokens').fill(String(maxTokens));
  await page.locator('#prompt').fill(text);
  await page.locator('#prompt').press('Enter');
}

test.beforeAll(async ({ browser }) => {
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto('/');
  await expect(page.locator('#gpu-status')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await expect(page.locator('#progress-text')).toHaveAttribute('data-state', 'loaded', { timeout: 60_000 });
  await expect(page.locator('#summary')).toContainText('deepseek_v3: hidden 256, 5 layers (1 dense)');
  await expect(page.locator('#chat-box')).toBeVisible();
});

test.afterAll(async () => {
  await page.close();
});

test('on the first visit the page loads the shipped checkpoint by itself and says what runs it', async () => {
  // SwiftShader is a software adapter: the page says so in plain words.
  await expect(page.locator('#gpu-note')).toBeVisible();
  await expect(page.locator('#gpu-note')).toContainText('Your browser is running WebGPU on the CPU');
  await expect(page.locator('#gpu-note')).toContainText('expect a few tokens per second');
  // The memory plan of the checkpoint against this adapter's limits.
  await expect(page.locator('#memory-box')).toHaveAttribute('data-fits', 'true');
  await expect(page.locator('#memory-plan')).toContainText(/for one conversation of 1,024 positions: weights 23\.5 MiB \(FP8\)/);
  await expect(page.locator('#model-url')).toHaveValue(/\/models\/webmoe-kjv-12m\/$/);
  await expect(page.locator('#progress-text')).toHaveAttribute('data-source', /network|cache/);
});

test('a message gets a streamed answer without a click; the figures, the experts heatmap and the cache chart follow', async () => {
  // Count the answer's text updates: streamed means several, not one at the end.
  await page.evaluate(() => {
    const w = window as unknown as { textUpdates: number };
    w.textUpdates = 0;
    new MutationObserver(() => w.textUpdates++).observe(document.getElementById('messages')!, { subtree: true, childList: true, characterData: true });
  });
  await send('And God said', 12);
  await expect(page.locator('#messages .message-user')).toHaveText(/And God said/);
  await expect(assistant()).toHaveAttribute('data-state', 'done', { timeout: 60_000 });
  await expect(assistant().locator('.text')).not.toBeEmpty();
  expect(await page.evaluate(() => (window as unknown as { textUpdates: number }).textUpdates)).toBeGreaterThan(2);

  await expect(page.locator('#figures')).toHaveAttribute('data-state', 'done');
  await expect(page.locator('#fig-ttft')).toHaveText(/^\d+(\.\d+)? m?s$/);
  await expect(page.locator('#fig-prefill')).toContainText('tok/s');
  // speculative 'auto' by default: it speculates where that pays on this adapter
  await expect(page.locator('#mtp')).toHaveValue('auto');
  await expect(page.locator('#fig-mtp')).toHaveText(/drafts accepted|no drafts|off \(plain decoding\)/);
  await expect(page.locator('#fig-tokens')).toHaveText(/^\d+ generated/);

  const canvas = page.locator('#experts-canvas');
  await expect(canvas).not.toHaveAttribute('data-tokens', '0');
  await expect(canvas).toHaveAttribute('aria-label', /Experts chosen in layer 1 for \d+ tokens/);
  const inked = await canvas.evaluate((c: HTMLCanvasElement) => {
    const data = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
    return n / (c.width * c.height);
  });
  expect(inked).toBeGreaterThan(0.1); // drawn, not blank
  await page.locator('#experts-layer').selectOption('all');
  await expect(canvas).toHaveAttribute('aria-label', /all 4 MoE layers/);

  const bytes = async (kind: string) => Number(await page.locator(`#cache-chart li[data-kind=${kind}]`).getAttribute('data-bytes'));
  await expect.poll(() => bytes('latent')).toBeGreaterThan(0);
  expect(await bytes('mha')).toBe(4 * (await bytes('latent'))); // 4 heads x (64 + 32) vs 64 + 32 per layer
  await snapshot('answered');
  await checkWidth(page, 'demo', 1280);
});

test('Stop ends a long answer, and the next message continues the conversation', async () => {
  // A new chat, greedy: this prompt's greedy answer runs past 200 tokens without an EOS.
  await page.locator('#new-chat').click();
  await expect(page.locator('#messages .message')).toHaveCount(0);
  await page.locator('#temperature').fill('0');
  await send('Now the serpent was more subtil', 200);
  await expect(page.locator('#stop')).toBeEnabled();
  await expect(assistant().locator('.text')).not.toBeEmpty({ timeout: 60_000 });
  await page.locator('#stop').click();
  await expect(assistant()).toHaveAttribute('data-state', 'stopped', { timeout: 30_000 });
  const tokens = Number((await page.locator('#fig-tokens').textContent())?.match(/^(\d+) generated \(stopped\)/)?.[1]);
  expect(tokens).toBeGreaterThan(0);
  expect(tokens).toBeLessThan(100);
  await expect(page.locator('#stop')).toBeDisabled();
  await expect(page.locator('#send')).toBeEnabled();
  await expect(page.locator('#prompt')).toBeFocused();
  await snapshot('stopped');

  // The session keeps the cache: the next turn prefills only its own tokens.
  await send('And the LORD God called', 4);
  await expect(assistant()).toHaveAttribute('data-state', 'done', { timeout: 60_000 });
  await expect(page.locator('#fig-prefill')).toContainText('reused from the cache');
  await expect(page.locator('#messages .message')).toHaveCount(4);
});

test('fits a 360 px screen without horizontal scrolling', async () => {
  await checkWidth(page, 'demo', 360);
});
