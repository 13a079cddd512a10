// Small helpers over GPUBuffer: create from typed data, read back (tests, benchmarks and the
// sampled ids only; never inside a forward pass), and round sizes to WebGPU's rules.

export const STORAGE = GPUBufferUsageFlags();

function GPUBufferUsageFlags() {
  // GPUBufferUsage is a global in browsers and after src/gpu/node.ts has loaded Dawn; read lazily.
  return {
    get storage(): number {
      return GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    },
    get uniform(): number {
      return GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
    },
  };
}

/** WebGPU buffer sizes used with writeBuffer/copies must be multiples of 4. */
export function align4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

export function createStorageBuffer(device: GPUDevice, byteLength: number, label: string): GPUBuffer {
  return device.createBuffer({ label, size: Math.max(4, align4(byteLength)), usage: STORAGE.storage });
}

/** A storage buffer holding `data` (padded with zeros to a multiple of 4 bytes). */
export function uploadBuffer(device: GPUDevice, data: ArrayBufferView, label: string): GPUBuffer {
  const buffer = createStorageBuffer(device, data.byteLength, label);
  writeBufferPadded(device, buffer, 0, data);
  return buffer;
}

/** writeBuffer that accepts lengths that are not a multiple of 4 by zero-padding the tail. */
export function writeBufferPadded(device: GPUDevice, buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
  const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  const whole = bytes.byteLength & ~3;
  if (whole > 0) device.queue.writeBuffer(buffer, offset, bytes, 0, whole);
  if (whole < bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(whole));
    device.queue.writeBuffer(buffer, offset + whole, tail);
  }
}

/** Copy `byteLength` bytes of `buffer` back to the CPU. */
export async function readBuffer(device: GPUDevice, buffer: GPUBuffer, byteLength = buffer.size, offset = 0): Promise<ArrayBuffer> {
  const size = align4(byteLength);
  const staging = device.createBuffer({ label: 'readback', size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    const encoder = device.createCommandEncoder({ label: 'readback' });
    encoder.copyBufferToBuffer(buffer, offset, staging, 0, size);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    return staging.getMappedRange().slice(0, byteLength);
  } finally {
    staging.destroy();
  }
}

export async function readF32(device: GPUDevice, buffer: GPUBuffer, count?: number): Promise<Float32Array> {
  return new Float32Array(await readBuffer(device, buffer, (count ?? buffer.size / 4) * 4));
}

export async function readU32(device: GPUDevice, buffer: GPUBuffer, count?: number): Promise<Uint32Array> {
  return new Uint32Array(await readBuffer(device, buffer, (count ?? buffer.size / 4) * 4));
}
