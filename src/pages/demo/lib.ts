// The page imports the package's public entry, as an app that installed webmoe would, plus two
// formatting helpers of its own.
export * from '../../index.ts';

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${bytes.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** A checkpoint's name for sentences: the last folder of a URL ("webmoe-kjv-12m"), else as given. */
export function shortName(description: string): string {
  try {
    const parts = new URL(description).pathname.split('/').filter(Boolean);
    return parts.at(-1) ?? description;
  } catch {
    return description;
  }
}
