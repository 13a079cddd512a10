// Load a checkpoint's tensors into GPU buffers: open and validate (config, headers, names),
// allocate every buffer first (so an out-of-memory fails before any byte is read), then stream
// each file's bytes in chunks. A release that stores its Linears unquantised (BF16 / F16 / F32)
// has them quantised to block-scaled FP8 on the way in (weights 'fp8', the default) or kept as
// they are (weights 'bf16'). On any failure or abort every buffer made so far is destroyed.

import { isMoeLayer, parseConfig, type DeepseekV3Config } from '../config.ts';
import { ArgumentError, CheckpointError, GpuLimitError, GpuOutOfMemoryError, throwIfAborted } from '../errors.ts';
import { withGpuErrorScope, type Gpu } from '../gpu/device.ts';
import { PipelineCache } from '../gpu/pipeline_cache.ts';
import { openCheckpoint, CONFIG_FILE, type Checkpoint } from '../io/checkpoint_files.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import type { CheckpointDir } from '../io/sources.ts';
import { ProgressCounter, splitWriter, tensorWriter, uploadTensors, type LoadProgress } from '../io/stream_to_gpu.ts';
import { checkedForFinite, finiteChecking } from './finite_check.ts';
import { hostWriter, quantisingHostWriter } from './expert_host_writers.ts';
import { allocateHostExperts, createExpertOffload, offloadLayout, slotsWithinBinding, splitOffloaded, type ExpertOffload, type ExpertStore } from './expert_offload.ts';
import { checkpointExperts, checkReadableExperts } from './checkpoint_experts.ts';
import { placedBytes, placeTensors, smallestBufferLimit, weightBufferSize, type GpuTensor, type WeightBuffer } from './placement.ts';
import { Fp8Quantizer, QUANTIZE_FROM, type Fp8Target } from './quantize_on_load.ts';
import { rowSplittable } from './weight_split.ts';
import { assertTensors, expectedTensors, scaleInvName, scaleInvShape, type ExpectedTensor } from './weights.ts';

/**
 * How the Linears that the FP8 release quantises are held on the GPU. 'fp8': block-scaled e4m3
 * (an FP8 release as it is; a BF16 release quantised at load, half the memory). 'bf16': as the
 * release stores them (a BF16 release stays BF16, exact; an FP8 release stays FP8).
 */
export const WEIGHT_MODES = ['fp8', 'bf16'] as const;
export type WeightMode = (typeof WEIGHT_MODES)[number];

export interface LoadedWeights {
  readonly config: DeepseekV3Config;
  readonly checkpoint: Checkpoint;
  /** The tensors as they are on the GPU, by checkpoint name (quantised ones F8_E4M3, with their `_scale_inv`). */
  readonly tensors: ReadonlyMap<string, GpuTensor>;
  /** GPU buffers by name (checkpoint names; stacked experts under their stacked name; pieces as `name[first:end]`). */
  readonly buffers: ReadonlyMap<string, GPUBuffer>;
  readonly placement: ReadonlyMap<string, WeightBuffer>;
  /**
   * The buffers holding a tensor (or stack), in order: one covering it all, or the pieces it was
   * split into (rows first .. first + count - 1, or experts for a stack).
   */
  pieces(name: string): readonly WeightPiece[];
  readonly bytesOnGpu: number;
  /** How the block-scaled Linears are held: 'fp8' when they are e4m3 on the GPU (released or quantised here). */
  readonly weights: WeightMode;
  /** Tensors quantised to FP8 by this load (0 for an FP8 release). */
  readonly quantisedTensors: number;
  /** With expertSlots: the routed experts in CPU memory and each MoE layer's GPU cache (in bytesOnGpu). */
  readonly offload?: ExpertOffload;
  /** Destroy every buffer. Safe to call twice. */
  destroy(): void;
}

export interface LoadWeightsOptions {
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
  /** Skip the MTP layer's tensors (when speculative decoding is off). */
  skipMtp?: boolean;
  chunkBytes?: number;
  /** Default 'fp8'. */
  weights?: WeightMode;
  /** For the quantisation kernel; a fresh cache by default. */
  pipelines?: PipelineCache;
  /**
   * Plan with storage bindings of at most this many bytes (default: the device's
   * maxStorageBufferBindingSize / maxBufferSize, whichever is smaller); larger tensors are split.
   */
  maxBindingBytes?: number;
  /**
   * Keep the routed experts of every MoE layer in CPU memory and this many per layer in a GPU
   * cache (src/model/expert_offload.ts): for models larger than the GPU. Default: all resident.
   */
  expertSlots?: number;
  /**
   * Where offloaded experts are kept: 'memory' (default), CPU stacks filled as the checkpoint
   * streams in; 'checkpoint', read from the checkpoint's files at each miss (nothing held, for
   * experts larger than the CPU's memory; an FP8 release or weights 'bf16').
   */
  expertStore?: ExpertStoreKind;
}

