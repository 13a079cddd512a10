// The last checkpoint this browser loaded, kept in localStorage so that the next visit opens it by
// itself: a URL is loaded again; a folder from this computer cannot be reopened by a page without
// the visitor picking it, so only its name is kept, to say so.

export type Remembered = { kind: 'url'; url: string } | { kind: 'folder'; name: string };

const KEY = 'webmoe.demo.lastModel';

type Store = Pick<Storage, 'getItem' | 'setItem'>;

/** localStorage, or undefined where it is unavailable (storage blocked, some private modes). */
function defaultStore(): Store | undefined {
  try {
    return globalThis.localStorage ?? undefined;
  } catch {
    return undefined;
  }
}

export function recall(store: Store | undefined = defaultStore()): Remembered | undefined {
  let value: unknown;
  try {
    value = JSON.parse(store?.getItem(KEY) ?? 'null');
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (v.kind === 'url' && typeof v.url === 'string' && /^https?:\/\//.test(v.url)) return { kind: 'url', url: v.url };
  if (v.kind === 'folder' && typeof v.name === 'string') return { kind: 'folder', name: v.name };
  return undefined;
}

export function remember(choice: Remembered, store: Store | undefined = defaultStore()): void {
  try {
    store?.setItem(KEY, JSON.stringify(choice));
  } catch {
    // Full or blocked storage: the next visit starts from the shipped checkpoint.
  }
}

/** The folder a picked file list came from ("webmoe-kjv-12m"), from the first file's relative path. */
export function folderName(files: ArrayLike<File>): string {
  const first = files[0] as (File & { webkitRelativePath?: string }) | undefined;
  return first?.webkitRelativePath?.split('/')[0] || first?.name || 'a folder';
}
