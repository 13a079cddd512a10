// For tests and benchmarks in Node: one shared device per test file (SwiftShader here).
import type { Gpu } from './device.ts';
import type { KernelContext } from './kernel.ts';
import { openNodeGpu } from './node.ts';
import { PipelineCache } from './pipeline_cache.ts';

let shared: Promise<Gpu> | undefined;

/** The Node GPU shared by the tests of one file. */
export function testGpu(): Promise<Gpu> {
  shared ??= openNodeGpu({ label: 'webmoe-test' });
  return shared;
}

/** A seed for random test data: WEBMOE_SEED replays a failure, else a fresh one (printed). */
export function testSeed(name: string): number {
  const fixed = process.env.WEBMOE_SEED;
  const seed = fixed ? Number(fixed) : (Math.random() * 2 ** 31) >>> 0;
  console.log(`[seed] ${name}: WEBMOE_SEED=${seed}`);
  return seed;
}

export { rng, randn, relError } from '../testing/random.ts';

let sharedContext: Promise<KernelContext> | undefined;

/** The shared test GPU with one pipeline cache, as kernels are created with. */
export function testKernelContext(): Promise<KernelContext> {
  sharedContext ??= testGpu().then((gpu) => ({ gpu, pipelines: new PipelineCache(gpu.device) }));
  return sharedContext;
}
