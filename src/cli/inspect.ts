// webmoe inspect <dir-or-url> [--json] [--cache-bytes N] [--max-binding-mib N] [--max-context N]
// The text report shows the checkpoint's strings (model_type, file and tensor names) with control
// characters escaped (escape.ts); --json is escaped by JSON itself.
import { formatInspectReport, inspectCheckpoint } from '../model/inspect.ts';
import { checkpointDir, parse, positiveInt, UsageError } from './args.ts';
import { escapeStrings } from './escape.ts';

export async function inspectCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' }, 'cache-bytes': { type: 'string' }, 'max-binding-mib': { type: 'string' }, 'max-context': { type: 'string' } }, ['dir-or-url']);
  const report = await inspectCheckpoint(checkpointDir(positionals[0]), {
    cacheBytesPerValue: positiveInt('cache-bytes', values['cache-bytes'] as string | undefined, 2),
    bindingLimitBytes: bindingLimit(values['max-binding-mib'] as string | undefined),
    maxContext: values['max-context'] === undefined ? undefined : positiveInt('max-context', values['max-context'] as string, 2),
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : formatInspectReport(escapeStrings(report)));
}

/** --max-binding-mib N (default: WebGPU's default limit, 128 MiB) in bytes. */
function bindingLimit(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const mib = Number(value);
  if (!(value.trim() !== '' && Number.isFinite(mib) && mib > 0)) throw new UsageError(`--max-binding-mib must be a positive number of MiB, got "${value}"`);
  return Math.max(4, Math.floor(mib * 2 ** 20));
}
