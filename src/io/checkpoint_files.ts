// Resolve a checkpoint folder in the Hugging Face layout into one table of tensors:
// config.json, then model.safetensors.index.json (sharded) or model.safetensors (one file).
// Only these standard names are looked for; other *.safetensors files are ignored, so a folder
// with stray files loads the same as the release. When both exist the index wins.
// The index and the shards must agree exactly: a loader that trusted either alone could
// read a tensor from the wrong file (the official DeepSeek-V3 shards split a weight from its
// weight_scale_inv, so every tensor is looked up, never assumed to sit beside another).

import { CheckpointError, MissingFileError, throwIfAborted } from '../errors.ts';
import { readSafetensorsHeader, type Dtype, type SafetensorsHeader, type TensorInfo } from './safetensors.ts';
import { TEXT_FILE_MAX_BYTES, type ByteSource, type CheckpointDir } from './sources.ts';

export const CONFIG_FILE = 'config.json';
export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/** A checkpoint folder, resolved and validated. */
export interface Checkpoint {
  readonly dir: CheckpointDir;
  /** config.json as text; src/config.ts parses it. */
  readonly configText: string;
  readonly layout: 'sharded' | 'single';
  /** The safetensors files, in name order. */
  readonly files: readonly string[];
  /** An open source per file, keyed like TensorInfo.file. */
  readonly sources: ReadonlyMap<string, ByteSource>;
  /** Every tensor, by checkpoint name, in file then offset order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Sum of all tensor bytes. */
  readonly totalBytes: number;
  readonly bytesByDtype: Readonly<Partial<Record<Dtype, number>>>;
}

export interface OpenCheckpointOptions {
  signal?: AbortSignal;
  /** Shard headers read at once (each is one or two small requests over HTTP). */
  concurrency?: number;
}

/** Read config.json and every safetensors header of a checkpoint folder, and check they agree. */
export async function openCheckpoint(dir: CheckpointDir, options: OpenCheckpointOptions = {}): Promise<Checkpoint> {
  const { signal } = options;
  const configText = await dir.readText(CONFIG_FILE, signal, TEXT_FILE_MAX_BYTES[CONFIG_FILE]);
  let layout: Checkpoint['layout'];
  let headers: SafetensorsHeader[];
  let sources: Map<string, ByteSource>;
  if (await dir.exists(INDEX_FILE, signal)) {
    layout = 'sharded';
    const index = parseIndex(await dir.readText(INDEX_FILE, signal, TEXT_FILE_MAX_BYTES[INDEX_FILE]));
    const files = [...new Set(index.weightMap.values())].sort();
    ({ headers, sources } = await readHeaders(dir, files, options, `${dir.description} (named in ${INDEX_FILE})`));
    checkAgainstIndex(index.weightMap, headers);
    const total = sumBytes(headers);
    if (index.totalSize !== undefined && index.totalSize !== total) {
      throw new CheckpointError(`metadata.total_size is ${index.totalSize}, but the shards' tensors hold ${total} bytes`, INDEX_FILE);
    }
  } else if (await dir.exists(SINGLE_FILE, signal)) {
    layout = 'single';
    ({ headers, sources } = await readHeaders(dir, [SINGLE_FILE], options, dir.description));
  } else {
    throw new MissingFileError(`${INDEX_FILE} or ${SINGLE_FILE}`, dir.description);
  }

  const tensors = new Map<string, TensorInfo>();
  const bytesByDtype: Partial<Record<Dtype, number>> = {};
  for (const header of headers) {
    for (const [name, info] of header.tensors) {
      // Within one layout a name can appear once; checkAgainstIndex reported sharded duplicates.
      tensors.set(name, info);
      bytesByDtype[info.dtype] = (bytesByDtype[info.dtype] ?? 0) + info.byteLength;
    }
  }
  return { dir, configText, layout, files: headers.map((h) => h.file), sources, tensors, totalBytes: sumBytes(headers), bytesByDtype };
}

/** A tensor the model needs; its absence is a CheckpointError naming it. */
export function getTensor(checkpoint: Checkpoint, name: string): TensorInfo {
  const info = checkpoint.tensors.get(name);
  if (!info) throw new CheckpointError(`tensor "${name}" is missing from the checkpoint in ${checkpoint.dir.description}`);
  return info;
}

interface Index {
  weightMap: Map<string, string>;
  totalSize: number | undefined;
}

function parseIndex(text: string): Index {
  const bad = (what: string) => new CheckpointError(what, INDEX_FILE);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw bad(`not valid JSON (${(cause as Error).message})`);
  }
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObject(json)) throw bad('must be a JSON object with "weight_map"');
  if (!isObject(json.weight_map)) throw bad('"weight_map" must be an object {tensor name: file name}');
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(json.weight_map)) {
    // Bare names only: the index must not point outside the checkpoint folder.
    if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || /[/\\]/.test(file)) {
      throw bad(`weight_map["${name}"] must be a file name in the same folder, got ${JSON.stringify(file)}`);
    }
    weightMap.set(name, file);
  }
  if (weightMap.size === 0) throw bad('"weight_map" is empty');
  let totalSize: number | undefined;
  if (json.metadata !== undefined) {
    if (!isObject(json.metadata)) throw bad('"metadata" must be an object');
    const t = json.metadata.total_size;
    if (t !== undefined && !(typeof t === 'number' && Number.isSafeInteger(t) && t >= 0)) {
      throw bad(`metadata.total_size must be a non-negative integer, got ${JSON.stringify(t)}`);
    }
    totalSize = t;
  }
  return { weightMap, totalSize };
}

async function readHeaders(dir: CheckpointDir, files: string[], options: OpenCheckpointOptions, where: string) {
  const sources = new Map<string, ByteSource>();
  const headers = await mapLimit(files, options.concurrency ?? 8, async (file) => {
    let source: ByteSource;
    try {
      source = await dir.open(file, options.signal);
    } catch (e) {
      if (e instanceof MissingFileError) throw new MissingFileError(file, where);
      throw e;
    }
    sources.set(file, source);
    return readSafetensorsHeader(source, options.signal);
  }, options.signal);
  return { headers, sources };
}

function checkAgainstIndex(weightMap: Map<string, string>, headers: SafetensorsHeader[]): void {
  const seenIn = new Map<string, string>();
  for (const { file, tensors } of headers) {
    for (const name of tensors.keys()) {
      const other = seenIn.get(name);
      if (other) throw new CheckpointError(`tensor "${name}" is in both ${other} and ${file}`, INDEX_FILE);
      seenIn.set(name, file);
    }
  }
  for (const [name, file] of seenIn) {
    const mapped = weightMap.get(name);
    if (mapped === undefined) throw new CheckpointError(`tensor "${name}" is in ${file} but not in weight_map`, INDEX_FILE);
    if (mapped !== file) throw new CheckpointError(`tensor "${name}" is in ${file}, but weight_map puts it in ${mapped}`, INDEX_FILE);
  }
  for (const [name, file] of weightMap) {
    if (!seenIn.has(name)) throw new CheckpointError(`weight_map puts tensor "${name}" in ${file}, which does not contain it`, INDEX_FILE);
  }
}

function sumBytes(headers: SafetensorsHeader[]): number {
  let total = 0;
  for (const h of headers) for (const t of h.tensors.values()) total += t.byteLength;
  return total;
}

/** Run `fn` over `items` with at most `limit` at once, results in input order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>, signal?: AbortSignal): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      throwIfAborted(signal);
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  return results;
}
