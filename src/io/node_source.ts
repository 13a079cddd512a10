// Checkpoint files on a local disk, for Node (the CLI, tests, benchmarks). Kept apart from
// sources.ts so that browser bundles never import node:fs.

import { open, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CheckpointError, MissingFileError, throwIfAborted } from '../errors.ts';
import { checkReadRange, type ByteSource, type CheckpointDir } from './sources.ts';

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
      const handle = await open(path, 'r');
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
    async readText(file, signal) {
      throwIfAborted(signal);
      try {
        return await readFile(join(dir, file), { encoding: 'utf8', signal });
      } catch (e) {
        if (isNotFound(e)) throw new MissingFileError(file, dir);
        if (signal?.aborted) throwIfAborted(signal);
        throw e;
      }
    },
  };
}
