import { expect, test, type Page } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Shared by the page specs: the no-horizontal-scroll check at a width, and screenshots kept where
// people look for them (test-results/screenshots/, git-ignored; Playwright clears its own output
// folder at every run, this one is overwritten file by file), also attached to the report.

const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results', 'screenshots');

/** At `width` px the page does not scroll sideways, and a full-page screenshot is saved as `<name>-<width>.png`. */
export async function checkWidth(page: Page, name: string, width: number): Promise<void> {
  await page.setViewportSize({ width, height: 900 });
  // Two frames: what redraws on a resize (the experts canvas) has redrawn.
  const { scroll, inner } = await page.evaluate(async () => {
    for (let i = 0; i < 2; i++) await new Promise(requestAnimationFrame);
    return { scroll: document.scrollingElement!.scrollWidth, inner: innerWidth };
  });
  expect(scroll, `${name} at ${width} px: scrollWidth ${scroll} > innerWidth ${inner}`).toBeLessThanOrEqual(inner);
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}-${width}.png`);
  await page.screenshot({ path, fullPage: true });
  await test.info().attach(`${name}-${width}`, { path, contentType: 'image/png' });
}
