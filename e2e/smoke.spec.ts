import { expect, test } from '@playwright/test';

// WebGPU in Debian's chromium on SwiftShader: the page gets an adapter and runs one of our kernels
// (RMSNorm over a 7x301 odd shape), checked against the CPU reference in the page.
test('the page gets a WebGPU adapter and a kernel matches its CPU reference', async ({ page }) => {
  await page.goto('/?autoload=0'); // the GPU line only: no checkpoint
  const status = page.locator('#gpu-status');
  await expect(status).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await expect(page.locator('#self-check')).toHaveAttribute('data-ok', 'true');
  await expect(status).toContainText('self-check rmsnorm [7x301]: passed');
});

test('a browser without WebGPU gets a clear message, not a blank page', async ({ page }) => {
  await page.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true });
  });
  await page.goto('/');
  const status = page.locator('#gpu-status');
  await expect(status).toHaveAttribute('data-state', 'none', { timeout: 30_000 });
  await expect(status).toContainText('WebGPU is not available here');
  await page.locator('#load-url').click();
  await expect(page.locator('#error')).toBeVisible();
});
