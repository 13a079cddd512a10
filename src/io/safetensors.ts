// The safetensors header: an 8-byte little-endian u64 length N, then N bytes of UTF-8 JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}},
// then the data section, where offsets are relative to byte 8 + N.
// Format: https://github.com/huggingface/safetensors#format
// Every rule is checked here so the rest of the engine can trust a TensorInfo.

import { CheckpointError, throwIfAborted } from '../errors.ts';
import { findDuplicateKey } from './json_duplicates.ts';
import type { ByteSource } from './sources.ts';

/**
 * Bytes per element of every dtype we parse. F8_E4M3, BF16, F16 and F32 are what the engine
 * computes with; I64, I32, U8 and BOOL are parsed too, because some checkpoints carry small
 * buffers of those types (position ids, masks) the engine never reads: refusing the whole file
 * for them would be unhelpful. The weight loader refuses them if it needs one (`isEngineDtype`).
 */
export const DTYPE_SIZE = {
  F8_E4M3: 1,
  BF16: 2,
  F16: 2,
  F32: 4,
  I64: 8,
  I32: 4,
  U8: 1,
  BOOL: 1,
} as const;

export type Dtype = keyof typeof DTYPE_SIZE;

/** The dtypes the engine's kernels read. */
export const ENGINE_DTYPES: readonly Dtype[] = ['F8_E4M3', 'BF16', 'F16', 'F32'];

/** safetensors' own limit on the header, and ours: a bigger one is a corrupt file, not a model. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Where one tensor's bytes are. `byteOffset` is absolute in `file`. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly byteOffset: number;
  readonly byteLength: number;
  readonly file: string;
}

/** A parsed, validated header. */
export interface SafetensorsHeader {
  readonly file: string;
  /** N, the JSON's length; the data section starts at 8 + N. */
  readonly headerLength: number;
  /** Tensors in file order (by byteOffset). */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** The optional `__metadata__` (string to string), or null. */
  readonly metadata: Readonly<Record<string, string>> | null;
}

export function isEngineDtype(dtype: string): dtype is Dtype {
  return (ENGINE_DTYPES as readonly string[]).includes(dtype);
}

/** Number of elements of a shape ([] is a scalar: 1). */
export function shapeSize(shape: readonly number[]): number {
  // An empty tensor first: huge other dimensions could overflow to Infinity, and Infinity * 0 is NaN.
  if (shape.includes(0)) return 0;
  return shape.reduce((a, b) => a * b, 1);
}

/** Read N from the first 8 bytes and check it against the limits and the file size. */
export function readHeaderLength(first8: Uint8Array, fileName: string, fileSize: number): number {
  if (fileSize < 8 || first8.byteLength < 8) {
    throw new CheckpointError(`the file is ${fileSize} bytes, too short for a safetensors file (8-byte header length first)`, fileName);
  }
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new CheckpointError(`header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit: not a safetensors file, or corrupt`, fileName);
  }
  const length = Number(n);
  if (8 + length > fileSize) {
    throw new CheckpointError(`header length ${length} runs past the end of the file (${fileSize} bytes): the file is truncated or corrupt`, fileName);
  }
  if (length < 2) throw new CheckpointError(`header length ${length} is too short for a JSON object`, fileName);
  return length;
}

