// Load a checkpoint's tensors into GPU buffers: open and validate (config, headers, names),
// allocate every buffer first (so an out-of-memory fails before any byte is read), then stream
// each file's bytes in chunks. On any failure or abort every buffer made so far is destroyed.

import { parseConfig, type DeepseekV3Config } from '../config.ts';
import { withGpuErrorScope } from '../gpu/device.ts';
import { openCheckpoint, CONFIG_FILE, type Checkpoint } from '../io/checkpoint_files.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import type { CheckpointDir } from '../io/sources.ts';
import { ProgressCounter, uploadTensors, type LoadProgress } from '../io/stream_to_gpu.ts';
import { throwIfAborted } from '../errors.ts';
import { placeTensors, type WeightBuffer } from './placement.ts';
import { assertTensors, expectedTensors } from './weights.ts';

export interface LoadedWeights {
  readonly config: DeepseekV3Config;
  readonly checkpoint: Checkpoint;
  /** GPU buffers by name (checkpoint names; stacked experts under their stacked name). */
  readonly buffers: ReadonlyMap<string, GPUBuffer>;
  readonly placement: ReadonlyMap<string, WeightBuffer>;
  readonly bytesOnGpu: number;
  /** Destroy every buffer. Safe to call twice. */
  destroy(): void;
}

export interface LoadWeightsOptions {
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
  /** Skip the MTP layer's tensors (when speculative decoding is off). */
  skipMtp?: boolean;
  chunkBytes?: number;
}

/** Load from a folder, or from a checkpoint already opened (its headers are not read again). */
export async function loadWeights(device: GPUDevice, from: CheckpointDir | Checkpoint, options: LoadWeightsOptions = {}): Promise<LoadedWeights> {
  const { signal } = options;
  const checkpoint = 'tensors' in from ? from : await openCheckpoint(from, { signal });
  const dir = checkpoint.dir;
  const config = parseConfig(checkpoint.configText, `${dir.description}/${CONFIG_FILE}`);
  assertTensors(expectedTensors(config), checkpoint.tensors, dir.description);

  const mtpPrefix = config.mtp_layer_index === null ? undefined : `model.layers.${config.mtp_layer_index}.`;
  const wanted = [...checkpoint.tensors.values()].filter((t) => !(options.skipMtp && mtpPrefix && t.name.startsWith(mtpPrefix)));
  const placed = placeTensors(wanted);

  const buffers = new Map<string, GPUBuffer>();
  const destroy = () => {
    for (const b of buffers.values()) b.destroy();
    buffers.clear();
  };
  try {
    let bytesOnGpu = 0;
    await withGpuErrorScope(device, `the weights of ${dir.description}`, () => {
      for (const wb of placed) {
        const size = Math.max(4, Math.ceil(wb.byteLength / 4) * 4);
        buffers.set(wb.name, device.createBuffer({ label: wb.name, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC }));
        bytesOnGpu += size;
      }
    });

    const where = new Map<TensorInfo, { buffer: GPUBuffer; offset: number }>();
    for (const wb of placed) for (const m of wb.members) where.set(m.tensor, { buffer: buffers.get(wb.name)!, offset: m.offset });
    const progress = new ProgressCounter(wanted.reduce((s, t) => s + t.byteLength, 0), options.onProgress);
    for (const file of checkpoint.files) {
      throwIfAborted(signal);
      const inFile = wanted.filter((t) => t.file === file);
      await uploadTensors(device, checkpoint.sources.get(file)!, inFile, (t) => where.get(t)!, { signal, progress, chunkBytes: options.chunkBytes });
    }
    await device.queue.onSubmittedWorkDone();
    const placement = new Map(placed.map((wb) => [wb.name, wb]));
    return { config, checkpoint, buffers, placement, bytesOnGpu, destroy };
  } catch (err) {
    destroy();
    throw err;
  }
}
