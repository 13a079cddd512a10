// Checks of the command line that need the checkpoint's config.json and nothing else: made
// before the GPU is opened and the weights are read, so that `--ids 99999` fails in a moment
// rather than after the load. The engine makes the same checks (ArgumentError); this only moves
// the CLI's failure earlier. config.json is small, and the engine reads it again.

import { parseConfig } from '../config.ts';
import { checkpointDir, UsageError } from './args.ts';

export interface ConfigChecks {
  /** Token ids given with --ids: each must be below vocab_size. */
  ids?: readonly number[];
  /** --top-k: at most vocab_size (0: off). */
  topK?: number;
}

export async function checkAgainstConfig(model: string, checks: ConfigChecks, signal?: AbortSignal): Promise<void> {
  const { ids, topK } = checks;
  if (ids === undefined && topK === undefined) return; // nothing to check: no extra read
  const dir = checkpointDir(model);
  const config = parseConfig(await dir.readText('config.json', signal), `${dir.description}/config.json`);
  const vocab = config.vocab_size;
  const outside = ids?.find((id) => id >= vocab);
  if (outside !== undefined) throw new UsageError(`--ids: token id ${outside} is not in [0, ${vocab}) (vocab_size of ${dir.description})`);
  if (topK !== undefined && topK > vocab) throw new UsageError(`--top-k must be at most vocab_size ${vocab} (0: off), got ${topK}`);
}
