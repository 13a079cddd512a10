import { expect, test } from '@playwright/test';

// The kernel benchmark page runs its quick suite on SwiftShader and shows figures for every kernel.
test('the kernel benchmark page runs and shows numbers', async ({ page }) => {
  await page.goto('/bench/');
  await expect(page.locator('#adapter')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await page.locator('#shapes').selectOption('small');
  await page.locator('#run').click();
  await expect(page.locator('#progress')).toHaveAttribute('data-state', 'done', { timeout: 150_000 });
  const rows = page.locator('#results tr');
  expect(await rows.count()).toBeGreaterThan(4);
  await expect(page.locator('#results')).toContainText('gemv_fp8');
  await expect(page.locator('#peers')).toContainText('tfjs_webgpu_matmul_f32');
  await expect(page.locator('#decode-cost')).toContainText(/gemm_fp8.*M=130 K=256 N=384.*%/);
  await expect(page.locator('#ceilings')).toContainText(/copy \d+(\.\d+)? GB\/s/);
  // Every timed kernel has a positive time.
  const times = await page.locator('#results tr td:nth-child(4)').allTextContents();
  expect(times.length).toBeGreaterThan(3);
  for (const t of times) expect(Number(t)).toBeGreaterThan(0);
  await page.screenshot({ path: test.info().outputPath('bench.png'), fullPage: true });
  await expect(page.locator('#export')).toBeEnabled();
});
