// Where checkpoint bytes come from. A ByteSource is one file read by ranges; a CheckpointDir is
// the folder of a checkpoint. Implementations here work in browsers and Node: in-memory bytes,
// browser File objects (a picked folder) and a FileSystemDirectoryHandle. URLs are in
// url_source.ts, the Node filesystem in node_source.ts (so browser bundles never see node:fs).

import { CheckpointError, MissingFileError, throwIfAborted } from '../errors.ts';

/** One file, read by byte ranges. */
export interface ByteSource {
  /** The file name, used in error messages and as TensorInfo.file. */
  readonly name: string;
  /** Size of the file in bytes. */
  size(): Promise<number>;
  /** Exactly `length` bytes from `offset`; a range past the end is a CheckpointError. */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array<ArrayBuffer>>;
  /** True when the bytes come from the local shard cache rather than their origin. */
  readonly fromCache?: boolean;
}

/** A checkpoint folder: config.json, *.safetensors, the index, tokenizer files. */
export interface CheckpointDir {
  /** Where it is, for messages: a URL, a folder name, a path. */
  readonly description: string;
  exists(file: string, signal?: AbortSignal): Promise<boolean>;
  /** Open a file; a missing one is a MissingFileError. */
  open(file: string, signal?: AbortSignal): Promise<ByteSource>;
  /**
   * A whole (small) text file; a missing one is a MissingFileError. One over `maxBytes`
   * (default `textFileMaxBytes(file)`) is a CheckpointError, refused without reading it all.
   */
  readText(file: string, signal?: AbortSignal, maxBytes?: number): Promise<string>;
}

const MiB = 1 << 20;

/**
 * The largest size of each text file of a checkpoint that is read whole. A folder is untrusted:
 * without a cap, a config.json linked to /dev/zero or an endless HTTP body fills the memory.
 * Each cap is far above the real files: configs are a few KB, the V3 / Kimi K2 index ~10 MB
 * (one line per tensor), the largest tokenizer.json files ~20 MB.
 */
export const TEXT_FILE_MAX_BYTES: Readonly<Record<string, number>> = Object.freeze({
  'config.json': 1 * MiB,
  'generation_config.json': 1 * MiB,
  'chat_template.jinja': 1 * MiB,
  'tokenizer_config.json': 16 * MiB,
  'tokenizer.json': 64 * MiB,
  'model.safetensors.index.json': 64 * MiB,
});

/** The cap for a text file that TEXT_FILE_MAX_BYTES does not name. */
export const DEFAULT_TEXT_MAX_BYTES = 64 * MiB;

/** readText's default cap for `file`. */
export function textFileMaxBytes(file: string): number {
  return Object.hasOwn(TEXT_FILE_MAX_BYTES, file) ? TEXT_FILE_MAX_BYTES[file] : DEFAULT_TEXT_MAX_BYTES;
}

/** The refusal of a text file over its cap; `size` when known (a stream's is not). */
export function textFileTooLarge(file: string, maxBytes: number, where: string, size?: number): CheckpointError {
  const actual = size === undefined ? '' : ` (it has ${size})`;
  return new CheckpointError(`${file} is over ${maxBytes} bytes${actual} in ${where}, the limit for it: a real ${file} is far smaller, so this one is corrupt or not one`);
}

/** Refuse a text file of known size over `maxBytes` before reading it (a NaN cap refuses all). */
function checkTextSize(file: string, size: number, maxBytes: number, where: string): void {
  if (!(size <= maxBytes)) throw textFileTooLarge(file, maxBytes, where, size);
}

/** Refuse reads outside [0, size): the file is shorter than the header said, or changed. */
export function checkReadRange(name: string, offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new CheckpointError(`invalid read of ${length} bytes at ${offset}`, name);
  }
  if (offset + length > size) {
    throw new CheckpointError(`read of bytes [${offset}, ${offset + length}) is past the end of the file (${size} bytes): it is truncated or changed`, name);
  }
}

/** A file held in memory (tests, generated checkpoints). */
export function bytesSource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    size: async () => bytes.byteLength,
    async read(offset, length, signal) {
      throwIfAborted(signal);
      checkReadRange(name, offset, length, bytes.byteLength);
      return bytes.slice(offset, offset + length);
    },
  };
}

