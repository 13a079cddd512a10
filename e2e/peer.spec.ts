import { expect, test } from '@playwright/test';
import { checkWidth } from './layout.ts';

// The benchmark page's model-level peer on SwiftShader: the shipped checkpoint in webmoe and, as the
// ONNX export of tools/peer/, in onnxruntime-web's WebGPU provider, both in this Chromium, at the
// quick size (one prompt, 6 greedy tokens). Both engines' prefill and decode rates are shown, and
// the greedy tokens agree up to a disagreement where the top two logits were within 0.01; the page
// does not scroll sideways at 1280 and 360 px.
test('the onnxruntime-web peer: tok/s of both engines and the same greedy tokens', async ({ page }) => {
  const messages: string[] = [];
  page.on('console', (m) => messages.push(`${m.type()}: ${m.text()}`));
  await page.goto('/bench/');
  await expect(page.locator('#adapter')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
  await expect(page.locator('#quick')).toBeChecked();
  // A file edited under the dev server reloads the page (a working tree shared with other editors): say so.
  let reloads = 0;
  page.on('framenavigated', (f) => void (f === page.mainFrame() && reloads++));
  await page.locator('#run-peer').click();
  await expect(page.locator('#peer-progress')).toHaveAttribute('data-state', /done|failed/, { timeout: 120_000 }).catch((err) => {
    throw reloads ? new Error(`the dev server reloaded the page ${reloads} time(s) during the run (a source file changed); run again`) : err;
  });
  const failure = (await page.locator('#error').isVisible()) ? await page.locator('#error').textContent() : '';
  expect(failure, messages.slice(-20).join('\n')).toBe('');

  const rows = page.locator('#ort-peer tbody tr');
  await expect(rows).toHaveCount(2);
  for (const [i, name] of ['webmoe', 'onnxruntime-web'].entries()) {
    const row = rows.nth(i);
    await expect(row.locator('td[data-label=engine]')).toHaveText(name);
    await expect(row.locator('td[data-label=prefill]')).toHaveText(/^[\d.,]+ tok\/s\d+ prompt tokens in [\d.,]+ ms$/);
    await expect(row.locator('td[data-label=decode]')).toHaveText(/^[\d.,]+ tok\/s5 tokens in [\d.,]+ ms$/);
  }
  await expect(rows.nth(1).locator('td[data-label=runs]')).toContainText('native WebGPU provider');
  // Where ORT put the nodes: most on its WebGPU provider, shape arithmetic on the CPU.
  await expect(page.locator('#ort-peer-note')).toContainText(/1 prompt, 6 greedy tokens each.*Placement: \d+ nodes on WebGpuExecutionProvider, \d+ on CPUExecutionProvider \(/);

  const agreement = page.locator('#ort-agreement li');
  await expect(agreement).toHaveCount(1);
  await expect(agreement.first()).toHaveAttribute('data-agree', 'true');
  await expect(page.locator('#ort-peer-box')).toHaveAttribute('data-agree', 'true');
  // The shipped model's first tokens on this prompt have clear margins: at least the first 4 agree.
  expect(Number(await agreement.first().getAttribute('data-agreeing'))).toBeGreaterThanOrEqual(4);

  // The filled section scrolls no page sideways.
  await checkWidth(page, 'bench-peer', 1280);
  await checkWidth(page, 'bench-peer', 360);
});
