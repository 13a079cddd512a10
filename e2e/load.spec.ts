import { expect, test } from '@playwright/test';

// The generated test checkpoint (public/models/tiny-random, two shards and an index, no tokenizer;
// chosen with ?model=) is streamed over HTTP Range requests into GPU buffers in the engine's Worker;
// the second load reads the IndexedDB shard cache.
test('loads a sharded checkpoint over HTTP with progress, then again from the cache', async ({ page }) => {
  await page.goto('/?model=/models/tiny-random/');
  await expect(page.locator('#gpu-status')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await page.locator('#load-url').click();
  const text = page.locator('#progress-text');
  await expect(text).toHaveAttribute('data-state', 'loaded', { timeout: 60_000 });
  await expect(text).toHaveAttribute('data-source', 'network');
  await expect(page.locator('#progress')).toHaveJSProperty('value', 1);
  const summary = page.locator('#summary');
  await expect(summary).toContainText('deepseek_v3: hidden 128, 4 layers (2 dense)');
  await expect(summary).toContainText('3,085,976 total');
  await expect(summary).toContainText('all present, none unexpected');
  await page.screenshot({ path: test.info().outputPath('loaded.png'), fullPage: true });

  await page.reload();
  await expect(page.locator('#gpu-status')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await page.locator('#load-url').click();
  await expect(text).toHaveAttribute('data-state', 'loaded', { timeout: 60_000 });
  await expect(text).toHaveAttribute('data-source', 'cache');
});

test('a wrong URL ends in a clear message that names the missing file', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('#gpu-status')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await page.locator('#model-url').fill(new URL('/models/no-such-model/', page.url()).href);
  await page.locator('#load-url').click();
  await expect(page.locator('#error')).toContainText('config.json not found');
});
