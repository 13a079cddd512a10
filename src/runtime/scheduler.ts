// Turn-taking on the one GPU queue. Every unit of GPU work (one prefill chunk, one decode step)
// runs inside a turn, and turns are granted first come, first served. A long prompt is many
// chunks, each a separate turn, so another session's decode steps slip in between them and its
// stream keeps flowing while the prompt is read.

export class Scheduler {
  private tail: Promise<void> = Promise.resolve();
  private waiting = 0;

  /** Requests waiting for or holding a turn. */
  get queued(): number {
    return this.waiting;
  }

  /** Runs `work` when every earlier turn has finished; resolves to its result. */
  turn<T>(work: () => Promise<T>): Promise<T> {
    this.waiting++;
    const result = this.tail.then(work);
    const done = () => {
      this.waiting--;
    };
    // The next turn waits for this one however it ends.
    this.tail = result.then(done, done);
    return result;
  }
}