/** A browser File or Blob, read with slice(); Blob reads cannot be cancelled, so abort is checked around them. */
export function blobSource(name: string, blob: Blob): ByteSource {
  return {
    name,
    size: async () => blob.size,
    async read(offset, length, signal) {
      throwIfAborted(signal);
      checkReadRange(name, offset, length, blob.size);
      const bytes = new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
      throwIfAborted(signal);
      if (bytes.byteLength !== length) throw new CheckpointError(`read ${bytes.byteLength} bytes at ${offset}, expected ${length}: the file changed`, name);
      return bytes;
    },
  };
}

/** A folder given as a name -> contents table, for tests and generated checkpoints. */
export function memoryDir(description: string, files: Record<string, Uint8Array | string>): CheckpointDir {
  const table = new Map(Object.entries(files));
  const get = (file: string) => {
    const v = table.get(file);
    if (v === undefined) throw new MissingFileError(file, description);
    return typeof v === 'string' ? new TextEncoder().encode(v) : v;
  };
  return {
    description,
    exists: async (file) => table.has(file),
    open: async (file) => bytesSource(file, get(file)),
    async readText(file, signal, maxBytes = textFileMaxBytes(file)) {
      throwIfAborted(signal);
      const bytes = get(file);
      checkTextSize(file, bytes.byteLength, maxBytes, description);
      return new TextDecoder().decode(bytes);
    },
  };
}

/**
 * Files picked by the user (`<input type=file webkitdirectory>` gives a FileList with
 * webkitRelativePath "folder/config.json"; drag and drop gives bare names). A file is found by
 * its base name; if several share it (subfolders), the shallowest wins.
 */
export function filesDir(files: Iterable<File> | ArrayLike<File>, description?: string): CheckpointDir {
  const byName = new Map<string, { file: File; depth: number }>();
  let folder: string | undefined;
  for (const file of Array.from(files as ArrayLike<File>)) {
    const path = file.webkitRelativePath || file.name;
    const parts = path.split('/');
    folder ??= parts.length > 1 ? parts[0] : undefined;
    const seen = byName.get(file.name);
    if (!seen || parts.length < seen.depth) byName.set(file.name, { file, depth: parts.length });
  }
  const where = description ?? (folder ? `the folder "${folder}"` : 'the selected files');
  const get = (name: string) => {
    const hit = byName.get(name);
    if (!hit) throw new MissingFileError(name, where);
    return hit.file;
  };
  return {
    description: where,
    exists: async (name) => byName.has(name),
    open: async (name) => blobSource(name, get(name)),
    async readText(name, signal, maxBytes = textFileMaxBytes(name)) {
      throwIfAborted(signal);
      const file = get(name);
      checkTextSize(name, file.size, maxBytes, where);
      return file.text();
    },
  };
}

/** A folder from the File System Access API (showDirectoryPicker, or OPFS). */
export function directoryHandleDir(handle: FileSystemDirectoryHandle): CheckpointDir {
  const description = `the folder "${handle.name}"`;
  const getFile = async (name: string, signal?: AbortSignal): Promise<File> => {
    throwIfAborted(signal);
    let fileHandle: FileSystemFileHandle;
    try {
      fileHandle = await handle.getFileHandle(name);
    } catch (cause) {
      // NotFoundError, or TypeMismatchError when the name is a folder.
      if (cause instanceof Error && (cause.name === 'NotFoundError' || cause.name === 'TypeMismatchError')) {
        throw new MissingFileError(name, description);
      }
      throw cause;
    }
    return fileHandle.getFile();
  };
  return {
    description,
    async exists(name, signal) {
      try {
        await getFile(name, signal);
        return true;
      } catch (e) {
        if (e instanceof MissingFileError) return false;
        throw e;
      }
    },
    open: async (name, signal) => blobSource(name, await getFile(name, signal)),
    async readText(name, signal, maxBytes = textFileMaxBytes(name)) {
      const file = await getFile(name, signal);
      checkTextSize(name, file.size, maxBytes, description);
      return file.text();
    },
  };
}
