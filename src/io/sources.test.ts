import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AbortError, CheckpointError, MissingFileError } from '../errors.ts';
import { nodeDir, nodeFileSource } from './node_source.ts';
import { blobSource, bytesSource, directoryHandleDir, filesDir, memoryDir, TEXT_FILE_MAX_BYTES, textFileMaxBytes, type CheckpointDir } from './sources.ts';

const bytes = new Uint8Array(100).map((_, i) => i * 3);
const config = '{"model_type": "deepseek_v3"}';

/** The same checks for every kind of folder: found, missing, ranges, bounds, abort. */
async function checkDir(dir: CheckpointDir): Promise<void> {
  expect(await dir.exists('model.safetensors')).toBe(true);
  expect(await dir.exists('missing.json')).toBe(false);
  expect(await dir.readText('config.json')).toBe(config);
  await expect(dir.readText('missing.json')).rejects.toBeInstanceOf(MissingFileError);
  // Bounded reads: the exact size passes, one byte less is refused, naming the file and the cap.
  expect(await dir.readText('config.json', undefined, config.length)).toBe(config);
  const over = dir.readText('config.json', undefined, config.length - 1);
  await expect(over).rejects.toBeInstanceOf(CheckpointError);
  await expect(over).rejects.toThrow(`config.json is over ${config.length - 1} bytes`);
  await expect(dir.readText('config.json', AbortSignal.abort())).rejects.toBeInstanceOf(AbortError);
  await expect(dir.open('missing.safetensors')).rejects.toThrow(/missing\.safetensors not found in /);
  const src = await dir.open('model.safetensors');
  expect(src.name).toBe('model.safetensors');
  expect(await src.size()).toBe(100);
  expect(Array.from(await src.read(97, 3))).toEqual([291 & 255, 294 & 255, 297 & 255]);
  expect((await src.read(100, 0)).byteLength).toBe(0);
  await expect(src.read(98, 3)).rejects.toThrow(/model\.safetensors: read of bytes \[98, 101\) is past the end of the file \(100 bytes\)/);
  await expect(src.read(-1, 3)).rejects.toBeInstanceOf(CheckpointError);
  await expect(src.read(0, 3, AbortSignal.abort())).rejects.toBeInstanceOf(AbortError);
}

