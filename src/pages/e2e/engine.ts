// The page behind e2e/engine.spec.ts: the engine API and the error classes on window.e2e, so the
// spec's page.evaluate() calls can create engines (in a Worker or in this thread) and keep them.

import * as errors from '../../errors.ts';
import { createEngine } from '../../create_engine.ts';
import type { Engine, GenerateChunk } from '../../runtime/types.ts';

export interface E2eApi {
  createEngine: typeof createEngine;
  errors: typeof errors;
  /** Engines kept between page.evaluate() calls, by name. */
  engines: Record<string, Engine>;
  /** Reads a whole stream: its ids, how many chunks carried them, and the final `done`. */
  collect(chunks: AsyncIterable<GenerateChunk>): Promise<{ ids: number[]; chunks: number; done: GenerateChunk['done'] }>;
}

declare global {
  interface Window {
    e2e: E2eApi;
  }
}

window.e2e = {
  createEngine,
  errors,
  engines: {},
  async collect(chunks) {
    const ids: number[] = [];
    let count = 0;
    let done: GenerateChunk['done'];
    for await (const chunk of chunks) {
      ids.push(...chunk.ids);
      count++;
      done = chunk.done ?? done;
    }
    return { ids, chunks: count, done };
  },
};
