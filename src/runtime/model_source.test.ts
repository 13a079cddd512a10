// The load progress of a URL model reports its network retries.

import { describe, expect, it } from 'vitest';
import { progressWithRetries } from './model_source.ts';
import type { EngineProgress } from './types.ts';

describe('progressWithRetries', () => {
  it('reports a network retry through the load progress, with the bytes of the last report', () => {
    const seen: EngineProgress[] = [];
    const { onProgress, onRetry } = progressWithRetries((p) => seen.push(p));
    onProgress!({ phase: 'weights', bytesDone: 10, bytesTotal: 100, file: 'model.safetensors' });
    onRetry!({ url: 'http://x/model.safetensors', range: 'bytes=10-99', attempt: 1, maxAttempts: 6, reason: 'HTTP 503', stalled: false, delayMs: 1000, bytesReceived: 0 });
    expect(seen[1]).toEqual({
      phase: 'weights', bytesDone: 10, bytesTotal: 100, file: 'model.safetensors',
      retrying: { url: 'http://x/model.safetensors', attempt: 1, maxAttempts: 6, reason: 'HTTP 503', delayMs: 1000 },
    });
    expect(progressWithRetries(undefined)).toEqual({ onProgress: undefined, onRetry: undefined });
  });

  it('a retry before the weights stream (config, tokenizer, headers) is reported in the files phase', () => {
    const seen: EngineProgress[] = [];
    const { onRetry } = progressWithRetries((p) => seen.push(p));
    onRetry!({ url: 'http://x/config.json', range: '', attempt: 1, maxAttempts: 6, reason: 'HTTP 503', stalled: false, delayMs: 500, bytesReceived: 0 });
    expect(seen).toEqual([{ phase: 'files', bytesDone: 0, bytesTotal: 0, retrying: { url: 'http://x/config.json', attempt: 1, maxAttempts: 6, reason: 'HTTP 503', delayMs: 500 } }]);
  });
});
