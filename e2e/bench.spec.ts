import { readFileSync } from 'node:fs';
import { expect, test, type Page } from '@playwright/test';
import { checkWidth } from './layout.ts';

// The benchmark page on SwiftShader: the quick kernel suite with its progress bar, the roofline
// (one point per kernel), tables with a unit in every figure, then the decode benchmark of the
// shipped checkpoint with the model-level peer, the JSON export of both, the same with the routed
// experts offloaded (2 slots per layer: the offload rows), and no sideways scrolling
// at 1280 and 360 px. One page for all tests; screenshots go to test-results/screenshots/.
test.describe.configure({ mode: 'serial' });

let page: Page;

test.beforeAll(async ({ browser }) => {
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto('/bench/');
  await expect(page.locator('#adapter')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
});

test.afterAll(async () => {
  await page.close();
});

test('the kernels run with a progress bar, and the roofline has one point per kernel', async () => {
  await expect(page.locator('#adapter-note')).toContainText('running WebGPU on the CPU');
  await page.locator('#shapes').selectOption('small');
  await page.locator('#run').click();
  await expect(page.locator('#case-progress')).toBeVisible();
  await expect(page.locator('#progress')).toContainText(/case \d+ of \d+/, { timeout: 30_000 });
  await expect(page.locator('#progress')).toHaveAttribute('data-state', 'done', { timeout: 150_000 });
  expect(await page.locator('#case-progress').evaluate((p: HTMLProgressElement) => [p.value === p.max, p.max > 4])).toEqual([true, true]);

  const rows = page.locator('#results tbody tr');
  const kernels = await rows.count();
  expect(kernels).toBeGreaterThan(4);
  const points = page.locator('#roofline g.point');
  await expect(points).toHaveCount(kernels);
  await expect(points.first().locator('title')).toHaveText(/^#1 \S+ .*: [\d.,]+ GB\/s, [\d.,e-]+ GFLOP\/s, .* of the FMA ceiling$/);
  await expect(page.locator('#roofline .roof')).toHaveCount(1);

  // A unit in every figure: times, rates, fractions of the ceilings (also beside each bar).
  const column = (label: string) => page.locator(`#results td[data-label="${label}"]`).allTextContents();
  for (const t of await column('time')) expect(t).toMatch(/^[\d.,]+ ms(GPU timestamps|wall clock), \d+ runs$/);
  for (const t of await column('bandwidth')) expect(t).toMatch(/^[\d.,e-]+ GB\/s$/);
  for (const t of await column('compute')) expect(t).toMatch(/^[\d.,e-]+ GFLOP\/s$/);
  for (const t of await column('of copy')) expect(t).toMatch(/^[\d.,e-]+ %$/);
  await expect(page.locator('#chart .ceiling-value.copy')).toHaveCount(kernels);
  await expect(page.locator('#chart .ceiling-value.fma').first()).toHaveText(/^[\d.,e-]+ % of FMA$/);
  await expect(page.locator('#peers')).toContainText('tfjs_webgpu_matmul_f32');
  await expect(page.locator('#decode-cost')).toContainText(/gemm_fp8.*M=130 K=256 N=384.*%/);
  await expect(page.locator('#ceilings')).toContainText(/copy [\d.]+ GB\/s/);
});

test('the decode benchmark: tok/s with and without MTP, dispatches per token, the bytes floor, the model-level peer', async () => {
  await page.locator('#run-decode').click();
  await expect(page.locator('#decode-progress')).toHaveAttribute('data-state', 'done', { timeout: 170_000 });
  const figure = (id: string) => page.locator(`#decode-figures [data-figure=${id}] dd`).first();
  await expect(figure('plain')).toHaveText(/^[\d.]+ tok\/s$/);
  await expect(figure('mtp')).toHaveText(/^[\d.]+ tok\/s$/);
  await expect(figure('dispatches')).toHaveText(/^\d+ plain · [\d.]+ with MTP$/);
  await expect(figure('cpu')).toHaveText(/^[\d.]+ ms plain · [\d.]+ ms with MTP$/);
  await expect(figure('gpu')).toHaveText(/^[\d.]+ ms plain · [\d.]+ ms with MTP$/); // SwiftShader has timestamps
  await expect(page.locator('#decode-figures [data-figure=floor]')).toContainText(/MiB of weights per token at [\d.]+ GB\/s copy/);
  // The model-level peer beside the kernel-level one.
  const peer = page.locator('#model-peer');
  await expect(peer).toBeVisible();
  await expect(peer).toContainText('the whole decode step');
  await expect(peer).toContainText(/tfjs_webgpu_matmul_f32.*its 98 matrix products only/);
  // Every expert resident (the slots field empty): no offload rows.
  await expect(page.locator('#decode-offload-box')).toBeHidden();
  await expect(page.locator('#decode-offload tr')).toHaveCount(0);

  // The JSON export: the kernel report as the CLI prints it, with the decode report beside it.
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#export').click()]);
  const json = JSON.parse(readFileSync((await download.path())!, 'utf8'));
  expect(json.kernels.length).toBeGreaterThan(4);
  expect(json.decode.dispatches_per_token).toBeGreaterThan(10);
  expect(json.decode.bytes_floor.bytes_per_token).toBeGreaterThan(0);
  expect(json.decode.model_peer.matmuls_per_token).toBe(98);
  expect(json.decode.offload).toBeNull();
});

test('with 2 expert slots per layer the decode table has the offload rows, and the export their figures', async () => {
  // Quick (the checkbox is still on) and without the TF.js peer, to keep it short.
  await page.locator('#expert-slots').fill('2');
  await page.locator('#decode-peer').uncheck();
  await page.locator('#run-decode').click();
  await expect(page.locator('#decode-progress')).toContainText('with 2 expert slots per layer', { timeout: 30_000 });
  await expect(page.locator('#decode-progress')).toHaveAttribute('data-state', 'done', { timeout: 120_000 });
  await expect(page.locator('#decode-offload-box')).toBeVisible();
  // A row's cell for a mode, as its figure and its note (the smaller line under it); the model has
  // 16 routed experts per layer and an MTP module.
  const cell = (row: string, mode = 'plain decoding') =>
    page
      .locator('#decode-offload tbody tr', { has: page.locator('td[data-label="figure"]', { hasText: new RegExp(`^${row}`) }) })
      .locator(`td[data-label="${mode}"]`)
      .evaluate((td) => ({ figure: td.firstChild?.textContent ?? '', note: td.querySelector('.note')?.textContent ?? null }));
  expect(await cell('Routed experts on the GPU')).toEqual({ figure: '2 of 16 per layer', note: null });
  expect((await cell('Cache hit rate')).figure).toMatch(/^[\d.,]+ %$/);
  expect((await cell('Cache hit rate', 'MTP speculative')).figure).toMatch(/^[\d.,]+ %$/);
  expect((await cell('Uploaded')).figure).toMatch(/^[\d.,]+ (B|KiB|MiB) per token$/);
  expect((await cell('Waiting for the router')).figure).toMatch(/^[\d.,e-]+ ms per token$/);
  expect(await cell('Bytes model')).toEqual({ figure: expect.stringMatching(/^[\d.,e-]+ ms per token$/), note: expect.stringMatching(/^floor [\d.,e-]+ ms \+ uploads [\d.,e-]+ ms$/) });
  expect(await cell('Measured')).toEqual({ figure: expect.stringMatching(/^[\d.,]+ ms per token$/), note: expect.stringMatching(/^[\d.,]+× the prediction$/) });
  const bandwidth = await cell('Upload bandwidth');
  expect(bandwidth).toEqual({ figure: expect.stringMatching(/^[\d.,e-]+ GB\/s$/), note: expect.stringMatching(/^writeBuffer in chunks of one expert \([\d.,]+ KiB\)$/) });
  expect(Number.parseFloat(bandwidth.figure.replace(/,/g, ''))).toBeGreaterThan(0);
  // Two slots cannot hold the 4 experts each token routes to in a layer: every token misses.
  const misses = (await cell('Misses')).figure;
  expect(misses).toMatch(/^[\d.,]+ per token$/);
  expect(Number.parseFloat(misses)).toBeGreaterThan(0);

  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#export').click()]);
  const { decode } = JSON.parse(readFileSync((await download.path())!, 'utf8'));
  expect(decode.offload).toMatchObject({ expert_slots: 2, n_routed_experts: 16 });
  expect(decode.offload.upload_bandwidth_gb_s).toBeGreaterThan(0);
  expect(decode.offload.hit_rate).toBeGreaterThanOrEqual(0);
});

test('no horizontal scrolling at 1280 and 360 px', async () => {
  await checkWidth(page, 'bench', 1280);
  await checkWidth(page, 'bench', 360);
});
