// Argument checks shared by the two MLA kernels over the latent cache (mla_decode, mla_prefill):
// both take q_lat, q_pe, one layer of the cache and o_lat with the same shapes and layout.

export interface MlaBuffers {
  rows: number;
  heads: number;
  kvLoraRank: number;
  ropeDim: number;
  maxT: number;
  qLat: GPUBuffer;
  qPe: GPUBuffer;
  cache: GPUBuffer;
  cacheByteOffset?: number;
  oLat: GPUBuffer;
}

/** Throws a RangeError naming the kernel (`label`) and the argument that does not fit. */
export function checkMlaArgs(device: GPUDevice, label: string, args: MlaBuffers): void {
  const { rows, heads, kvLoraRank: rkv, ropeDim: dr, maxT } = args;
  for (const [name, v] of Object.entries({ rows, heads, kvLoraRank: rkv, maxT })) {
    if (!(Number.isInteger(v) && v > 0)) throw new RangeError(`${label}: ${name} must be a positive integer, got ${v}`);
  }
  if (!(Number.isInteger(dr) && dr >= 0)) throw new RangeError(`${label}: ropeDim must be a non-negative integer, got ${dr}`);
  // The shaders read vec4s (V3: 512 and 64; the fixture: 256 and 32).
  if (rkv % 4 !== 0 || dr % 4 !== 0) throw new RangeError(`${label}: kvLoraRank ${rkv} and ropeDim ${dr} must be multiples of 4`);
  const cacheByteOffset = args.cacheByteOffset ?? 0;
  if (cacheByteOffset % device.limits.minStorageBufferOffsetAlignment !== 0) {
    throw new RangeError(`${label}: cacheByteOffset ${cacheByteOffset} is not a multiple of ${device.limits.minStorageBufferOffsetAlignment}`);
  }
  checkSize(label, 'cache', args.cache, cacheByteOffset + 4 * maxT * (rkv + dr));
  checkSize(label, 'qLat', args.qLat, 4 * rows * heads * rkv);
  // dr = 0 would be an empty binding: the kernels bind one vec4 that is never read.
  checkSize(label, 'qPe', args.qPe, 4 * Math.max(4, rows * heads * dr));
  checkSize(label, 'oLat', args.oLat, 4 * rows * heads * rkv);
}

/** Throws unless query rows startPos .. startPos + rows - 1 fit the cache. */
export function checkStartPos(label: string, startPos: number, rows: number, maxT: number): void {
  if (!(Number.isInteger(startPos) && startPos >= 0 && startPos + rows <= maxT)) {
    throw new RangeError(`${label}: startPos ${startPos} + ${rows} query rows does not fit the cache of ${maxT} positions`);
  }
}

function checkSize(label: string, name: string, buffer: GPUBuffer, needed: number): void {
  if (buffer.size < needed) throw new RangeError(`${label}: ${name} is ${buffer.size} bytes, needs ${needed}`);
}
