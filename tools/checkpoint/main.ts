// Generate a random DeepSeek-V3 checkpoint in the released layout, streamed to disk tensor by
// tensor (stream.ts), so the real-size presets work as well as the small ones:
//   npx tsx tools/checkpoint/main.ts --out DIR [--preset tiny|odd|moonlight|v3-dims|v2-lite] [--config FILE]
//     [--seed S] [--shards N | --max-shard-gib G] [--layers N] [--experts N] [--set KEY=JSON]...

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseConfig } from '../../src/config.ts';
import { ArgumentError, WebmoeError } from '../../src/errors.ts';
import { countParameters } from '../../src/model/weights.ts';
import { PRESETS } from './presets.ts';
import { stderrProgress, writeCheckpointStreaming } from './stream.ts';

const USAGE = `usage: npx tsx tools/checkpoint/main.ts --out DIR [--preset ${Object.keys(PRESETS).join('|')}] [--config FILE] [--seed S]
    [--shards N | --max-shard-gib G] [--layers N] [--experts N] [--set KEY=JSON]...
  --shards N          exactly N safetensors files (default: as few as keep each under --max-shard-gib, 4)
  --layers N          num_hidden_layers (first_k_dense_replace must stay <= N)
  --experts N         n_routed_experts (n_group must divide it: add --set n_group=1)
  --set KEY=JSON      any other config.json key, e.g. --set num_nextn_predict_layers=0`;

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      preset: { type: 'string', default: 'tiny' },
      config: { type: 'string' },
      seed: { type: 'string', default: '0' },
      shards: { type: 'string' },
      'max-shard-gib': { type: 'string' },
      layers: { type: 'string' },
      experts: { type: 'string' },
      set: { type: 'string', multiple: true, default: [] },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.out) throw new ArgumentError(`--out is required\n${USAGE}`);
  const seed = integerOption('seed', values.seed, 0);
  const shards = values.shards === undefined ? undefined : integerOption('shards', values.shards, 1);
  const maxShardGib = values['max-shard-gib'] === undefined ? undefined : Number(values['max-shard-gib']);
  if (maxShardGib !== undefined && !(maxShardGib > 0)) throw new ArgumentError(`--max-shard-gib must be a positive number, got "${values['max-shard-gib']}"`);

  let config: Record<string, unknown>;
  if (values.config) {
    const text = await readFile(values.config, 'utf8');
    parseConfig(text, values.config); // names the file in any error
    config = JSON.parse(text);
  } else {
    const preset = PRESETS[values.preset];
    if (!preset) throw new ArgumentError(`unknown preset "${values.preset}"\n${USAGE}`);
    config = { ...preset };
  }
  if (values.layers !== undefined) config.num_hidden_layers = integerOption('layers', values.layers, 1);
  if (values.experts !== undefined) config.n_routed_experts = integerOption('experts', values.experts, 1);
  for (const assignment of values.set) {
    const eq = assignment.indexOf('=');
    if (eq <= 0) throw new ArgumentError(`--set takes KEY=VALUE, got "${assignment}"`);
    config[assignment.slice(0, eq)] = jsonOrString(assignment.slice(eq + 1));
  }
  const params = countParameters(parseConfig(config, 'the generator config'));

  const { layout, files, seconds } = await writeCheckpointStreaming(values.out, {
    config,
    seed,
    shards,
    maxShardBytes: maxShardGib === undefined ? undefined : maxShardGib * 2 ** 30,
    onProgress: stderrProgress('generate'),
  });
  console.log(
    `${values.out}: ${layout.tensors.length} tensors, ${params.total} parameters (+${params.mtp} MTP), seed ${seed}, ${seconds.toFixed(1)} s`,
  );
  for (const { name, bytes } of files) console.log(`  ${name}  ${bytes} bytes`);
}

function integerOption(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new ArgumentError(`--${name} must be an integer >= ${min}, got "${text}"`);
  return n;
}

/** A --set value: JSON when it parses (numbers, null, true, lists), else the text as a string. */
function jsonOrString(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
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
