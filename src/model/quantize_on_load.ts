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

  /**
   * A writer that quantises `tensor` [rows, cols] into `targets` as its bytes arrive: one target,
   * or the row pieces of a split tensor (each rows firstRow .. firstRow + rows - 1, on 128-row
   * blocks, in order), each holding its rows' codes and scales from its own start.
   */
  writer(tensor: TensorInfo, targets: Fp8Target | readonly Fp8Piece[]): ChunkWriter {
    const dtype = QUANTIZE_FROM[tensor.dtype];
    if (!dtype || tensor.shape.length !== 2) throw new ArgumentError(`${tensor.name}: cannot quantise a ${tensor.dtype} [${tensor.shape}] tensor to FP8`);
    let kernel = this.kernels.get(dtype);
    if (!kernel) this.kernels.set(dtype, (kernel = createQuantizeFp8(this.ctx, { dtype })));
    const [rows, cols] = tensor.shape;
    const pieces = 'codes' in targets ? [{ firstRow: 0, rows, target: targets }] : targets;
    checkPieces(tensor, pieces);
    const perBand = bandRows(tensor);
    let piece = 0; // the piece that row firstRow falls in
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
          const { firstRow: pieceRow, rows: pieceRows, target } = pieces[piece];
          const band = Math.min(perBand, pieceRow + pieceRows - firstRow); // never across pieces
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
            rows: pieceRows,
            cols,
            firstRow: firstRow - pieceRow,
            bandRows: band,
            source: { buffer: this.staging, size: padded },
            ...target,
            label: `${tensor.name} to fp8`,
          });
          submitPass(device, call);
          call.destroy(); // its params go once the queued work is done
          firstRow += band;
          filled = 0;
          if (firstRow === pieceRow + pieceRows) piece++;
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

/** One row piece of a split tensor and where its codes and scales go. */
export interface Fp8Piece {
  firstRow: number;
  rows: number;
  target: Fp8Target;
}

/** Pieces must tile the rows in order, each starting on a 128-row block (its scales are whole block rows). */
function checkPieces(tensor: TensorInfo, pieces: readonly Fp8Piece[]): void {
  let next = 0;
  for (const p of pieces) {
    if (p.firstRow !== next || p.rows < 1 || p.firstRow % BLOCK !== 0) {
      throw new ArgumentError(`${tensor.name}: row pieces must tile rows 0..${tensor.shape[0] - 1} in order on ${BLOCK}-row blocks, got rows ${p.firstRow}..${p.firstRow + p.rows - 1} after ${next}`);
    }
    next += p.rows;
  }
  if (next !== tensor.shape[0]) throw new ArgumentError(`${tensor.name}: row pieces cover ${next} of ${tensor.shape[0]} rows`);
}

/** Bytes of one row of a tensor this quantiser takes (its dtype is in QUANTIZE_FROM). */
function rowBytes(t: TensorInfo): number {
  return t.shape[1] * SOURCE_ELEMENT_BYTES[QUANTIZE_FROM[t.dtype]];
}

/** Rows per band: whole 128-row blocks, as many as BAND_BYTES holds, at least one block. */
function bandRows(t: TensorInfo): number {
  return Math.max(BLOCK, Math.floor(BAND_BYTES / (rowBytes(t) * BLOCK)) * BLOCK);
}
