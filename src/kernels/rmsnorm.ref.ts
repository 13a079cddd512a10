// CPU reference of shaders/rmsnorm.wgsl, in float64 (src/model/MATH.md 4.2):
//   y = x / sqrt(mean(x^2) + eps) * w          (official: F.rms_norm(x, (dim,), weight, eps))
// with the optional fused residual add h = h + delta before it.

export interface RowLayout {
  /** Elements between the starts of consecutive rows. */
  stride: number;
  /** Element index of row 0's first normalised value. */
  offset: number;
}

export interface RmsNormRefArgs {
  rows: number;
  width: number;
  eps: number;
  x: Float32Array;
  weight: Float32Array;
  /** Written in place; must be large enough for yLayout. */
  y: Float32Array;
  xLayout?: RowLayout;
  yLayout?: RowLayout;
  /** When given, x is the residual stream: x += delta (same layout as x) first, in place. */
  delta?: Float32Array;
}

export function rmsNormRef(args: RmsNormRefArgs): void {
  const { rows, width, eps, x, weight, y, delta } = args;
  const xl = args.xLayout ?? { stride: width, offset: 0 };
  const yl = args.yLayout ?? { stride: width, offset: 0 };
  for (let t = 0; t < rows; t++) {
    const src = t * xl.stride + xl.offset;
    const dst = t * yl.stride + yl.offset;
    if (delta) for (let j = 0; j < width; j++) x[src + j] = x[src + j] + delta[src + j];
    let sumSq = 0;
    for (let j = 0; j < width; j++) sumSq += x[src + j] * x[src + j];
    const invRms = 1 / Math.sqrt(sumSq / width + eps);
    for (let j = 0; j < width; j++) y[dst + j] = x[src + j] * invRms * weight[j];
  }
}
