import { expect, test, type Locator, type Page } from '@playwright/test';
import { checkWidth } from './layout.ts';

// The demo's expert cache on the shipped checkpoint (public/models/webmoe-kjv-12m: 16 routed
// experts, MoE layers 1-4 and the MTP layer 5), in the engine's Worker on SwiftShader. With the
// default load settings every expert is resident and the box stays hidden; loaded again with one
// expert slot per layer (and a budget, so that it is passed too), an answer leaves one expert in
// each of the 5 layers' caches, drawn as one filled cell per row, with the hit rate beside it.

const LAYERS = 5;

async function answer(page: Page, text: string): Promise<void> {
  await page.locator('#temperature').fill('0');
  await page.locator('#max-tokens').fill('6');
  await page.locator('#prompt').fill(text);
  await page.locator('#prompt').press('Enter');
  await expect(page.locator('#messages .message-assistant').last()).toHaveAttribute('data-state', 'done', { timeout: 60_000 });
}

/** Per band of canvas rows holding accent-coloured pixels (a cache row with a filled cell), the most separate accent runs across one pixel row: filled cells. */
function filledCells(canvas: Locator): Promise<number[]> {
  return canvas.evaluate((c: HTMLCanvasElement) => {
    const { data, width, height } = c.getContext('2d')!.getImageData(0, 0, c.width, c.height);
    // --accent (#2563eb) at full alpha; empty cells are the text colour at alpha 0.08, labels the text colour.
    const accent = (x: number, y: number) => {
      const i = 4 * (y * width + x);
      return data[i + 3] > 200 && data[i + 2] > 180 && data[i] < 100;
    };
    const bands: number[] = [];
    let inBand = false;
    for (let y = 0; y < height; y++) {
      let runs = 0;
      for (let x = 0; x < width; x++) if (accent(x, y) && (x === 0 || !accent(x - 1, y))) runs++;
      if (runs > 0 && !inBand) bands.push(0);
      if (runs > 0) bands[bands.length - 1] = Math.max(bands[bands.length - 1], runs);
      inBand = runs > 0;
    }
    return bands;
  });
}

test('the expert cache: hidden with every expert resident; at one slot per layer, one filled cell per layer and the hit rate', async ({ page }) => {
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto('/');
  await expect(page.locator('#progress-text')).toHaveAttribute('data-state', 'loaded', { timeout: 60_000 });
  await expect(page.locator('#chat-box')).toBeVisible();
  await answer(page, 'And God said');
  await expect(page.locator('#figures')).toHaveAttribute('data-state', 'done');
  await expect(page.locator('#cache-chart li[data-kind=latent]')).not.toHaveAttribute('data-bytes', '0'); // the stats after the answer arrived
  await expect(page.locator('#expert-cache-box')).toBeHidden();

  // The same checkpoint again, from the load settings.
  await page.locator('#load-settings summary').click();
  await page.locator('#gpu-budget').fill('1000');
  await page.locator('#expert-slots').fill('1');
  await page.locator('#load-url').click();
  const box = page.locator('#expert-cache-box');
  await expect(box).toBeVisible({ timeout: 60_000 }); // only an engine with its experts offloaded shows it
  await expect(page.locator('#progress-text')).toHaveAttribute('data-state', 'loaded');
  const canvas = page.locator('#expert-cache-canvas');
  await expect(box.locator('[data-figure=budget]')).toHaveText('GPU budget 1000.0 MiB');
  await expect(box.locator('[data-figure=memory]')).toHaveText(/^\d+\.\d MiB on the GPU vs \d+\.\d MiB of experts in CPU memory$/);
  const misses = async () => Number((await box.locator('[data-figure=misses]').textContent())!.match(/^([\d,]+) miss/)![1].replace(/,/g, ''));
  const before = await misses();

  await answer(page, 'In the beginning');
  // One slot for the 4 experts of each token: every step misses, so the answer adds misses.
  await expect.poll(misses).toBeGreaterThan(before);
  await expect(box.locator('[data-figure=hit-rate]')).toHaveText(/^Hit rate \d{1,3}\.\d% of [\d,]+ lookups$/);
  await expect(box.locator('[data-figure=uploaded]')).toHaveText(/^\d+\.\d (KiB|MiB) uploaded$/);
  await expect(canvas).toHaveAttribute('data-filled', String(LAYERS));
  await expect(canvas).toHaveAttribute('aria-label', `GPU expert cache: 1 of 16 experts per layer in ${LAYERS} layers; ${LAYERS} of ${LAYERS} slots hold an expert`);
  expect(await filledCells(canvas)).toEqual(Array(LAYERS).fill(1));
  const shot = test.info().outputPath('expert-cache.png');
  await box.screenshot({ path: shot });
  await test.info().attach('expert-cache', { path: shot, contentType: 'image/png' });
  await checkWidth(page, 'expert-cache', 360);
  expect(await filledCells(canvas)).toEqual(Array(LAYERS).fill(1)); // redrawn at the narrow width
});
