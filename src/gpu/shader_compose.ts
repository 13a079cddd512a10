// The one specialisation step for WGSL (STYLE.md habit 7): prepend shared snippets (such as
// shaders/fp8_e4m3.wgsl) to a kernel and keep the lines of one named variant. Tuning numbers
// are `override` constants set at pipeline creation and per-call values are uniforms; this step
// handles only what those cannot: a choice among a short, closed list of types and layouts
// that changes which bindings exist.
//
// Directives, each alone on its line; nothing else is rewritten (no macros, no substitution):
//   #if <axis> == <value>     #elif <axis> == <value>     #else     #endif
// (`!=` works too; blocks nest). Every axis and value must be in the kernel's closed list.

import { ArgumentError } from '../errors.ts';

/** The named variant axes of a kernel and the values each may take. */
export type VariantAxes = Readonly<Record<string, readonly string[]>>;

/** One value per axis. */
export type Variant = Readonly<Record<string, string>>;

/** A WGSL file: its name (for messages and the composed header) and its text. */
export interface WgslSource {
  readonly name: string;
  readonly code: string;
}

export interface ComposeOptions {
  readonly kernel: WgslSource;
  /** Shared snippets, prepended in this order. */
  readonly snippets?: readonly WgslSource[];
  readonly axes: VariantAxes;
  readonly variant: Variant;
}

/** Throws ArgumentError unless `variant` names an allowed value for every axis and nothing else. */
export function checkVariant(kernel: string, axes: VariantAxes, variant: Variant): void {
  for (const axis of Object.keys(variant)) {
    if (!(axis in axes)) throw new ArgumentError(`${kernel}: unknown variant axis "${axis}" (axes: ${Object.keys(axes).join(', ')})`);
  }
  for (const [axis, values] of Object.entries(axes)) {
    const value = variant[axis];
    if (value === undefined) throw new ArgumentError(`${kernel}: the variant must set "${axis}" (one of ${values.join(', ')})`);
    if (!values.includes(value)) {
      throw new ArgumentError(`${kernel}: "${value}" is not a ${axis} variant; use one of ${values.join(', ')}`);
    }
  }
}

/** The snippets and the kernel, specialised to `variant`, as one WGSL module. */
export function composeShader({ kernel, snippets = [], axes, variant }: ComposeOptions): string {
  checkVariant(kernel.name, axes, variant);
  const chosen = Object.entries(variant)
    .map(([axis, value]) => `${axis}=${value}`)
    .join(' ');
  const parts = [`// ${kernel.name} (${chosen}), composed by src/gpu/shader_compose.ts`];
  for (const source of [...snippets, kernel]) {
    parts.push(`// ---- ${source.name} ----`, selectVariant(source, axes, variant));
  }
  return parts.join('\n');
}

interface Block {
  /** Line number of the opening #if, for messages. */
  line: number;
  /** The enclosing block keeps its lines. */
  outerActive: boolean;
  /** Some branch of this block was taken already. */
  taken: boolean;
  /** The current branch keeps its lines. */
  active: boolean;
  seenElse: boolean;
}

const DIRECTIVE = /^\s*#(if|elif|else|endif)\b\s*(.*?)\s*$/;
const CONDITION = /^([A-Za-z_]\w*)\s*(==|!=)\s*([A-Za-z_0-9]\w*)$/;

/** Keep the lines of `source` that the variant selects; directive lines are dropped. */
export function selectVariant(source: WgslSource, axes: VariantAxes, variant: Variant): string {
  const out: string[] = [];
  const stack: Block[] = [];
  const where = (line: number) => `${source.name}:${line}`;
  const active = () => stack.length === 0 || stack[stack.length - 1].active;

  const test = (text: string, line: number): boolean => {
    const match = CONDITION.exec(text);
    if (!match) throw new Error(`${where(line)}: expected "#if <axis> == <value>", got "#if ${text}"`);
    const [, axis, op, value] = match;
    const values = axes[axis];
    if (!values) throw new Error(`${where(line)}: "${axis}" is not a variant axis of this kernel (${Object.keys(axes).join(', ')})`);
    if (!values.includes(value)) throw new Error(`${where(line)}: "${value}" is not a value of ${axis} (${values.join(', ')})`);
    return (variant[axis] === value) === (op === '==');
  };

  source.code.split('\n').forEach((text, index) => {
    const line = index + 1;
    const directive = DIRECTIVE.exec(text);
    if (!directive) {
      if (active()) out.push(text);
      return;
    }
    const [, kind, rest] = directive;
    const top = stack[stack.length - 1];
    if (kind === 'if') {
      const outerActive = active();
      const taken = test(rest, line);
      stack.push({ line, outerActive, taken, active: outerActive && taken, seenElse: false });
      return;
    }
    if (!top) throw new Error(`${where(line)}: #${kind} without #if`);
    if (kind === 'endif') {
      if (rest) throw new Error(`${where(line)}: unexpected text after #endif`);
      stack.pop();
    } else if (top.seenElse) {
      throw new Error(`${where(line)}: #${kind} after #else (the #if is at line ${top.line})`);
    } else if (kind === 'elif') {
      const holds = test(rest, line); // checked even when an earlier branch was taken
      const taken = !top.taken && holds;
      top.active = top.outerActive && taken;
      top.taken ||= taken;
    } else {
      if (rest) throw new Error(`${where(line)}: unexpected text after #else`);
      top.active = top.outerActive && !top.taken;
      top.taken = true;
      top.seenElse = true;
    }
  });
  if (stack.length > 0) throw new Error(`${where(stack[stack.length - 1].line)}: #if without #endif`);
  return out.join('\n');
}
