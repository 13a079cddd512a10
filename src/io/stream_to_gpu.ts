// Stream tensor bytes from a ByteSource to the GPU (or any sink) in bounded chunks, so a
// checkpoint of any size passes through JS memory a few MiB at a time. Neighbouring tensors of
// one file are read together (a shard has thousands of small ones: one request each would be
// slow over HTTP); the next chunk is fetched while the current one is written.

import { ArgumentError, throwIfAborted } from '../errors.ts';
import { align4, createStorageBuffer } from '../gpu/buffers.ts';
import type { TensorInfo } from './safetensors.ts';
import type { ByteSource } from './sources.ts';

/** One progress report: bytes of tensor data delivered so far, of all those asked for. */
export interface LoadProgress {
  bytesDone: number;
  bytesTotal: number;
  file: string;
  tensor?: string;
  fromCache?: boolean;
}

/** Counts bytes across many files and tensors, for one progress bar. */
export class ProgressCounter {
  bytesDone = 0;
  constructor(
    readonly bytesTotal: number,
    private readonly onProgress?: (progress: LoadProgress) => void,
  ) {}

  add(bytes: number, file: string, tensor?: string, fromCache?: boolean): void {
    this.bytesDone += bytes;
    this.onProgress?.({ bytesDone: this.bytesDone, bytesTotal: this.bytesTotal, file, tensor, fromCache });
  }
}

export interface StreamOptions {
  /** Bytes per read (default 8 MiB; rounded up to a multiple of 4). */
  chunkBytes?: number;
  signal?: AbortSignal;
  progress?: ProgressCounter;
  /** Tensors at most this far apart are read in one pass, gap included (default 1 MiB). */
  maxGapBytes?: number;
}

/** Receives a tensor's bytes in order: `chunk` holds bytes [offsetInTensor, offsetInTensor + chunk.length). */
export type TensorSink = (tensor: TensorInfo, chunk: Uint8Array<ArrayBuffer>, offsetInTensor: number) => void | Promise<void>;

export const DEFAULT_CHUNK_BYTES = 8 << 20;
/** Wait for the GPU queue after this many bytes, so pending writeBuffer copies do not pile up. */
const FLUSH_BYTES = 64 << 20;

/** Stream `tensors` (all from `source`) to `sink`, in file order; empty tensors get no call. */
export async function streamTensors(source: ByteSource, tensors: readonly TensorInfo[], sink: TensorSink, options: StreamOptions = {}): Promise<void> {
  const chunkBytes = align4(Math.max(4, options.chunkBytes ?? DEFAULT_CHUNK_BYTES));
  const maxGap = options.maxGapBytes ?? 1 << 20;
  const sorted = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.byteOffset - b.byteOffset);
  for (const t of sorted) {
    if (t.file !== source.name) throw new ArgumentError(`tensor "${t.name}" is in ${t.file}, not in ${source.name}`);
  }

  // Runs of nearby tensors, then reads of at most chunkBytes covering each run.
  const reads: { offset: number; length: number; first: number }[] = [];
  for (let i = 0; i < sorted.length; ) {
    const start = sorted[i].byteOffset;
    let end = start + sorted[i].byteLength;
    const first = i++;
    while (i < sorted.length && sorted[i].byteOffset - end <= maxGap) {
      end = Math.max(end, sorted[i].byteOffset + sorted[i].byteLength);
      i++;
    }
    for (let at = start; at < end; at += chunkBytes) reads.push({ offset: at, length: Math.min(chunkBytes, end - at), first });
  }

  const fetchRead = (k: number) => {
    throwIfAborted(options.signal);
    const p = source.read(reads[k].offset, reads[k].length, options.signal);
    p.catch(() => {}); // awaited below; this only stops an unhandled rejection if we stop early
    return p;
  };
  let pending = reads.length > 0 ? fetchRead(0) : undefined;
  let cursor = 0; // first tensor that may still have bytes to deliver
  for (let k = 0; k < reads.length; k++) {
    const bytes = await pending!;
    pending = k + 1 < reads.length ? fetchRead(k + 1) : undefined;
    const { offset, length } = reads[k];
    let delivered = 0;
    let last: TensorInfo | undefined;
    // Every tensor of this run that overlaps [offset, offset + length).
    cursor = Math.max(cursor, reads[k].first);
    while (sorted[cursor].byteOffset + sorted[cursor].byteLength <= offset) cursor++;
    for (let i = cursor; i < sorted.length && sorted[i].byteOffset < offset + length; i++) {
      const t = sorted[i];
      const from = Math.max(offset, t.byteOffset);
      const to = Math.min(offset + length, t.byteOffset + t.byteLength);
      if (from >= to) continue;
      await sink(t, bytes.subarray(from - offset, to - offset), from - t.byteOffset);
      delivered += to - from;
      last = t;
    }
    options.progress?.add(delivered, source.name, last?.name, source.fromCache);
    throwIfAborted(options.signal);
  }
}

/**
 * Receives one tensor's bytes in order and puts them somewhere of its own (the loader's FP8
 * quantiser stages them); `finish` comes after the last byte.
 */
export interface ChunkWriter {
  write(chunk: Uint8Array<ArrayBuffer>, offsetInTensor: number): void;
  finish(): void;
}

/** Where a tensor goes on the GPU: `offset` must be a multiple of 4. */
export interface GpuPlacement {
  buffer: GPUBuffer;
  offset: number;
}

