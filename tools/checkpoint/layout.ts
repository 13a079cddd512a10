// The files of a generated checkpoint before any tensor byte exists: which tensors each
// safetensors file holds, in which order, at which offsets, its header bytes, and the index.
// Everything follows from config.json (src/model/weights.ts `expectedTensors`), so a real-size
// header costs milliseconds and a writer can stream the bytes after it (stream.ts).
//
// Inside a file: F32 first, then 2-byte, then 1-byte dtypes (module order within each), so every
// tensor starts at a multiple of its element size after the 8-byte-aligned header.

import { parseConfig, type DeepseekV3Config } from '../../src/config.ts';
import { ArgumentError } from '../../src/errors.ts';
import { expectedTensors, scaleInvName, type WeightClass } from '../../src/model/weights.ts';

export type GeneratedDtype = 'F8_E4M3' | 'BF16' | 'F32' | 'F16';

/** A tensor of the generated checkpoint, as a header describes it. */
export interface PlannedTensor {
  readonly name: string;
  readonly dtype: GeneratedDtype;
  readonly shape: readonly number[];
  readonly byteLength: number;
  /** Rows as tensor bands count them: shape[0] of a matrix, 1 for a vector. */
  readonly rows: number;
  /** An FP8 weight: the name of its `_scale_inv`, which its bands carry. */
  readonly scaleInv?: string;
  /** A `_scale_inv`: the FP8 weight whose bands carry it. */
  readonly scaleOf?: string;
}

export interface FileLayout {
  /** model.safetensors, or model-0000k-of-0000N.safetensors. */
  readonly name: string;
  /** The 8-byte length and the padded JSON: the file's first `header.byteLength` bytes. */
  readonly header: Uint8Array;
  /** The whole file's size. */
  readonly size: number;
  /** The tensors in file order. */
  readonly tensors: readonly PlannedTensor[];
  /** Absolute offset in the file of each tensor's first byte. */
  readonly offsets: ReadonlyMap<string, number>;
}

export interface CheckpointLayout {
  readonly config: DeepseekV3Config;
  /** config.json's bytes: the given object, pretty-printed. */
  readonly configJson: Uint8Array;
  /** Every tensor in module order (the order they are generated in). */
  readonly tensors: readonly PlannedTensor[];
  readonly files: readonly FileLayout[];
  /** model.safetensors.index.json's bytes when sharded, else null. */
  readonly index: Uint8Array | null;
  /** The file of each tensor. */
  readonly fileOf: ReadonlyMap<string, FileLayout>;
  /** Sum of the tensors' bytes (the index's metadata.total_size). */
  readonly tensorBytes: number;
  /** Sum of the safetensors files' sizes. */
  readonly fileBytes: number;
}

export interface LayoutOptions {
  /** Exactly this many safetensors files, near equal in size (1: model.safetensors, no index). */
  readonly shards?: number;
  /** Without `shards`: files of at most this many bytes of tensors, filled in order (default 4 GiB; see sizeCuts). */
  readonly maxShardBytes?: number;
}

export const DEFAULT_MAX_SHARD_BYTES = 4 * 2 ** 30;
export const INDEX_FILE = 'model.safetensors.index.json';

const RELEASE_DTYPE = { fp8: 'F8_E4M3', bf16: 'BF16', f32: 'F32' } as const satisfies Record<WeightClass, GeneratedDtype>;
const DTYPE_BYTES = { F8_E4M3: 1, BF16: 2, F16: 2, F32: 4 } as const satisfies Record<GeneratedDtype, number>;

/** The generated tensors in module order, from the config alone. */
export function plannedTensors(config: DeepseekV3Config): PlannedTensor[] {
  const out: PlannedTensor[] = [];
  for (const [name, spec] of expectedTensors(config)) {
    const dtype = RELEASE_DTYPE[spec.dtype];
    const shape = spec.shape;
    const byteLength = (shape.length === 2 ? shape[0] * shape[1] : shape[0]) * DTYPE_BYTES[dtype];
    const rows = shape.length === 2 ? shape[0] : 1;
    if (spec.kind === 'scale_inv') out.push({ name, dtype, shape, byteLength, rows, scaleOf: name.slice(0, -'_scale_inv'.length) });
    else if (spec.dtype === 'fp8') out.push({ name, dtype, shape, byteLength, rows, scaleInv: scaleInvName(name) });
    else out.push({ name, dtype, shape, byteLength, rows });
  }
  return out;
}

