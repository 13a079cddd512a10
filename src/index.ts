// webmoe: DeepSeek-V3-architecture MoE inference on WebGPU. The npm entry point.
// Importing this module touches no GPU and starts nothing; every resource is made by a call
// and released by its destroy().

export * from './errors.ts';
export { openGpu, openAdapter, describeAdapter, type Gpu, type AdapterReport, type OpenGpuOptions } from './gpu/device.ts';
export { browserGpu, openBrowserGpu } from './gpu/browser.ts';
export { parseConfig, isMoeLayer, type DeepseekV3Config } from './config.ts';
export { openCheckpoint, type Checkpoint } from './io/checkpoint_files.ts';
export { type ByteSource, type CheckpointDir, filesDir, directoryHandleDir, memoryDir } from './io/sources.ts';
export { urlDir, UrlSource } from './io/url_source.ts';
export { ShardCache, idbStore, memoryStore, type KeyValueStore } from './io/shard_cache.ts';
export { type LoadProgress } from './io/stream_to_gpu.ts';
export { loadWeights, type LoadedWeights, type LoadWeightsOptions } from './model/load_weights.ts';
export { inspectCheckpoint, checkpointReport, formatInspectReport, type InspectReport } from './model/inspect.ts';
export { expectedTensors, checkTensors, countParameters } from './model/weights.ts';
export { selfCheck, type SelfCheckResult } from './kernels/self_check.ts';
export * from './text/index.ts';
export { createEngine, type CreateEngineOptions, type EngineFallback } from './create_engine.ts';
export { createRemoteEngine, type RemoteEngineOptions } from './remote/engine.ts';
export { type ModelSource } from './runtime/model_source.ts';
export { importGrammarLibrary, type GrammarLibrary, type GrammarLibraryLoader } from './text/xgrammar.ts';
export type * from './runtime/types.ts';