export const EXPERT_STORES = ['memory', 'checkpoint'] as const;
export type ExpertStoreKind = (typeof EXPERT_STORES)[number];

/** The MoE layers whose routed experts a load holds: the main model's and the MTP layer's (when loaded). */
export function moeLayerIndices(config: DeepseekV3Config, withMtp: boolean): Set<number> {
  const layers = new Set<number>();
  for (let L = 0; L < config.num_hidden_layers; L++) if (isMoeLayer(config, L)) layers.add(L);
  if (withMtp && config.mtp_layer_index !== null && isMoeLayer(config, config.mtp_layer_index)) layers.add(config.mtp_layer_index);
  return layers;
}

/** One buffer of a tensor: its rows (or, for a stack, experts) first .. first + count - 1. */
export interface WeightPiece {
  readonly buffer: GPUBuffer;
  readonly first: number;
  readonly count: number;
}

/** The binding limit a load plans with: the device's, or the lower one asked for. */
export function plannedBindingLimit(limits: Pick<GPUSupportedLimits, 'maxStorageBufferBindingSize' | 'maxBufferSize'>, maxBindingBytes?: number): number {
  if (maxBindingBytes !== undefined && !(maxBindingBytes >= 4)) throw new ArgumentError(`maxBindingBytes must be at least 4 bytes, got ${maxBindingBytes}`);
  return Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize, maxBindingBytes ?? Infinity);
}

/** The smallest binding limit the loader can place these weights under (smallestBufferLimit with its rule). */
export function smallestWeightBinding(onGpu: readonly GpuTensor[]): { bytes: number; tensor: string } {
  return smallestBufferLimit(onGpu, { rowSplittable });
}

/** placeTensors with the loader's rule of what may be split (src/model/weight_split.ts). */
export function placeWeights(onGpu: readonly GpuTensor[], maxBufferBytes?: number, where?: string): WeightBuffer[] {
  return placeTensors(onGpu, { maxBufferBytes, rowSplittable, where });
}

/**
 * What goes on the GPU: each tensor as stored or, for a block-scaled Linear of an unquantised
 * release in mode 'fp8', its e4m3 codes and `_scale_inv` (quantised at load: `toQuantise`).
 */
export function tensorsOnGpu(
  tensors: readonly TensorInfo[],
  expected: ReadonlyMap<string, ExpectedTensor>,
  mode: WeightMode,
): { onGpu: GpuTensor[]; toQuantise: Set<TensorInfo> } {
  const toQuantise = new Set(mode === 'fp8' ? tensors.filter((t) => expected.get(t.name)?.blockScaled && t.dtype in QUANTIZE_FROM) : []);
  const onGpu: GpuTensor[] = [];
  for (const t of tensors) {
    if (!toQuantise.has(t)) {
      onGpu.push(t);
      continue;
    }
    const [rows, cols] = t.shape;
    const scaleShape = scaleInvShape(rows, cols);
    onGpu.push({ name: t.name, dtype: 'F8_E4M3', shape: t.shape, byteLength: rows * cols });
    onGpu.push({ name: scaleInvName(t.name), dtype: 'F32', shape: scaleShape, byteLength: 4 * scaleShape[0] * scaleShape[1] });
  }
  return { onGpu, toQuantise };
}

/** Bytes of the weight buffers `tensorsOnGpu` would allocate (each padded to 4 bytes), split at `maxBufferBytes`. */
export function weightBytesOnGpu(onGpu: readonly GpuTensor[], maxBufferBytes?: number): number {
  return placedBytes(placeWeights(onGpu, maxBufferBytes));
}

/**
 * The GPU expert caches at `slots` per layer; where the GPU is out of memory for them, at half
 * as many, down to one (a smaller cache runs the same model, slower), before the download.
 */
