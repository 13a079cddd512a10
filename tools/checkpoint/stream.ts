// Real-size checkpoints on disk (Node only): the headers first, from the config alone
// (layout.ts), then every tensor generated 128 rows at a time (generate.ts `tensorBands`) and
// written at its offset through file handles. At most one band of one tensor is in memory, plus
// the few writes in flight, so a checkpoint of any size streams through a few MiB. The files are
// byte for byte what generateCheckpoint returns for the same config, seed and shards.

import { mkdir, open, statfs, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ArgumentError } from '../../src/errors.ts';
import { BLOCK } from '../../src/gpu/kernel.ts';
import { expectedTensors } from '../../src/model/weights.ts';
import { tensorBands } from './generate.ts';
import { INDEX_FILE, planCheckpoint, type CheckpointLayout, type LayoutOptions } from './layout.ts';

export interface StreamProgress {
  readonly bytesDone: number;
  readonly bytesTotal: number;
  /** The tensor being generated. */
  readonly tensor: string;
  readonly seconds: number;
}

export interface StreamOptions extends LayoutOptions {
  /** config.json contents (Hugging Face keys); validated by parseConfig and written as given. */
  readonly config: Record<string, unknown>;
  readonly seed?: number;
  /** Called every `progressIntervalMs` (default 2000) and once at the end. */
  readonly onProgress?: (progress: StreamProgress) => void;
  readonly progressIntervalMs?: number;
}

export interface StreamedCheckpoint {
  readonly layout: CheckpointLayout;
  /** Every file written, with its size: config.json, the safetensors file(s), the index when sharded. */
  readonly files: readonly { readonly name: string; readonly bytes: number }[];
  readonly seconds: number;
}

/** Writes in flight at most: generation (CPU) overlaps the disk without holding more than a few bands. */
const MAX_PENDING_WRITES = 8;

/**
 * Generate the checkpoint `options.config` describes into `dir` (created if needed; files
 * overwritten). Refuses, before writing, a checkpoint larger than the free space of `dir`.
 */
export async function writeCheckpointStreaming(dir: string, options: StreamOptions): Promise<StreamedCheckpoint> {
  const started = performance.now();
  const layout = planCheckpoint(options.config, options);
  await mkdir(dir, { recursive: true });
  const disk = await statfs(dir);
  const free = disk.bavail * disk.bsize;
  if (layout.fileBytes > free) {
    throw new ArgumentError(`the checkpoint needs ${gib(layout.fileBytes)} on disk, ${dir} has ${gib(free)} free`);
  }

  const handles = new Map<string, FileHandle>();
  const pending = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  const write = async (file: string, bytes: Uint8Array, position: number) => {
    while (pending.size >= MAX_PENDING_WRITES) await Promise.race(pending);
    if (failure) throw failure.error;
    const p: Promise<void> = handles
      .get(file)!
      .write(bytes, 0, bytes.byteLength, position)
      .then(
        () => {},
        (error: unknown) => {
          failure ??= { error };
        },
      )
      .finally(() => pending.delete(p));
    pending.add(p);
  };
  const seed = options.seed ?? 0;
  const interval = options.progressIntervalMs ?? 2000;
  const report = (tensor: string) => options.onProgress?.({ bytesDone, bytesTotal: layout.fileBytes, tensor, seconds: (performance.now() - started) / 1000 });
  let bytesDone = 0;
  let lastReport = performance.now();
  try {
    for (const f of layout.files) {
      handles.set(f.name, await open(join(dir, f.name), 'w'));
      await write(f.name, f.header, 0);
      bytesDone += f.header.byteLength;
    }
    const expected = expectedTensors(layout.config);
    for (const t of layout.tensors) {
      if (t.scaleOf) continue; // written with its weight's bands
      const file = layout.fileOf.get(t.name)!;
      const at = file.offsets.get(t.name)!;
      const rowBytes = t.byteLength / t.rows;
      const scaleFile = t.scaleInv ? layout.fileOf.get(t.scaleInv)! : undefined;
      for (const band of tensorBands(layout.config, seed, t.name, expected)) {
        await write(file.name, band.data, at + band.row * rowBytes);
        bytesDone += band.data.byteLength;
        if (band.scaleInv) {
          await write(scaleFile!.name, band.scaleInv, scaleFile!.offsets.get(t.scaleInv!)! + (band.row / BLOCK) * band.scaleInv.byteLength);
          bytesDone += band.scaleInv.byteLength;
        }
        if (performance.now() - lastReport >= interval) {
          lastReport = performance.now();
          report(t.name);
        }
      }
    }
    await Promise.all(pending);
    if (failure) throw failure.error;
    if (bytesDone !== layout.fileBytes) throw new Error(`generator: wrote ${bytesDone} bytes of safetensors, the layout has ${layout.fileBytes}`);
  } finally {
    await Promise.all(pending);
    await Promise.all([...handles.values()].map((h) => h.close()));
  }
  await writeFile(join(dir, 'config.json'), layout.configJson);
  const files = [{ name: 'config.json', bytes: layout.configJson.byteLength }, ...layout.files.map((f) => ({ name: f.name, bytes: f.size }))];
  if (layout.index) {
    await writeFile(join(dir, INDEX_FILE), layout.index);
    files.push({ name: INDEX_FILE, bytes: layout.index.byteLength });
  }
  report('');
  return { layout, files, seconds: (performance.now() - started) / 1000 };
}

/** A progress printer for long runs: one line on stderr per report. */
export function stderrProgress(label: string): (p: StreamProgress) => void {
  return (p) => {
    const rate = p.bytesDone / 2 ** 20 / Math.max(p.seconds, 1e-3);
    const eta = rate > 0 ? (p.bytesTotal - p.bytesDone) / 2 ** 20 / rate : 0;
    const where = p.tensor ? `, ${p.tensor}` : ', done';
    process.stderr.write(
      `[${label}] ${gib(p.bytesDone)} / ${gib(p.bytesTotal)} (${((100 * p.bytesDone) / p.bytesTotal).toFixed(0)}%), ${rate.toFixed(0)} MiB/s, ${p.seconds.toFixed(0)} s, ETA ${eta.toFixed(0)} s${where}\n`,
    );
  };
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}
