// Put a generated checkpoint on disk (Node only).

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateCheckpoint, type GeneratedCheckpoint, type GenerateOptions } from './generate.ts';

/** Generate a checkpoint and write its files into `dir` (created if needed; files overwritten). */
export async function writeCheckpoint(dir: string, options: GenerateOptions): Promise<GeneratedCheckpoint> {
  const checkpoint = generateCheckpoint(options);
  await mkdir(dir, { recursive: true });
  for (const [name, bytes] of checkpoint.files) await writeFile(join(dir, name), bytes);
  return checkpoint;
}
