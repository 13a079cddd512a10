// Checkpoint files on a local disk, for Node (the CLI, tests, benchmarks). Kept apart from
// sources.ts so that browser bundles never import node:fs.

import { constants } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CheckpointError, MissingFileError, throwIfAborted } from '../errors.ts';
import { checkReadRange, textFileMaxBytes, textFileTooLarge, type ByteSource, type CheckpointDir } from './sources.ts';

// Opening a FIFO for reading waits for a writer, forever; with O_NONBLOCK it returns at once
// (a no-op for regular files), and the caller then refuses what is not a file. Windows has no FIFOs.
const READ_NOW = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

function isNotFound(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

/** One file on disk. Each read opens and closes the file, so nothing is left open. */
export function nodeFileSource(path: string, name = basename(path)): ByteSource {
  let size: Promise<number> | undefined;
  const sizeOf = () =>
    (size ??= stat(path).then(
      (s) => {
        if (!s.isFile()) throw new MissingFileError(name, dirname(resolve(path)));
        return s.size;
      },
      (e) => {
        size = undefined;
        if (isNotFound(e)) throw new MissingFileError(name, dirname(resolve(path)));
        throw e;
      },
    ));
  return {
    name,
    size: sizeOf,
    async read(offset, length, signal) {
      throwIfAborted(signal);
      checkReadRange(name, offset, length, await sizeOf());
      const out = new Uint8Array(length);
      const handle = await open(path, READ_NOW);
      try {
        let done = 0;
        while (done < length) {
          const { bytesRead } = await handle.read(out, done, length - done, offset + done);
          if (bytesRead === 0) throw new CheckpointError(`the file ended at ${offset + done} while reading ${length} bytes at ${offset}: it changed on disk`, name);
          done += bytesRead;
        }
      } finally {
        await handle.close();
      }
      throwIfAborted(signal);
      return out;
    },
  };
}

/** A checkpoint folder on disk. */
export function nodeDir(path: string): CheckpointDir {
  const dir = resolve(path);
  return {
    description: dir,
    async exists(file) {
      try {
        return (await stat(join(dir, file))).isFile();
      } catch (e) {
        if (isNotFound(e)) return false;
        throw e;
      }
    },
    async open(file) {
      const source = nodeFileSource(join(dir, file), file);
      await source.size(); // a missing file fails here, not at the first read
      return source;
    },
    async readText(file, signal, maxBytes = textFileMaxBytes(file)) {
      throwIfAborted(signal);
      let handle: FileHandle;
      try {
        handle = await open(join(dir, file), READ_NOW);
      } catch (e) {
        if (isNotFound(e)) throw new MissingFileError(file, dir);
        if ((e as { code?: string }).code === 'ENXIO') throw notAFile(file, dir); // a socket
        throw e;
      }
      try {
        return new TextDecoder().decode(await readBounded(handle, file, dir, maxBytes, signal));
      } finally {
        await handle.close();
      }
    },
  };
}

function notAFile(file: string, dir: string): CheckpointError {
  return new CheckpointError(`${file} in ${dir} is not a regular file (a device, FIFO or socket): it cannot be a checkpoint's ${file}`);
}

/**
 * The whole of an open text file, refused when it is not a regular file or holds more than
 * `maxBytes` (the stat says so first; a file that grows meanwhile is still read no further).
 */
async function readBounded(handle: FileHandle, file: string, dir: string, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array> {
  const info = await handle.stat();
  if (info.isDirectory()) throw new MissingFileError(file, dir);
  if (!info.isFile()) throw notAFile(file, dir);
  if (!(info.size <= maxBytes)) throw textFileTooLarge(file, maxBytes, dir, info.size);
  // One byte more than the stat said, to see a file that grew.
  const out = new Uint8Array(info.size + 1);
  let done = 0;
  while (done < out.length) {
    throwIfAborted(signal);
    const { bytesRead } = await handle.read(out, done, out.length - done, done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  throwIfAborted(signal);
  if (done > info.size) throw new CheckpointError(`${file} in ${dir} grew while it was read (it had ${info.size} bytes): read it again once it is written`);
  return out.subarray(0, done);
}