describe('byte sources and checkpoint folders', () => {
  it('memoryDir and bytesSource', async () => {
    await checkDir(memoryDir('memory', { 'model.safetensors': bytes, 'config.json': config }));
    const src = bytesSource('x', bytes);
    const copy = await src.read(0, 4);
    copy[0] = 99; // a read is a copy, not a view of the file
    expect((await src.read(0, 1))[0]).toBe(0);
  });

  it('filesDir matches a picked folder by name, shallowest first', async () => {
    const picked = (name: string, data: BlobPart, path: string) => {
      const f = new File([data], name);
      Object.defineProperty(f, 'webkitRelativePath', { value: path });
      return f;
    };
    const dir = filesDir([
      picked('model.safetensors', new Uint8Array(5), 'ckpt/old/model.safetensors'),
      picked('model.safetensors', bytes, 'ckpt/model.safetensors'),
      picked('config.json', config, 'ckpt/config.json'),
    ]);
    expect(dir.description).toBe('the folder "ckpt"');
    await checkDir(dir);
    // Drag and drop: bare names.
    await checkDir(filesDir([new File([bytes], 'model.safetensors'), new File([config], 'config.json')]));
  });

  it('directoryHandleDir over the File System Access API', async () => {
    const table: Record<string, File> = { 'model.safetensors': new File([bytes], 'model.safetensors'), 'config.json': new File([config], 'config.json') };
    const handle = {
      name: 'ckpt',
      async getFileHandle(name: string) {
        if (name === 'sub') throw new DOMException('a folder', 'TypeMismatchError');
        if (!table[name]) throw new DOMException('no such file', 'NotFoundError');
        return { getFile: async () => table[name] };
      },
    } as unknown as FileSystemDirectoryHandle;
    const dir = directoryHandleDir(handle);
    await checkDir(dir);
    expect(await dir.exists('sub')).toBe(false);
  });

  it('blobSource notices a file that changed under it', async () => {
    const blob = new Blob([bytes]);
    const lying = { size: 200, slice: (a: number, b: number) => blob.slice(a, b) } as unknown as Blob;
    await expect(blobSource('f', lying).read(90, 20)).rejects.toThrow(/the file changed/);
  });

  it('caps each text file by name: configs 1 MiB, tokenizer.json and the index 64 MiB', async () => {
    expect(textFileMaxBytes('config.json')).toBe(1 << 20);
    expect(textFileMaxBytes('tokenizer.json')).toBe(64 << 20);
    expect(textFileMaxBytes('model.safetensors.index.json')).toBe(64 << 20);
    expect(textFileMaxBytes('other.json')).toBe(64 << 20);
    expect(textFileMaxBytes('__proto__')).toBe(64 << 20);
    const cap = TEXT_FILE_MAX_BYTES['config.json'];
    // With no maxBytes argument the file's own cap applies, in every kind of folder.
    const big = new Uint8Array(cap + 1).fill(0x20);
    const dirs = [
      memoryDir('memory', { 'config.json': big }),
      filesDir([new File([big], 'config.json')]),
      directoryHandleDir({ name: 'ckpt', getFileHandle: async () => ({ getFile: async () => new File([big], 'config.json') }) } as unknown as FileSystemDirectoryHandle),
    ];
    for (const dir of dirs) await expect(dir.readText('config.json')).rejects.toThrow(`config.json is over ${cap} bytes (it has ${cap + 1})`);
    expect((await memoryDir('m', { 'config.json': big.subarray(1) }).readText('config.json')).length).toBe(cap);
  });

  const tmp = mkdtempSync(join(tmpdir(), 'webmoe-io-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  /** The promise's outcome, or 'hung' after `ms` (the bug was a read that never returns). */
  const within = <T,>(p: Promise<T>, ms: number) =>
    Promise.race([p.then(() => 'resolved', (e: unknown) => e), new Promise((r) => setTimeout(() => r('hung'), ms))]);

  it('nodeDir reads text files whole up to their cap, never past it', async () => {
    const dir = join(tmp, 'big');
    mkdirSync(dir);
    const cap = TEXT_FILE_MAX_BYTES['config.json'];
    writeFileSync(join(dir, 'config.json'), Buffer.alloc(cap + 1, 0x20));
    await expect(nodeDir(dir).readText('config.json')).rejects.toThrow(`config.json is over ${cap} bytes (it has ${cap + 1})`);
    writeFileSync(join(dir, 'config.json'), Buffer.alloc(cap, 0x20));
    expect((await nodeDir(dir).readText('config.json')).length).toBe(cap);
    mkdirSync(join(dir, 'tokenizer.json'));
    await expect(nodeDir(dir).readText('tokenizer.json')).rejects.toBeInstanceOf(MissingFileError);
  });

  it('nodeDir refuses a config.json that is /dev/zero, and returns', { skip: process.platform === 'win32' }, async () => {
    const dir = join(tmp, 'zero');
    mkdirSync(dir);
    symlinkSync('/dev/zero', join(dir, 'config.json'));
    const outcome = await within(nodeDir(dir).readText('config.json'), 5000);
    expect(outcome).toBeInstanceOf(CheckpointError);
    expect(String(outcome)).toMatch(/config\.json in .* is not a regular file/);
  });

  it('nodeDir refuses a config.json that is a FIFO, and returns', { skip: process.platform === 'win32' }, async () => {
    const dir = join(tmp, 'fifo');
    mkdirSync(dir);
    const fifo = join(dir, 'config.json');
    execFileSync('mkfifo', [fifo]);
    try {
      const outcome = await within(nodeDir(dir).readText('config.json'), 5000);
      expect(outcome).toBeInstanceOf(CheckpointError);
      expect(String(outcome)).toMatch(/config\.json in .* is not a regular file/);
    } finally {
      // Should a read still wait for a writer (the bug), be one for a moment so that it ends.
      closeSync(openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK));
    }
  });

  it('nodeDir and nodeFileSource', async () => {
    writeFileSync(join(tmp, 'model.safetensors'), bytes);
    writeFileSync(join(tmp, 'config.json'), config);
    await checkDir(nodeDir(tmp));
    await expect(nodeFileSource(join(tmp, 'gone.bin')).size()).rejects.toThrow(/gone\.bin not found in /);
    // A file that shrinks after its size was read.
    const src = nodeFileSource(join(tmp, 'model.safetensors'));
    await src.size();
    writeFileSync(join(tmp, 'model.safetensors'), bytes.subarray(0, 50));
    await expect(src.read(40, 20)).rejects.toThrow(/the file ended at 50/);
  });
});
