// Numbers with their units, as every cell of the benchmark page shows them: three significant
// digits (a benchmark on a shared machine is not more precise than that), no exponents below a
// billion, thousands separated.

/** `x` to three significant digits: 0.000123, 0.208, 53.1, 443, 10,941. */
export function sig3(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const abs = Math.abs(x);
  if (abs >= 1000) return Math.round(x).toLocaleString('en-US');
  if (abs < 1e-6) return x.toExponential(2);
  return Number(x.toPrecision(3)).toString();
}

export const ms = (x: number) => `${sig3(x)} ms`;
export const gbps = (x: number) => `${sig3(x)} GB/s`;
export const gflops = (x: number) => `${sig3(x)} GFLOP/s`;
export const tokPerS = (x: number) => `${sig3(x)} tok/s`;
/** A fraction as a percentage: 0.0165 -> "1.65 %". */
export const percent = (fraction: number) => `${sig3(100 * fraction)} %`;
export const times = (x: number) => `${sig3(x)}×`;

/** Bytes in binary units: "6.48 MiB". */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${sig3(n)} ${units[i]}`;
}

/** A shape as the suite names it: "M=1 K=7168 N=1536". */
export function shapeText(shape: Record<string, number>): string {
  return Object.entries(shape).map(([k, v]) => `${k}=${v}`).join(' ');
}
