// Stop strings over streamed text: text is released only once it can no longer be the start of a
// stop string, so a stop string is never half-shown and then cut.

export class StopStrings {
  private readonly stops: string[];
  private held = '';
  stopped = false;

  constructor(stop: string | string[] | undefined) {
    this.stops = (typeof stop === 'string' ? [stop] : (stop ?? [])).filter((s) => s.length > 0);
  }

  /** Adds generated text; returns the text safe to show now. After a stop, returns '' forever. */
  push(text: string): string {
    if (this.stopped) return '';
    this.held += text;
    let cut = -1;
    for (const s of this.stops) {
      const at = this.held.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      const out = this.held.slice(0, cut);
      this.held = '';
      return out;
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.held.length); n > keep; n--) {
        if (this.held.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    const out = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    return out;
  }

  /** The text still held at the end of generation (no stop string completed). */
  flush(): string {
    const out = this.stopped ? '' : this.held;
    this.held = '';
    return out;
  }
}
