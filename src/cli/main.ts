// The `webmoe` command. Each subcommand is one small module; errors a user can cause end in
// exit status 2 and one line, never a stack trace. Messages may quote a checkpoint's strings:
// they are printed with control characters escaped (escape.ts).

import { WebmoeError } from '../errors.ts';
import { oneLine } from './escape.ts';
import { benchCommand } from './bench.ts';
import { chatCommand } from './chat.ts';
import { generateCommand } from './generate.ts';
import { inspectCommand } from './inspect.ts';
import { logitsCommand } from './logits.ts';
import { serveCommand } from './serve.ts';
import { UsageError } from './args.ts';

const USAGE = `usage: webmoe <command> [options]

commands:
  inspect <dir-or-url> [--json] [--cache-bytes N] [--max-binding-mib N] [--max-context N]
                                                    summarise a DeepSeek-V3-family checkpoint
  bench --kernels [--json] [--quick] [--shapes small|v3|all] [--filter NAME] [--runs N] [--max-seconds S] [--no-peers]
                                                    time every kernel against the adapter's ceilings and TF.js
  bench --decode <model> [--prompt TEXT]... [--max-tokens N] [--runs N] [--temperatures 0,0.7,1|none] [--json] [--quick] [--no-peers] [--max-context N] [--weights fp8|bf16] [--max-binding-mib N] [--gpu-budget-mib N] [--expert-slots N] [--expert-store memory|checkpoint] [--draft-vocab N] [--no-fused-norms]
                                                    greedy decode tok/s with and without MTP speculative decoding
  generate <model> (--prompt TEXT | --ids 1,2,3) [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
           [--stop STR]... [--ignore-eos] [--speculative auto|on|off] [--no-mtp] [--chat] [--json] [--max-context N] [--weights fp8|bf16] [--max-binding-mib N] [--gpu-budget-mib N] [--expert-slots N] [--expert-store memory|checkpoint] [--draft-vocab N] [--no-fused-norms]
                                                    stream a continuation (--chat: the prompt as a user message)
  logits <model> --ids 1,2,3 [--positions all|last] [--json] [--max-context N] [--weights fp8|bf16] [--max-binding-mib N] [--gpu-budget-mib N] [--expert-slots N] [--expert-store memory|checkpoint] [--draft-vocab N] [--no-fused-norms]
                                                    the model's logits after the ids (--json: every row, whole vocabulary)
  chat <model> [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--max-context N] [--weights fp8|bf16] [--max-binding-mib N] [--gpu-budget-mib N] [--expert-slots N] [--expert-store memory|checkpoint] [--draft-vocab N] [--no-fused-norms]
                                                    chat in the terminal (or over piped lines); /exit or Ctrl-D ends it
  serve <model> [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--max-concurrent N] [--served-model-name NAME]
        [--max-context N] [--weights fp8|bf16] [--max-binding-mib N] [--gpu-budget-mib N] [--expert-slots N] [--expert-store memory|checkpoint] [--draft-vocab N] [--no-fused-norms]
                                                    an OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models);
                                                    another host than loopback needs --api-key (or WEBMOE_API_KEY)

--weights fp8 (default): a BF16 release's Linears are quantised at load to FP8 with 128x128 block
  scales, as DeepSeek's FP8 release stores them (half the GPU memory); --weights bf16 keeps them exact.
  An FP8 release stays FP8 either way.
--max-binding-mib N: plan the weights with GPU bindings of at most N MiB (default: the GPU's largest);
  a larger tensor is split over several buffers (embedding and head by vocabulary rows, Linears by
  row bands, routed experts by expert ranges).
--gpu-budget-mib N: keep the model's GPU memory (weights, latent cache of one session at
  --max-context, plans) within N MiB: when every expert does not fit, the routed experts stay in CPU
  memory with as many per MoE layer on the GPU as fit (uploaded as the router asks, same output);
  a model that does not fit even with one per layer is refused before the download, saying what would fit.
--expert-slots N: routed experts in CPU memory, N per MoE layer on the GPU, whatever the budget.
--expert-store checkpoint: offloaded experts read from the checkpoint's files at each miss instead
  of held in CPU memory (an FP8 release, or --weights bf16).
--draft-vocab N: the MTP module drafts from token ids 0 .. N-1 only (default a quarter of the
  vocabulary, at least 2048): its head reads that share of its weights; the output is the same.
--no-fused-norms: decode steps run each RMSNorm and residual add as a dispatch of its own instead of
  inside the GEMVs and kernels next to them (to measure what the fusion gains).`;

/** A command returns its exit status (0 when it returns nothing); user errors are thrown. */
const commands: Record<string, (argv: string[]) => Promise<number | void>> = {
  inspect: inspectCommand,
  bench: benchCommand,
  generate: generateCommand,
  logits: logitsCommand,
  chat: chatCommand,
  serve: serveCommand,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`webmoe: unknown command "${oneLine(name)}"\n${USAGE}`);
    return 2;
  }
  try {
    return (await command(rest)) ?? 0;
  } catch (err) {
    if (err instanceof WebmoeError || err instanceof UsageError) {
      console.error(`webmoe ${name}: ${oneLine(err.message)}`);
      return 2;
    }
    // Not a user error: a bug. Say so in one line and keep the detail for a report.
    console.error(`webmoe ${name}: internal error: ${oneLine(err instanceof Error ? err.message : String(err))} (set WEBMOE_DEBUG=1 for the stack)`);
    if (process.env.WEBMOE_DEBUG) console.error(err);
    return 1;
  }
}
