// Block-scaled FP8 made on the GPU while a BF16 / F16 / F32 release streams in (weights 'fp8'):
// each Linear the FP8 release quantises goes through a staging buffer a band of 128-row blocks at
// a time, and quantize_fp8 writes its e4m3 codes and 128x128 block scales where an FP8 release's
// would be (src/model/placement.ts), so the FP8 kernels read them unchanged and the BF16 bytes
// never occupy GPU memory beyond one band.

import { ArgumentError } from '../errors.ts';
import { align4 } from '../gpu/buffers.ts';
import { BLOCK, submitPass, type KernelContext } from '../gpu/kernel.ts';
import type { TensorInfo } from '../io/safetensors.ts';
import type { ChunkWriter } from '../io/stream_to_gpu.ts';
import { createQuantizeFp8, SOURCE_ELEMENT_BYTES, type QuantizeFp8, type QuantizeSourceDtype } from '../kernels/quantize_fp8.ts';

/** The release dtypes a Linear may be quantised from. */
export const QUANTIZE_FROM: Readonly<Record<string, QuantizeSourceDtype>> = { BF16: 'bf16', F16: 'f16', F32: 'f32' };

/** Bytes of source held per band (at least one 128-row block of the widest Linear). */
const BAND_BYTES = 16 << 20;

/** Where a quantised tensor's codes and scales go: word / element offsets of its slot. */
export interface Fp8Target {
  codes: GPUBuffer;
  codeWord: number;
  scales: GPUBuffer;
  scaleBase: number;
}

/** One load's quantiser: the staging buffers, sized for the tensors it will be given. */
export class Fp8Quantizer {
  private readonly kernels = new Map<QuantizeSourceDtype, QuantizeFp8>();
  private readonly staging: GPUBuffer;
  private readonly host: Uint8Array<ArrayBuffer>;
  /** The writer whose band is in `host` (tensors of a file arrive one after another). */
  private active: ChunkWriter | undefined;

  /** `tensors`: every tensor this load will quantise (sizes the staging). */
  constructor(
    private readonly ctx: KernelContext,
    tensors: readonly TensorInfo[],
  ) {
    let capacity = 4;
    for (const t of tensors) capacity = Math.max(capacity, Math.min(t.byteLength, bandRows(t) * rowBytes(t)));
    capacity = align4(capacity);
    this.host = new Uint8Array(capacity);
    this.staging = ctx.gpu.device.createBuffer({ label: 'fp8 quantisation staging', size: capacity, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  }

  /** A writer that quantises `tensor` [rows, cols] into `target` as its bytes arrive. */
  writer(tensor: TensorInfo, target: Fp8Target): ChunkWriter {
    const dtype = QUANTIZE_FROM[tensor.dtype];
    if (!dtype || tensor.shape.length !== 2) throw new ArgumentError(`${tensor.name}: cannot quantise a ${tensor.dtype} [${tensor.shape}] tensor to FP8`);
    let kernel = this.kernels.get(dtype);
    if (!kernel) this.kernels.set(dtype, (kernel = createQuantizeFp8(this.ctx, { dtype })));
    const [rows, cols] = tensor.shape;
    const perBand = bandRows(tensor);
    const bytesPerRow = rowBytes(tensor);
    const { device } = this.ctx.gpu;
    let firstRow = 0;
    let filled = 0; // bytes of the current band in host
    const writer: ChunkWriter = {
      write: (chunk, offsetInTensor) => {
        if (this.active !== undefined && this.active !== writer) throw new ArgumentError(`${tensor.name}: bytes arrived while another tensor was being quantised`);
        this.active = writer;
        if (offsetInTensor !== firstRow * bytesPerRow + filled) throw new ArgumentError(`${tensor.name}: chunks out of order`);
        let data = chunk;
        while (data.byteLength > 0) {
          const band = Math.min(perBand, rows - firstRow);
          const take = Math.min(data.byteLength, band * bytesPerRow - filled);
          this.host.set(data.subarray(0, take), filled);
          filled += take;
          data = data.subarray(take);
          if (filled < band * bytesPerRow) continue;
          // A whole band: stage it (writeBuffer copies at once, so host is free again) and quantise.
          const padded = align4(filled);
          this.host.fill(0, filled, padded);
          device.queue.writeBuffer(this.staging, 0, this.host, 0, padded);
          const call = kernel.prepare({
            rows,
            cols,
            firstRow,
            bandRows: band,
            source: { buffer: this.staging, size: padded },
            ...target,
            label: `${tensor.name} to fp8`,
          });
          submitPass(device, call);
          call.destroy(); // its params go once the queued work is done
          firstRow += band;
          filled = 0;
          if (firstRow === rows) this.active = undefined;
        }
      },
      finish: () => {
        if (firstRow !== rows) throw new ArgumentError(`${tensor.name}: got ${firstRow * bytesPerRow + filled} of ${tensor.byteLength} bytes`);
      },
    };
    return writer;
  }

  destroy(): void {
    this.staging.destroy();
  }
}

/** Bytes of one row of a tensor this quantiser takes (its dtype is in QUANTIZE_FROM). */
function rowBytes(t: TensorInfo): number {
  return t.shape[1] * SOURCE_ELEMENT_BYTES[QUANTIZE_FROM[t.dtype]];
}

/** Rows per band: whole 128-row blocks, as many as BAND_BYTES holds, at least one block. */
function bandRows(t: TensorInfo): number {
  return Math.max(BLOCK, Math.floor(BAND_BYTES / (rowBytes(t) * BLOCK)) * BLOCK);
}