/**
 * Upload tensors of one file to their GPU buffers, or hand them to their own ChunkWriter.
 * queue.writeBuffer needs 4-byte multiples:
 * chunk edges that fall inside a word are carried over, and a tensor's last word is zero-padded.
 */
export async function uploadTensors(
  device: GPUDevice,
  source: ByteSource,
  tensors: readonly TensorInfo[],
  place: (tensor: TensorInfo) => GpuPlacement | ChunkWriter,
  options: StreamOptions = {},
): Promise<void> {
  const writers = new Map<TensorInfo, ChunkWriter>();
  for (const t of tensors) {
    const to = place(t);
    writers.set(t, 'buffer' in to ? new TensorWriter(device, t, to) : to);
  }
  let sinceFlush = 0;
  await streamTensors(source, tensors, async (t, chunk, at) => {
    writers.get(t)!.write(chunk, at);
    sinceFlush += chunk.byteLength;
    if (sinceFlush >= FLUSH_BYTES) {
      sinceFlush = 0;
      device.queue.submit([]); // runs the pending writes, so the wait below covers them
      await device.queue.onSubmittedWorkDone();
    }
  }, options);
  for (const w of writers.values()) w.finish();
}

/** A writer of one tensor's bytes into `at` (what uploadTensors makes of a GpuPlacement). */
export function tensorWriter(device: GPUDevice, tensor: TensorInfo, at: GpuPlacement): ChunkWriter {
  return new TensorWriter(device, tensor, at);
}

/**
 * A writer for a tensor split over several buffers (src/model/placement.ts): its bytes [from, to)
 * go to each part's buffer at `offset`, each part's last word zero-padded.
 */
export function splitWriter(device: GPUDevice, tensor: TensorInfo, parts: readonly (GpuPlacement & { from: number; to: number })[]): ChunkWriter {
  const writers = parts.map((p) => ({ ...p, writer: new TensorWriter(device, { ...tensor, name: `${tensor.name} bytes ${p.from}..${p.to}`, byteLength: p.to - p.from }, p) }));
  return {
    write(chunk, offsetInTensor) {
      const end = offsetInTensor + chunk.byteLength;
      for (const p of writers) {
        const from = Math.max(p.from, offsetInTensor);
        const to = Math.min(p.to, end);
        if (from < to) p.writer.write(chunk.subarray(from - offsetInTensor, to - offsetInTensor), from - p.from);
      }
    },
    finish() {
      for (const p of writers) p.writer.finish();
    },
  };
}

/** Upload one tensor into a new storage buffer (or `buffer` at `bufferOffset`). */
export async function uploadTensor(
  device: GPUDevice,
  source: ByteSource,
  tensor: TensorInfo,
  options: StreamOptions & { buffer?: GPUBuffer; bufferOffset?: number; label?: string } = {},
): Promise<GPUBuffer> {
  const buffer = options.buffer ?? createStorageBuffer(device, tensor.byteLength, options.label ?? tensor.name);
  try {
    await uploadTensors(device, source, [tensor], () => ({ buffer, offset: options.bufferOffset ?? 0 }), options);
  } catch (e) {
    if (!options.buffer) buffer.destroy();
    throw e;
  }
  return buffer;
}

/** Writes one tensor's chunks in order, holding back the 0-3 bytes of a word split by a chunk edge. */
class TensorWriter implements ChunkWriter {
  private readonly carry = new Uint8Array(4);
  private carried = 0;
  /** Bytes already written: always a multiple of 4. */
  private written = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly tensor: TensorInfo,
    private readonly at: GpuPlacement,
  ) {
    if (at.offset % 4 !== 0 || at.offset < 0) throw new ArgumentError(`tensor "${tensor.name}": GPU buffer offset ${at.offset} is not a multiple of 4`);
    if (at.offset + align4(tensor.byteLength) > at.buffer.size) {
      throw new ArgumentError(`tensor "${tensor.name}" (${tensor.byteLength} bytes) does not fit in buffer "${at.buffer.label}" (${at.buffer.size} bytes) at ${at.offset}`);
    }
  }

  write(chunk: Uint8Array<ArrayBuffer>, offsetInTensor: number): void {
    if (offsetInTensor !== this.written + this.carried) throw new ArgumentError(`tensor "${this.tensor.name}": chunks out of order`);
    let data = chunk;
    if (this.carried > 0) {
      const take = Math.min(4 - this.carried, data.byteLength);
      this.carry.set(data.subarray(0, take), this.carried);
      this.carried += take;
      data = data.subarray(take);
      if (this.carried < 4) return;
      this.device.queue.writeBuffer(this.at.buffer, this.at.offset + this.written, this.carry);
      this.written += 4;
      this.carried = 0;
    }
    const whole = data.byteLength & ~3;
    if (whole > 0) {
      this.device.queue.writeBuffer(this.at.buffer, this.at.offset + this.written, data, 0, whole);
      this.written += whole;
    }
    this.carry.set(data.subarray(whole));
    this.carried = data.byteLength - whole;
  }

  /** Write the zero-padded last word. */
  finish(): void {
    if (this.written + this.carried !== this.tensor.byteLength) {
      throw new ArgumentError(`tensor "${this.tensor.name}": got ${this.written + this.carried} of ${this.tensor.byteLength} bytes`);
    }
    if (this.carried === 0) return;
    this.carry.fill(0, this.carried);
    this.device.queue.writeBuffer(this.at.buffer, this.at.offset + this.written, this.carry);
    this.written += 4;
    this.carried = 0;
  }
}
