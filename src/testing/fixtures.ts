// Paths of shared test fixtures. The project's checkout sits beside shared/ (as on CI):
// ../shared/fixtures/dsv3-tiny-official holds a tiny checkpoint in the released layout and what
// DeepSeek's official inference code computes on it.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const OFFICIAL_FIXTURE = resolve(REPO_ROOT, '../shared/fixtures/dsv3-tiny-official');

/** The fixture folder; a clear error when shared/ is not beside the checkout. */
export function officialFixture(sub = ''): string {
  const path = resolve(OFFICIAL_FIXTURE, sub);
  if (!existsSync(path)) throw new Error(`test fixture ${path} is missing: these tests need the project's shared/ folder beside the checkout`);
  return path;
}

let reference: unknown;
/** reference.json of the official fixture (3 MB, parsed once per test file). */
export function officialReference<T = any>(): T {
  reference ??= JSON.parse(readFileSync(officialFixture('reference.json'), 'utf8'));
  return reference as T;
}
