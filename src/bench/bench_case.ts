// One case of the kernel benchmark: a kernel at a shape, prepared with random operands, checked
// against its CPU reference once, then timed by suite.ts.

import type { KernelContext } from '../gpu/kernel.ts';
import type { VariantStore } from '../kernels/variant_choice.ts';

export interface PreparedBench {
  call: { bytes: number; flops: number; encode(pass: GPUComputePassEncoder): void };
  /** The kernel variant chosen for this adapter. */
  variant?: string;
  /** Run once (via `run`) and return ‖gpu − cpu‖/‖cpu‖ on the outputs it compares. */
  check(run: () => Promise<void>): Promise<number>;
  destroy(): void;
}

export interface BenchCase {
  name: string;
  shape: Record<string, number>;
  note?: string;
  /** Also time the TF.js matMul peer on this shape ({M, K, N}). */
  peer?: boolean;
  /** `variants` remembers which kernel variant this adapter measured fastest. */
  prepare(ctx: KernelContext, variants: VariantStore): Promise<PreparedBench>;
}
