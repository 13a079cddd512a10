// JSON.parse keeps the last of two equal keys in one object and says nothing, so a safetensors
// header could describe one tensor twice and be read differently by different loaders. This scan
// finds such a key. It runs on text that JSON.parse has already accepted, so it only needs to
// tell keys from values: strings, brackets, commas and colons.

/** A key met twice in one object, and the keys of the objects around it (outermost first; arrays add none). */
export interface DuplicateKey {
  readonly key: string;
  readonly path: readonly string[];
}

const BACKSLASH = 0x5c;

/** The first duplicate key of a valid JSON text, or undefined when every object's keys differ. */
export function findDuplicateKey(json: string): DuplicateKey | undefined {
  // One entry per open object (its keys so far) or array (null), and each object's latest key.
  const open: (Set<string> | null)[] = [];
  const latest: (string | undefined)[] = [];
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      const end = stringEnd(json, i);
      const keys = open[open.length - 1];
      if (expectKey && keys) {
        const raw = json.slice(i, end + 1);
        // Decode escapes, so that "a" and "\u0061" are the same key, as JSON.parse sees them.
        const key = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        if (keys.has(key)) return { key, path: latest.slice(0, open.length - 1).filter((k) => k !== undefined) };
        keys.add(key);
        latest[open.length - 1] = key;
        expectKey = false;
      }
      i = end;
    } else if (c === '{') {
      open.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      open.push(null);
      latest[open.length - 1] = undefined;
      expectKey = false;
    } else if (c === '}' || c === ']') {
      open.pop();
      latest.length = open.length;
      expectKey = false;
    } else if (c === ',') {
      expectKey = open[open.length - 1] != null;
    }
  }
  return undefined;
}

/** Index of the quote closing the string that opens at `start`. */
function stringEnd(json: string, start: number): number {
  let at = start + 1;
  for (;;) {
    const quote = json.indexOf('"', at);
    if (quote < 0) return json.length; // unterminated: not valid JSON, and nothing left to scan
    // An escaped quote has an odd run of backslashes before it.
    let slashes = 0;
    while (json.charCodeAt(quote - 1 - slashes) === BACKSLASH) slashes++;
    if (slashes % 2 === 0) return quote;
    at = quote + 1;
  }
}
