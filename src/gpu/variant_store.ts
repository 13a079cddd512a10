// Where measured choices are remembered per adapter: a key-value store of strings (localStorage
// on a page, memory in a Worker or in Node). The kernel variants (kernels/variant_choice.ts) and
// speculative 'auto''s step costs (runtime/speculation_policy.ts) keep their measurements here.

/** Where choices are remembered: a key-value store of strings (localStorage in a browser). */
export interface VariantStore {
  get(key: string): string | undefined;
  set(key: string, value: string): void;
}

/** A store for this process only (Node, tests, or a browser without usable localStorage). */
export function memoryVariantStore(): VariantStore {
  const map = new Map<string, string>();
  return { get: (key) => map.get(key), set: (key, value) => void map.set(key, value) };
}

/** The minimal part of the Web Storage API used here. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** A store over Web Storage; a failing write (quota, private mode) only loses the memory of it. */
export function webStorageStore(storage: StorageLike): VariantStore {
  return {
    get: (key) => storage.getItem(key) ?? undefined,
    set: (key, value) => {
      try {
        storage.setItem(key, value);
      } catch {
        // Not remembered: the next session measures again.
      }
    },
  };
}

/** localStorage where the page has it (reading it can throw in sandboxed frames), else memory. */
let processStore: VariantStore | undefined;

/** The store the engines of this page or process share (measured once per adapter and shape). */
export function processVariantStore(): VariantStore {
  return (processStore ??= defaultVariantStore());
}

export function defaultVariantStore(): VariantStore {
  try {
    const storage = (globalThis as { localStorage?: StorageLike }).localStorage;
    if (storage && typeof storage.getItem === 'function') {
      storage.getItem('webmoe.variant.probe');
      return webStorageStore(storage);
    }
  } catch {
    // Fall through to memory.
  }
  return memoryVariantStore();
}