/** Plan every file of the checkpoint `rawConfig` describes. */
export function planCheckpoint(rawConfig: Record<string, unknown>, options: LayoutOptions = {}): CheckpointLayout {
  const config = parseConfig(rawConfig, 'the generator config');
  const tensors = plannedTensors(config);
  const tensorBytes = tensors.reduce((sum, t) => sum + t.byteLength, 0);
  let inner: number[];
  if (options.shards !== undefined) {
    const shards = options.shards;
    if (!Number.isInteger(shards) || shards < 1) throw new ArgumentError(`shards must be a positive integer, got ${shards}`);
    if (shards > tensors.length) throw new ArgumentError(`${shards} shards for ${tensors.length} tensors: at most one shard per tensor`);
    inner = shardCuts(tensors, shards);
  } else {
    inner = sizeCuts(tensors, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  }
  const cuts = [0, ...inner, tensors.length];
  const shards = cuts.length - 1;
  const files: FileLayout[] = [];
  for (let k = 0; k < shards; k++) {
    const name = shards === 1 ? 'model.safetensors' : `model-${pad5(k + 1)}-of-${pad5(shards)}.safetensors`;
    files.push(fileLayout(name, tensors.slice(cuts[k], cuts[k + 1])));
  }
  const fileOf = new Map<string, FileLayout>();
  for (const f of files) for (const t of f.tensors) fileOf.set(t.name, f);
  return {
    config,
    configJson: jsonBytes(rawConfig),
    tensors,
    files,
    index: shards === 1 ? null : indexJson(tensors, fileOf, tensorBytes),
    fileOf,
    tensorBytes,
    fileBytes: files.reduce((sum, f) => sum + f.size, 0),
  };
}

/**
 * Cuts for files of at most `maxBytes` of tensors, filled in module order as transformers'
 * `save_pretrained(max_shard_size=...)` fills them: a tensor that would take a file over the limit
 * starts the next one (a tensor over the limit alone has a file of its own).
 */
export function sizeCuts(tensors: readonly { readonly byteLength: number }[], maxBytes: number): number[] {
  if (!(maxBytes > 0)) throw new ArgumentError(`maxShardBytes must be a positive number of bytes, got ${maxBytes}`);
  const cuts: number[] = [];
  let inFile = 0;
  tensors.forEach((t, i) => {
    if (i > 0 && inFile + t.byteLength > maxBytes) {
      cuts.push(i);
      inFile = 0;
    }
    inFile += t.byteLength;
  });
  return cuts;
}

/**
 * Shard boundaries (indices into `tensors`, module order), each near an equal share of the bytes.
 * A cut is moved forward to the next place that separates an FP8 weight from its scale_inv, so a
 * loader must use weight_map rather than assume a weight and its scales share a file.
 */
export function shardCuts(tensors: readonly { readonly name: string; readonly byteLength: number }[], shards: number): number[] {
  const before = [0];
  for (const t of tensors) before.push(before[before.length - 1] + t.byteLength);
  const total = before[tensors.length];
  const splitsPair = (i: number) => tensors[i].name === scaleInvName(tensors[i - 1].name);
  const cuts: number[] = [];
  let prev = 0;
  for (let k = 1; k < shards; k++) {
    const last = tensors.length - (shards - k); // leave one tensor at least for each later shard
    let cut = prev + 1;
    while (cut < last && before[cut] < (total * k) / shards) cut++;
    let pair = cut;
    while (pair < last && !splitsPair(pair)) pair++;
    if (splitsPair(pair)) cut = pair;
    cuts.push(cut);
    prev = cut;
  }
  return cuts;
}

/** A file's tensors in file order: larger elements first, stable, so each is aligned to its element size. */
export function fileOrder<T extends { readonly dtype: GeneratedDtype }>(tensors: readonly T[]): T[] {
  return [...tensors].sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype]);
}

function fileLayout(name: string, part: readonly PlannedTensor[]): FileLayout {
  const ordered = fileOrder(part);
  const header = safetensorsHeader(ordered, { format: 'pt' });
  const offsets = new Map<string, number>();
  let at = header.byteLength;
  for (const t of ordered) {
    offsets.set(t.name, at);
    at += t.byteLength;
  }
  return { name, header, size: at, tensors: ordered, offsets };
}

/**
 * The header src/io/safetensors_write.ts `writeSafetensors` writes for these tensors back to back
 * (its JSON, the same padding with spaces to a multiple of 8), without their bytes.
 */
export function safetensorsHeader(
  tensors: readonly { readonly name: string; readonly dtype: GeneratedDtype; readonly shape: readonly number[]; readonly byteLength: number }[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const { name, dtype, shape, byteLength } of tensors) {
    header[name] = { dtype, shape: [...shape], data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** model.safetensors.index.json: total_size and the weight map sorted by name, as the release has it. */
function indexJson(tensors: readonly PlannedTensor[], fileOf: ReadonlyMap<string, FileLayout>, totalSize: number): Uint8Array {
  const names = tensors.map((t) => t.name).sort();
  const weightMap = Object.fromEntries(names.map((name) => [name, fileOf.get(name)!.name]));
  return jsonBytes({ metadata: { total_size: totalSize }, weight_map: weightMap });
}

function jsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value, null, 2) + '\n');
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}
