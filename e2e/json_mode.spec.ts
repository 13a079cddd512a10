import { expect, test } from '@playwright/test';

// The demo's JSON mode, in the engine's Worker on SwiftShader: the switch shows the schema box with
// its example schema, and a reply in JSON mode (constrained decoding with xgrammar, loaded in the
// Worker through the bundler) parses, its object shown beside the reply and following the schema.

test('JSON mode: the reply follows the example schema and its parsed object is shown', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('#chat-box')).toBeVisible({ timeout: 90_000 });
  await expect(page.locator('#json-schema-field')).toBeHidden();
  await page.locator('#json-mode').check();
  await expect(page.locator('#json-schema-field')).toBeVisible();
  const schema = JSON.parse(await page.locator('#json-schema').inputValue()) as { required: string[] };
  expect(schema.required).toEqual(['name', 'age', 'tribe']);

  await page.locator('#temperature').fill('0');
  await page.locator('#max-tokens').fill('60');
  await page.locator('#prompt').fill('Who was Aaron?');
  await page.locator('#prompt').press('Enter');
  const answer = page.locator('#messages .message-assistant').last();
  await expect(answer).toHaveAttribute('data-state', 'done', { timeout: 90_000 });
  const parsed = answer.locator('.parsed');
  await expect(parsed).toHaveAttribute('data-valid', 'true');
  const value = JSON.parse(await parsed.innerText()) as { name: string; age: number; tribe: string };
  expect(JSON.parse(await answer.locator('.text').innerText())).toEqual(value);
  expect(typeof value.name).toBe('string');
  expect(Number.isInteger(value.age) && value.age >= 0 && value.age <= 120).toBe(true);
  expect(['Judah', 'Levi', 'Benjamin']).toContain(value.tribe);

  // A schema box that is not JSON is refused in plain words, before anything runs.
  await page.locator('#json-schema').fill('{ not json');
  await page.locator('#prompt').fill('Again');
  await page.locator('#prompt').press('Enter');
  await expect(page.locator('body')).toContainText('The JSON schema box is not valid JSON');
});
