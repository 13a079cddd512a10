// webmoe bench --kernels [--json] [--quick] [--shapes small|v3|all] [--filter NAME] [--runs N] [--max-seconds S] [--no-peers]
import { openNodeGpu } from '../gpu/node.ts';
import { runKernelBench, type ShapeSet } from '../bench/suite.ts';
import { parse, positiveInt, UsageError } from './args.ts';

export async function benchCommand(argv: string[]): Promise<void> {
  const { values } = parse(
    argv,
    {
      kernels: { type: 'boolean' },
      json: { type: 'boolean' },
      quick: { type: 'boolean' },
      shapes: { type: 'string' },
      filter: { type: 'string' },
      runs: { type: 'string' },
      'max-seconds': { type: 'string' },
      'no-peers': { type: 'boolean' },
    },
    [],
  );
  if (!values.kernels) throw new UsageError('say what to benchmark: --kernels');
  const shapes = (values.shapes ?? (values.quick ? 'small' : 'all')) as ShapeSet;
  if (!['small', 'v3', 'all'].includes(shapes)) throw new UsageError(`--shapes must be small, v3 or all, got "${shapes}"`);
  const gpu = await openNodeGpu({ label: 'webmoe-bench' });
  try {
    const report = await runKernelBench(gpu, {
      shapes,
      quick: values.quick as boolean | undefined,
      filter: values.filter as string | undefined,
      runs: values.runs === undefined ? undefined : positiveInt('runs', values.runs as string, 10),
      peers: !values['no-peers'],
      maxSecondsPerCase: values['max-seconds'] === undefined ? undefined : positiveInt('max-seconds', values['max-seconds'] as string, 60),
      // Progress goes to stderr so that --json output stays one object on stdout.
      onProgress: (line) => console.error(`[bench] ${line}`),
    });
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else console.log(formatReport(report));
  } finally {
    gpu.destroy();
  }
}

function formatReport(r: Awaited<ReturnType<typeof runKernelBench>>): string {
  const lines = [`${r.adapter.vendor} ${r.adapter.architecture} (${r.adapter.description}); copy ${r.copy_gbps.toFixed(1)} GB/s, FMA ${r.fma_gflops.toFixed(1)} GFLOP/s`, ''];
  lines.push('kernel                      shape                          ms        GB/s   GFLOP/s  %copy  %FMA');
  for (const k of r.kernels) {
    const shape = Object.entries(k.shape).map(([n, v]) => `${n}=${v}`).join(' ');
    lines.push(`${k.name.padEnd(27)} ${shape.padEnd(30)} ${k.median_ms.toFixed(3).padStart(9)} ${k.gbps.toFixed(2).padStart(8)} ${k.gflops.toFixed(2).padStart(8)} ${(100 * k.copy_fraction).toFixed(1).padStart(5)} ${(100 * k.fma_fraction).toFixed(1).padStart(5)}`);
  }
  if (r.peers.length) {
    lines.push('', 'peer                        shape                          ms (wall)  ours x faster');
    for (const p of r.peers) {
      const shape = Object.entries(p.shape).map(([n, v]) => `${n}=${v}`).join(' ');
      lines.push(`${p.name.padEnd(27)} ${shape.padEnd(30)} ${p.median_ms.toFixed(3).padStart(9)} ${p.speedup_of_ours?.toFixed(2).padStart(8)} (${p.versus})`);
    }
  }
  return lines.join('\n');
}
