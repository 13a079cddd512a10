// For the tests of the server and the remote engine: the shipped checkpoint on the test GPU, and
// an engine wrapper that records how each generation the server ran ended (finished, aborted,
// failed) and how many chunks it had, so a test can see that a disconnect stopped the engine.

import { resolve } from 'node:path';
import { testGpu } from '../gpu/testing.ts';
import { nodeDir } from '../io/node_source.ts';
import { createLocalEngine } from '../runtime/engine.ts';
import { delegateEngine } from '../runtime/delegate_engine.ts';
import type { ChatCompletionRequest, Engine } from '../runtime/types.ts';
import { REPO_ROOT } from '../testing/fixtures.ts';
import { nodeGrammarLibrary } from '../text/xgrammar_node.ts';

export const SHIPPED_MODEL = resolve(REPO_ROOT, 'public/models/webmoe-kjv-12m');

/** The shipped checkpoint, in this thread on the test file's GPU. */
export function shippedEngine(): Promise<Engine> {
  return testGpu().then((gpu) => createLocalEngine({ gpu, dir: nodeDir(SHIPPED_MODEL), grammarLibrary: nodeGrammarLibrary }));
}

/** How one generation ended: 'done', 'returned' (its reader left early), or the error's name. */
export interface Ending {
  how: string;
  chunks: number;
}

/** `engine` with every generate() and streamed chat recorded in `endings` as it ends. */
export function recordingEngine(engine: Engine): { engine: Engine; endings: Ending[] } {
  const endings: Ending[] = [];
  async function* track<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
    const ending: Ending = { how: 'returned', chunks: 0 };
    try {
      for await (const chunk of source) {
        ending.chunks++;
        yield chunk;
      }
      ending.how = 'done';
    } catch (err) {
      ending.how = (err as Error).name;
      throw err;
    } finally {
      endings.push(ending);
    }
  }
  const create = async (request: ChatCompletionRequest) => {
    const reply = await engine.chat.completions.create(request);
    return request.stream ? track(reply as AsyncIterable<unknown>) : reply;
  };
  const recorded = delegateEngine(engine, {
    chat: { completions: { create: create as Engine['chat']['completions']['create'] } },
    generate: (prompt, options) => track(engine.generate(prompt, options)),
  });
  return { engine: recorded, endings };
}

// The server itself, for tests outside server/ (remote/'s run against it): a test helper is the
// one way a test may reach across the layers.
export { startServer, type WebmoeServer } from './server.ts';
