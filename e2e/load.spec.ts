import { expect, test } from '@playwright/test';

// The generated test checkpoint (public/models/tiny-random, two shards and an index, no tokenizer;
// chosen with ?model=) is loaded by the page by itself, streamed over HTTP Range requests into GPU
// buffers in the engine's Worker; the next visit, with no ?model=, loads the same checkpoint again
// (the page remembers it), now from the IndexedDB shard cache.
test('loads a sharded checkpoint over HTTP with progress, then remembers it and loads it again from the cache', async ({ page }) => {
  await page.goto('/?model=/models/tiny-random/');
  await expect(page.locator('#gpu-status')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  const text = page.locator('#progress-text');
  await expect(text).toHaveAttribute('data-state', 'loaded', { timeout: 60_000 });
  await expect(text).toHaveAttribute('data-source', 'network');
  await expect(page.locator('#progress')).toHaveJSProperty('value', 1);
  const summary = page.locator('#summary');
  await expect(summary).toContainText('deepseek_v3: hidden 128, 4 layers (2 dense)');
  await expect(summary).toContainText('3,085,976 total');
  await expect(summary).toContainText('all present, none unexpected');
  await expect(page.locator('#memory-plan')).toContainText('for one conversation of');
  await page.screenshot({ path: test.info().outputPath('loaded.png'), fullPage: true });

  await page.goto('/');
  await expect(page.locator('#model-url')).toHaveValue(/\/models\/tiny-random\/$/);
  await expect(text).toHaveAttribute('data-state', 'loaded', { timeout: 60_000 });
  await expect(text).toHaveAttribute('data-source', 'cache');
  await expect(summary).toContainText('hidden 128, 4 layers');
});

test('another URL can be loaded: a wrong one ends in a clear message that names the missing file', async ({ page }) => {
  await page.goto('/?autoload=0');
  await expect(page.locator('#gpu-status')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await expect(page.locator('#progress-box')).toBeHidden(); // ?autoload=0: nothing loads by itself
  await page.locator('#model-url').fill(new URL('/models/no-such-model/', page.url()).href);
  await page.locator('#load-url').click();
  await expect(page.locator('#error')).toContainText('config.json not found');
});

test('Cancel stops the load the page started by itself, and leaves the form to load another', async ({ page }) => {
  // The weights answer late, so the load is surely still running when Cancel is pressed.
  await page.route('**/webmoe-kjv-12m/model.safetensors', async (route) => {
    await new Promise((r) => setTimeout(r, 3000));
    await route.continue().catch(() => undefined);
  });
  await page.goto('/');
  const text = page.locator('#progress-text');
  await expect(text).toHaveAttribute('data-state', 'loading', { timeout: 60_000 });
  await page.locator('#cancel').click();
  await expect(text).toHaveAttribute('data-state', 'cancelled');
  await expect(text).toHaveText('Loading cancelled.');
  await expect(page.locator('#error')).toBeHidden();
  await expect(page.locator('#load-url')).toBeEnabled();
  await expect(page.locator('#chat-box')).toBeHidden();
});
