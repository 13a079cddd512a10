// What `createEngine({ model })` accepts, turned into a checkpoint folder: a URL (read with HTTP
// Range requests, shards kept in IndexedDB when asked), browser Files or a directory handle, or a
// CheckpointDir made by the caller (Node's nodeDir(path), memoryDir in tests).

import { ArgumentError } from '../errors.ts';
import { ShardCache } from '../io/shard_cache.ts';
import { directoryHandleDir, filesDir, type CheckpointDir } from '../io/sources.ts';
import type { RetryEvent } from '../io/http_retry.ts';
import { urlDir } from '../io/url_source.ts';
import type { EngineProgress } from './types.ts';

export type ModelSource = string | URL | CheckpointDir | ArrayLike<File> | FileSystemDirectoryHandle;

export interface ResolveOptions {
  /** Keep downloaded shards in IndexedDB (browser; default true where IndexedDB exists). */
  cacheShards?: boolean;
  /** Network retries of a URL model, for the load's progress (see progressWithRetries). */
  onRetry?: (event: RetryEvent) => void;
}

/**
 * The load's progress callback, and an onRetry that reports each network retry through it in the
 * phase and with the bytes of the last report (a retry has no byte count of its own): 'files'
 * until the weights stream (config.json, tokenizer, headers), then 'weights'.
 */
export function progressWithRetries(onProgress: ((p: EngineProgress) => void) | undefined) {
  let last: EngineProgress = { phase: 'files', bytesDone: 0, bytesTotal: 0 };
  return {
    onProgress: onProgress && ((p: EngineProgress) => onProgress((last = p))),
    onRetry: onProgress && ((e: RetryEvent) => {
      const { url, attempt, maxAttempts, reason, delayMs } = e;
      onProgress({ ...last, retrying: { url, attempt, maxAttempts, reason, delayMs } });
    }),
  };
}

export function isCheckpointDir(value: unknown): value is CheckpointDir {
  return typeof value === 'object' && value !== null && 'open' in value && 'description' in value && typeof (value as CheckpointDir).open === 'function';
}

export function resolveModelSource(source: ModelSource, options: ResolveOptions = {}): CheckpointDir {
  if (isCheckpointDir(source)) return source;
  if (typeof source === 'string' || source instanceof URL) {
    const base = typeof globalThis.location === 'object' ? globalThis.location.href : undefined;
    let url: URL;
    try {
      url = new URL(String(source), base);
    } catch {
      throw new ArgumentError(`model "${String(source)}" is not a URL; in Node, open a folder with createNodeEngine (webmoe/node) or pass nodeDir(path)`);
    }
    const dir = urlDir(url.href, { onRetry: options.onRetry });
    const useCache = options.cacheShards ?? typeof indexedDB !== 'undefined';
    return useCache ? new ShardCache().wrap(dir) : dir;
  }
  if (typeof FileSystemDirectoryHandle !== 'undefined' && source instanceof FileSystemDirectoryHandle) return directoryHandleDir(source);
  if (typeof source === 'object' && source !== null && 'length' in source) return filesDir(source);
  throw new ArgumentError('model must be a URL, a list of Files, a directory handle or a CheckpointDir');
}