async function allocateExpertCaches(device: GPUDevice, hosts: ReadonlyMap<number, ExpertStore>, slots: number, where: string): Promise<ExpertOffload> {
  for (let tried = slots; ; tried = Math.floor(tried / 2)) {
    let made: ExpertOffload | undefined;
    try {
      await withGpuErrorScope(device, `the expert caches of ${where} (${tried} experts per layer)`, () => (made = createExpertOffload(device, hosts, tried)));
      return made!;
    } catch (err) {
      made?.destroy();
      if (!(err instanceof GpuOutOfMemoryError) || tried === 1) throw err;
    }
  }
}

/** Load from a folder, or from a checkpoint already opened (its headers are not read again). */
export async function loadWeights(gpu: Gpu, from: CheckpointDir | Checkpoint, options: LoadWeightsOptions = {}): Promise<LoadedWeights> {
  const { signal } = options;
  const { device } = gpu;
  const mode = options.weights ?? 'fp8';
  if (!WEIGHT_MODES.includes(mode)) throw new ArgumentError(`weights must be one of ${WEIGHT_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  const checkpoint = 'tensors' in from ? from : await openCheckpoint(from, { signal });
  const dir = checkpoint.dir;
  const config = parseConfig(checkpoint.configText, `${dir.description}/${CONFIG_FILE}`);
  const expected = expectedTensors(config);
  assertTensors(expected, checkpoint.tensors, dir.description);

  const mtpPrefix = config.mtp_layer_index === null ? undefined : `model.layers.${config.mtp_layer_index}.`;
  const wanted = [...checkpoint.tensors.values()].filter((t) => !(options.skipMtp && mtpPrefix && t.name.startsWith(mtpPrefix)));
  const { onGpu: all, toQuantise } = tensorsOnGpu(wanted, expected, mode);
  const slots = options.expertSlots;
  if (slots !== undefined && !(Number.isInteger(slots) && slots >= 1 && slots <= config.n_routed_experts)) {
    throw new ArgumentError(`expertSlots must be an integer in [1, ${config.n_routed_experts}] (n_routed_experts), got ${slots}`);
  }
  const bindingLimit = plannedBindingLimit(device.limits, options.maxBindingBytes);
  // Offloaded experts go to their store (CPU stacks, or the checkpoint read per miss); each layer's cache of `slots` must fit one binding.
  const { resident: onGpu, offloaded } = slots === undefined ? { resident: all, offloaded: [] } : splitOffloaded(all, moeLayerIndices(config, !options.skipMtp));
  const layout = offloadLayout(offloaded);
  const store = options.expertStore ?? 'memory';
  if (!EXPERT_STORES.includes(store)) throw new ArgumentError(`expertStore must be one of ${EXPERT_STORES.join(', ')}, got ${JSON.stringify(store)}`);
  if (store === 'checkpoint') checkReadableExperts(offloaded, toQuantise, dir.description);
  // Experts read from the checkpoint per miss are not streamed at load.
  const streamed = store === 'checkpoint' ? wanted.filter((t) => !layout.of.has(t.name)) : wanted;
  if (slots !== undefined && offloaded.length > 0 && slotsWithinBinding(layout, bindingLimit) < slots) {
    throw new GpuLimitError(`${dir.description}: a cache of ${slots} experts per layer needs buffers over the largest storage binding webmoe plans with (${bindingLimit} bytes); at most ${slotsWithinBinding(layout, bindingLimit)} fit`);
  }
  // Refuses, before anything is allocated or read, a buffer that cannot be split small enough.
  const placed = placeWeights(onGpu, bindingLimit, dir.description);

  const buffers = new Map<string, GPUBuffer>();
  let quantizer: Fp8Quantizer | undefined;
  let offload: ExpertOffload | undefined;
  const destroy = () => {
    for (const b of buffers.values()) b.destroy();
    buffers.clear();
    offload?.destroy();
  };
  try {
    let bytesOnGpu = 0;
    await withGpuErrorScope(device, `the weights of ${dir.description}`, () => {
      for (const wb of placed) {
        const size = weightBufferSize(wb.byteLength);
        buffers.set(wb.name, device.createBuffer({ label: wb.name, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC }));
        bytesOnGpu += size;
      }
      const quantisedOnGpu = [...toQuantise].filter((t) => !layout.of.has(t.name));
      if (quantisedOnGpu.length > 0) quantizer = new Fp8Quantizer({ gpu, pipelines: options.pipelines ?? new PipelineCache(device) }, quantisedOnGpu);
    });
    const hosts = offloaded.length > 0 && store === 'memory' ? allocateHostExperts(layout) : undefined;
    if (offloaded.length > 0) {
      offload = await allocateExpertCaches(device, hosts ?? checkpointExperts(layout, checkpoint.tensors, checkpoint.sources), slots!, dir.description);
      bytesOnGpu += offload.cacheBytes;
    }
    const hostStack = (name: string) => {
      const at = layout.of.get(name)!;
      return { stack: hosts!.get(at.layer)!.byName.get(at.stacked)!, expert: at.expert };
    };

    // Each tensor's parts: its bytes [from, to) at `offset` of a buffer (one part unless split).
    const where = new Map<string, { buffer: GPUBuffer; offset: number; from: number; to: number }[]>();
    for (const wb of placed) {
      for (const m of wb.members) {
        const parts = where.get(m.tensor.name) ?? [];
        parts.push({ buffer: buffers.get(wb.name)!, offset: m.offset, from: m.from ?? 0, to: m.to ?? m.tensor.byteLength });
        where.set(m.tensor.name, parts);
      }
    }
    const place = (t: TensorInfo) => {
      if (layout.of.has(t.name)) {
        const { stack, expert } = hostStack(t.name);
        if (toQuantise.has(t)) return quantisingHostWriter(t, stack, hostStack(scaleInvName(t.name)).stack, expert);
        const writer = hostWriter(stack, expert);
        return checkedForFinite(t) ? finiteChecking(t, t.file, writer) : writer;
      }
      const parts = where.get(t.name)!;
      if (checkedForFinite(t)) return finiteChecking(t, t.file, parts.length === 1 ? tensorWriter(device, t, parts[0]) : splitWriter(device, t, parts));
      if (!toQuantise.has(t)) return parts.length === 1 ? parts[0] : splitWriter(device, t, parts);
      // Quantised: the codes [rows, cols] (1 byte each) and the scales go to pieces of the same rows.
      const cols = t.shape[1];
      const scales = where.get(scaleInvName(t.name))!;
      const targets = parts.map((p, k): { firstRow: number; rows: number; target: Fp8Target } => ({
        firstRow: p.from / cols,
        rows: (p.to - p.from) / cols,
        target: { codes: p.buffer, codeWord: p.offset / 4, scales: scales[k].buffer, scaleBase: scales[k].offset / 4 },
      }));
      return quantizer!.writer(t, targets);
    };
    const progress = new ProgressCounter(streamed.reduce((s, t) => s + t.byteLength, 0), options.onProgress);
    for (const file of checkpoint.files) {
      throwIfAborted(signal);
      const inFile = streamed.filter((t) => t.file === file);
      await uploadTensors(device, checkpoint.sources.get(file)!, inFile, place, { signal, progress, chunkBytes: options.chunkBytes });
    }
    await device.queue.onSubmittedWorkDone();
    const placement = new Map(placed.map((wb) => [wb.name, wb as WeightBuffer]));
    const piecesOf = new Map<string, WeightPiece[]>();
    for (const wb of placed) {
      if (!wb.piece) continue;
      const list = piecesOf.get(wb.piece.of) ?? [];
      list.push({ buffer: buffers.get(wb.name)!, first: wb.piece.first, count: wb.piece.count });
      piecesOf.set(wb.piece.of, list);
    }
    const tensors = new Map(all.map((t) => [t.name, t])); // offloaded experts too: as they are in CPU memory
    const fp8OnGpu = [...expected].some(([name, t]) => t.blockScaled && tensors.get(name)?.dtype === 'F8_E4M3');
    return {
      config,
      checkpoint,
      tensors,
      buffers,
      placement,
      pieces(name) {
        const split = piecesOf.get(name);
        if (split) return split;
        const wb = placement.get(name);
        if (!wb) throw new CheckpointError(`${name} is not loaded`);
        return [{ buffer: buffers.get(name)!, first: 0, count: wb.slotBytes ? wb.members.length : (wb.members[0].tensor.shape[0] ?? 1) }];
      },
      bytesOnGpu,
      weights: fp8OnGpu ? 'fp8' : 'bf16',
      quantisedTensors: toQuantise.size,
      offload,
      destroy,
    };
  } catch (err) {
    destroy();
    throw err;
  } finally {
    quantizer?.destroy();
  }
}
