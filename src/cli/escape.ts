// Checkpoint strings (model_type, tensor and file names, the text of errors that quote them)
// reach the terminal in inspect's report, the progress lines and the one-line errors. A
// checkpoint is untrusted: raw control characters there could set the window title, recolour the
// report or rewrite lines already printed (ESC sequences, the C1 CSI). They are printed escaped
// instead, as \x1b. --json output needs nothing: JSON.stringify escapes them itself.

/** C0 controls, DEL and C1 controls: what a terminal may act on rather than show. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** `text` with every control character written as \xNN (newlines too: the caller keeps its own). */
export function escapeControls(text: string): string {
  return text.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A message as one line for stderr: its line breaks become spaces, other controls are escaped. */
export function oneLine(message: string): string {
  return escapeControls(message.replace(/\r?\n/g, ' '));
}

/** A copy of a JSON-like value (a report) with every string in it, keys included, escaped. */
export function escapeStrings<T>(value: T): T {
  if (typeof value === 'string') return escapeControls(value) as T;
  if (Array.isArray(value)) return value.map(escapeStrings) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [escapeControls(k), escapeStrings(v)])) as T;
  }
  return value;
}
