// The Node entry (`webmoe/node`): the engine on Dawn's WebGPU for Node (the optional `webgpu`
// package; SwiftShader when no GPU answers), reading a checkpoint folder from disk or a URL.

import { isAbsolute, resolve } from 'node:path';
import { openNodeGpu, type NodeGpuOptions } from './gpu/node.ts';
import { nodeDir } from './io/node_source.ts';
import type { CheckpointDir } from './io/sources.ts';
import { urlDir } from './io/url_source.ts';
import { createLocalEngine, type LocalEngineOptions } from './runtime/engine.ts';
import { isCheckpointDir } from './runtime/model_source.ts';
import { nodeGrammarLibrary } from './text/xgrammar_node.ts';
import type { Engine } from './runtime/types.ts';

export * from './index.ts';
export { openNodeGpu, type NodeGpuOptions } from './gpu/node.ts';
export { nodeDir } from './io/node_source.ts';
export { startServer, type ServerOptions, type WebmoeServer } from './server/server.ts';
export { nodeGrammarLibrary } from './text/xgrammar_node.ts';

export interface NodeEngineOptions extends Omit<LocalEngineOptions, 'gpu' | 'dir' | 'ownsGpu' | 'grammarLibrary'> {
  /** A folder path, an http(s) URL, or a CheckpointDir. */
  model: string | CheckpointDir;
  gpu?: NodeGpuOptions;
}

/** A checkpoint folder path or URL as a CheckpointDir. */
export function nodeModelDir(model: string | CheckpointDir): CheckpointDir {
  if (isCheckpointDir(model)) return model;
  if (/^https?:\/\//.test(model)) return urlDir(model);
  return nodeDir(isAbsolute(model) ? model : resolve(model));
}

export async function createNodeEngine(options: NodeEngineOptions): Promise<Engine> {
  const dir = nodeModelDir(options.model);
  const gpu = await openNodeGpu(options.gpu);
  try {
    return await createLocalEngine({ ...options, gpu, dir, ownsGpu: true, grammarLibrary: nodeGrammarLibrary });
  } catch (err) {
    gpu.destroy();
    throw err;
  }
}
