// The ways a command is told to stop before it is done: Ctrl-C (SIGINT), SIGTERM (kill, docker
// stop, systemd) and the reader of stdout going away (`webmoe generate … | head`: the next write
// fails with EPIPE). Each aborts the work under way, so that the engine unloads and Dawn is torn
// down in order, and the command then exits with the status shells expect.

export type StopReason = 'SIGINT' | 'SIGTERM' | 'stdout-closed';

/**
 * 128 + the signal's number for a signal, as shells report it. 0 for a closed stdout: the reader
 * took what it wanted, which is no failure (ripgrep and git do the same).
 */
export const STOP_STATUS: Readonly<Record<StopReason, number>> = Object.freeze({ SIGINT: 130, SIGTERM: 143, 'stdout-closed': 0 });

/** Exit status after Ctrl-C. */
export const INTERRUPTED = STOP_STATUS.SIGINT;

/**
 * Calls `onStop(reason)` on SIGINT and SIGTERM (instead of letting Node exit) and once when a
 * write to stdout fails. Returns the function that hands the signals back to Node.
 */
export function onStop(handler: (reason: StopReason) => void): () => void {
  const sigint = () => handler('SIGINT');
  const sigterm = () => handler('SIGTERM');
  let closed = false;
  const stdoutError = () => {
    if (closed) return;
    closed = true;
    handler('stdout-closed');
  };
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);
  process.stdout.on('error', stdoutError);
  return () => {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    process.stdout.off('error', stdoutError);
  };
}

/** The stop requests of one command whose work runs under `controller`. */
export interface Stops {
  /** The first stop request, if one came. */
  readonly reason: StopReason | undefined;
  /** The exit status for a command that ended normally or was stopped. */
  status(): number;
  /** Hands the signals back to Node. */
  restore(): void;
}

/** The first stop request aborts `controller`; a second signal exits at once (see exitNow). */
export function abortOnStop(controller: AbortController): Stops {
  let reason: StopReason | undefined;
  const restore = onStop((r) => {
    if (reason === undefined) {
      reason = r;
      controller.abort();
    } else if (r !== 'stdout-closed') exitNow(r);
  });
  return {
    get reason() {
      return reason;
    },
    status: () => (reason === undefined ? 0 : STOP_STATUS[reason]),
    restore,
  };
}

/** What a second signal does while an abort is still under way: a request that does not stop must not trap the user. */
export function exitNow(reason: StopReason): never {
  process.exit(STOP_STATUS[reason]);
}