/**
 * Parse and validate the header. `bytes` starts at the file's first byte and holds at least
 * 8 + N bytes (more is fine: the whole file works); `fileSize` is the whole file's size.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileName: string, fileSize: number): SafetensorsHeader {
  const headerLength = readHeaderLength(bytes, fileName, fileSize);
  if (bytes.byteLength < 8 + headerLength) {
    throw new CheckpointError(`got ${bytes.byteLength} bytes, the header needs ${8 + headerLength}`, fileName);
  }
  const json = decodeJson(bytes.subarray(8, 8 + headerLength), fileName);
  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;

  let metadata: Record<string, string> | null = null;
  const entries: { info: TensorInfo; begin: number }[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value, fileName);
      continue;
    }
    const { dtype, shape, begin, end } = parseEntry(name, value, fileName, dataSize);
    const expected = shapeSize(shape) * DTYPE_SIZE[dtype];
    if (end - begin !== expected) {
      throw new CheckpointError(
        `tensor "${name}": data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but ${dtype} [${shape.join(', ')}] needs ${expected}`,
        fileName,
      );
    }
    entries.push({ info: { name, dtype, shape, byteOffset: dataStart + begin, byteLength: end - begin, file: fileName }, begin });
  }

  // Sorted by begin, each non-empty tensor must start at or after the furthest end so far.
  entries.sort((a, b) => a.begin - b.begin || a.info.byteLength - b.info.byteLength);
  let furthest: TensorInfo | undefined;
  for (const { info } of entries) {
    if (info.byteLength === 0) continue;
    if (furthest && info.byteOffset < furthest.byteOffset + furthest.byteLength) {
      throw new CheckpointError(`tensors "${furthest.name}" and "${info.name}" overlap in the data section`, fileName);
    }
    furthest = info;
  }
  return { file: fileName, headerLength, tensors: new Map(entries.map((e) => [e.info.name, e.info])), metadata };
}

/** Read and parse a header from a source in two reads: the 8-byte length, then the JSON. */
export async function readSafetensorsHeader(source: ByteSource, signal?: AbortSignal): Promise<SafetensorsHeader> {
  const fileSize = await source.size();
  throwIfAborted(signal);
  const first8 = fileSize >= 8 ? await source.read(0, 8, signal) : new Uint8Array(0);
  const length = readHeaderLength(first8, source.name, fileSize);
  const json = await source.read(8, length, signal);
  const bytes = new Uint8Array(8 + length);
  bytes.set(first8, 0);
  bytes.set(json, 8);
  return parseSafetensorsHeader(bytes, source.name, fileSize);
}

function decodeJson(bytes: Uint8Array, fileName: string): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CheckpointError('the header is not valid UTF-8', fileName);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new CheckpointError(`the header is not valid JSON (${(cause as Error).message})`, fileName);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new CheckpointError('the header is not a JSON object', fileName);
  }
  // JSON.parse kept the last of any repeated key; the file must not say two things about one tensor.
  const duplicate = findDuplicateKey(text);
  if (duplicate) {
    const where = duplicate.path.length === 0 ? 'the header' : `the entry "${duplicate.path.join('"."')}"`;
    throw new CheckpointError(`"${duplicate.key}" appears twice in ${where}: a loader could read either one, so the file is refused`, fileName);
  }
  return json as Record<string, unknown>;
}

function parseMetadata(value: unknown, fileName: string): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CheckpointError('"__metadata__" must be an object of strings', fileName);
  }
  const out: Record<string, string> = Object.create(null);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new CheckpointError(`"__metadata__"."${k}" must be a string, got ${typeof v}`, fileName);
    out[k] = v;
  }
  return out;
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function parseEntry(name: string, value: unknown, fileName: string, dataSize: number) {
  const bad = (what: string) => new CheckpointError(`tensor "${name}": ${what}`, fileName);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('entry must be an object {dtype, shape, data_offsets}');
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;

  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_SIZE, dtype)) {
    throw bad(`dtype ${JSON.stringify(dtype)} is not supported (one of ${Object.keys(DTYPE_SIZE).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) throw bad(`shape ${JSON.stringify(shape)} must be an array of non-negative integers`);
  // A zero anywhere makes an empty tensor, however large the other dimensions.
  if (!shape.includes(0)) {
    let elements = 1;
    for (const d of shape) {
      elements *= d;
      if (!Number.isSafeInteger(elements * 8)) throw bad(`shape [${shape.join(', ')}] is too large`);
    }
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw bad(`data_offsets ${JSON.stringify(offsets)} must be [begin, end], non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw bad(`data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataSize) throw bad(`data_offsets [${begin}, ${end}] run past the data section (${dataSize} bytes): the file is truncated or corrupt`);
  return { dtype: dtype as Dtype, shape: shape as number[], begin, end };
}
