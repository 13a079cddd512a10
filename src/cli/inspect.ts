// webmoe inspect <dir-or-url> [--json] [--cache-bytes N]
import { formatInspectReport, inspectCheckpoint } from '../model/inspect.ts';
import { checkpointDir, parse, positiveInt } from './args.ts';

export async function inspectCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' }, 'cache-bytes': { type: 'string' } }, ['dir-or-url']);
  const report = await inspectCheckpoint(checkpointDir(positionals[0]), {
    cacheBytesPerValue: positiveInt('cache-bytes', values['cache-bytes'] as string | undefined, 2),
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : formatInspectReport(report));
}
