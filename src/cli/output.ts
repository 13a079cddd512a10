// Writes to stdout and stderr can fail under the `webmoe` process: a closed pipe (EPIPE, as after
// `| head`), a full disk. Node reports that as an 'error' event on the stream, emitted after the
// write, and with no listener the process dies with a stack trace. These listeners, kept for the
// life of the process, catch it; the commands stop through stop.ts, and the exit status says what
// happened.

import { oneLine } from './escape.ts';

export interface OutputWatch {
  /** The status to exit with, given the command's: a failed stdout other than a closed pipe is a failure, said in one line. */
  exitStatus(code: number): number;
}

export function watchOutput(): OutputWatch {
  let stdoutError: NodeJS.ErrnoException | undefined;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => void (stdoutError ??= err));
  // stderr is where a failure would be told: when it fails there is nowhere left to tell it.
  process.stderr.on('error', () => {});
  return {
    exitStatus(code) {
      if (!stdoutError || stdoutError.code === 'EPIPE') return code;
      process.stderr.write(`webmoe: cannot write to stdout: ${oneLine(stdoutError.message)}\n`);
      return code || 1;
    },
  };
}
