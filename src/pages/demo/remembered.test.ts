import { describe, expect, it } from 'vitest';
import { folderName, recall, remember } from './remembered.ts';

function memoryStore() {
  const map = new Map<string, string>();
  return { getItem: (k: string) => map.get(k) ?? null, setItem: (k: string, v: string) => void map.set(k, v), map };
}

describe('the remembered checkpoint', () => {
  it('gives back the last URL or folder name', () => {
    const store = memoryStore();
    expect(recall(store)).toBeUndefined();
    remember({ kind: 'url', url: 'https://example.org/models/x/' }, store);
    expect(recall(store)).toEqual({ kind: 'url', url: 'https://example.org/models/x/' });
    remember({ kind: 'folder', name: 'my-model' }, store);
    expect(recall(store)).toEqual({ kind: 'folder', name: 'my-model' });
  });

  it('ignores what it did not write: broken JSON, other shapes, URLs that are not http(s)', () => {
    for (const stored of ['{', '42', '{"kind":"url","url":"javascript:alert(1)"}', '{"kind":"folder"}', '{"kind":"other"}']) {
      const store = memoryStore();
      store.map.set('webmoe.demo.lastModel', stored);
      expect(recall(store)).toBeUndefined();
    }
    expect(recall(undefined)).toBeUndefined();
  });

  it('survives a store that throws', () => {
    const broken = { getItem: () => { throw new Error('blocked'); }, setItem: () => { throw new Error('full'); } };
    expect(() => remember({ kind: 'url', url: 'https://x/' }, broken)).not.toThrow();
    expect(recall(broken)).toBeUndefined();
  });

  it("names a picked folder by its files' relative paths", () => {
    const file = (path: string) => Object.assign(new File([], path.split('/').at(-1)!), { webkitRelativePath: path });
    expect(folderName([file('kjv/config.json'), file('kjv/model.safetensors')])).toBe('kjv');
  });
});
