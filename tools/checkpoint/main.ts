// Generate a small random DeepSeek-V3 checkpoint in the released layout:
//   npx tsx tools/checkpoint/main.ts --out DIR [--preset tiny|odd] [--config FILE] [--seed S] [--shards N]

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseConfig } from '../../src/config.ts';
import { ArgumentError, WebmoeError } from '../../src/errors.ts';
import { countParameters } from '../../src/model/weights.ts';
import { PRESETS } from './presets.ts';
import { writeCheckpoint } from './write.ts';

const USAGE = `usage: npx tsx tools/checkpoint/main.ts --out DIR [--preset ${Object.keys(PRESETS).join('|')}] [--config FILE] [--seed S] [--shards N]`;

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      preset: { type: 'string', default: 'tiny' },
      config: { type: 'string' },
      seed: { type: 'string', default: '0' },
      shards: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.out) throw new ArgumentError(`--out is required\n${USAGE}`);
  const seed = integerOption('seed', values.seed, 0);
  const shards = integerOption('shards', values.shards, 1);

  let config: Record<string, unknown>;
  if (values.config) {
    const text = await readFile(values.config, 'utf8');
    parseConfig(text, values.config); // names the file in any error
    config = JSON.parse(text);
  } else {
    const preset = PRESETS[values.preset];
    if (!preset) throw new ArgumentError(`unknown preset "${values.preset}"\n${USAGE}`);
    config = preset;
  }

  const { files, tensors } = await writeCheckpoint(values.out, { config, seed, shards });
  const params = countParameters(parseConfig(config));
  console.log(`${values.out}: ${tensors.length} tensors, ${params.total} parameters (+${params.mtp} MTP), seed ${seed}`);
  for (const [name, bytes] of files) console.log(`  ${name}  ${bytes.byteLength} bytes`);
}

function integerOption(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new ArgumentError(`--${name} must be an integer >= ${min}, got "${text}"`);
  return n;
}

main(process.argv.slice(2)).catch((err: unknown) => {
  // Typed errors, and Node's own (file not found, unknown option), are answers, not crashes.
  if (err instanceof WebmoeError || (err instanceof Error && 'code' in err && typeof err.code === 'string')) {
    console.error(`error: ${err.message}`);
  } else {
    console.error(err);
  }
  process.exitCode = 1;
});
