// Rendering a chat template with a budget. A chat template comes with the checkpoint, so it is
// untrusted code: `{% for i in range(10**9) %}` never returns and string doubling reaches
// megabytes in milliseconds, and a synchronous render cannot be aborted. @huggingface/jinja has
// no limit of its own, so the render runs on an Interpreter subclass that counts every node it
// evaluates (and every loop iteration), caps recursion and time, and refuses any string, list or
// mapping larger than the budget the moment it is made (a step at most doubles a value, except
// `replace` and `indent`, which can make one value up to the engine's maximum string length
// before it is refused). `range` refuses huge ranges before building them. It runs in the
// caller's thread, the same in a browser and in Node, and stops a hostile template in ~1 s.

import { Environment, Interpreter, type Template } from '@huggingface/jinja';

export interface RenderBudget {
  /** Template nodes evaluated, at most. DeepSeek-V3's template takes ~100 per message. */
  maxSteps: number;
  /** Characters of any string (the output included), at most. */
  maxChars: number;
  /** Items of any list or mapping (a range included), at most. */
  maxItems: number;
  /** Wall-clock time of the render, at most. */
  maxMillis: number;
  /** Nesting of evaluations (macro recursion), at most. */
  maxDepth: number;
}

// A for loop iterates without evaluating a node when its body is empty (and gathers its items
// without one when it has no `if`), so steps would not see it. countLoopIterations gives every
// loop a no-op `if true` and a no-op comment in its body; both are these two shared nodes, which
// the interpreter recognises and charges as what an iteration costs (a new scope each).
const ITEM_TEST = Object.freeze({ type: 'Identifier', value: 'true' });
const ITERATION = Object.freeze({ type: 'Comment', value: 'webmoe: one iteration' });
/** A loop item, an iteration or a call makes a scope (an Environment, a Map of builtins): ~20 plain nodes of work. */
const SCOPE_COST = 20;

/** Makes the loops of a parsed template count their iterations (once, before the first render). */
export function countLoopIterations(template: Template): void {
  const visit = (node: unknown): void => {
    if (node === null || typeof node !== 'object' || Object.isFrozen(node)) return;
    if (Array.isArray(node)) return node.forEach(visit);
    Object.values(node).forEach(visit);
    const loop = node as { type?: unknown; body?: unknown[]; test?: unknown };
    if (loop.type !== 'For' || !Array.isArray(loop.body)) return;
    loop.body.push(ITERATION);
    // `if true and <the loop's own if>`: only the operator's value is read.
    loop.test = loop.test ? { type: 'BinaryExpression', operator: { value: 'and' }, left: ITEM_TEST, right: loop.test } : ITEM_TEST;
  };
  visit(template.parsed);
}

/** Why a render was stopped; chat_template.ts turns it into a TokenizerError naming the file. */
export class BudgetExceeded extends Error {}

// Every argument type of Interpreter.evaluate, without importing the library's AST types.
type Node = Parameters<Interpreter['evaluate']>[0];
type Value = ReturnType<Interpreter['evaluate']>;

class BudgetedInterpreter extends Interpreter {
  #steps = 0;
  #depth = 0;
  readonly #deadline: number;

  constructor(
    env: Environment,
    private readonly budget: RenderBudget,
  ) {
    super(env);
    this.#deadline = performance.now() + budget.maxMillis;
  }

  override evaluate(node: Node, env: Environment): Value {
    this.#steps += node === ITERATION || node === ITEM_TEST || node?.type === 'CallExpression' ? SCOPE_COST : 1;
    if (this.#steps > this.budget.maxSteps) {
      throw new BudgetExceeded(`it ran more than ${this.budget.maxSteps} steps (a loop that does not end, or one far too long)`);
    }
    // The clock is the backstop for steps that are costly by themselves (a filter over a long list).
    if ((this.#steps & 1023) < SCOPE_COST && performance.now() > this.#deadline) {
      throw new BudgetExceeded(`it ran longer than ${this.budget.maxMillis} ms`);
    }
    if (++this.#depth > this.budget.maxDepth) throw new BudgetExceeded(`it nests deeper than ${this.budget.maxDepth} (runaway recursion)`);
    try {
      const value = super.evaluate(node, env);
      checkSize(value, this.budget);
      return value;
    } finally {
      this.#depth--;
    }
  }
}

function checkSize(value: Value, { maxChars, maxItems }: RenderBudget): void {
  const inner: unknown = value.value;
  if (typeof inner === 'string' && inner.length > maxChars) {
    throw new BudgetExceeded(`it built a string of ${inner.length} characters, over the limit of ${maxChars}`);
  }
  const items = Array.isArray(inner) ? inner.length : inner instanceof Map ? inner.size : 0;
  if (items > maxItems) throw new BudgetExceeded(`it built a list or mapping of ${items} items, over the limit of ${maxItems}`);
}

/** Python's range, refusing more than `max` items before making them. */
function boundedRange(max: number) {
  return (start: number, stop?: number, step = 1): number[] => {
    if (stop === undefined) [start, stop] = [0, start];
    if (![start, stop, step].every(Number.isInteger)) throw new Error('range() arguments must be integers');
    if (step === 0) throw new Error('range() step must not be zero');
    const count = Math.max(0, Math.ceil((stop - start) / step));
    if (count > max) throw new BudgetExceeded(`range() of ${count} items is over the limit of ${max}`);
    return Array.from({ length: count }, (_, i) => start + i * step);
  };
}

/** transformers' strftime_now: the current local time in a strftime format (the subset templates use). */
function strftimeNow(format: string): string {
  const now = new Date();
  const pad2 = (n: number) => String(n).padStart(2, '0');
  const month = (style: 'long' | 'short') => new Intl.DateTimeFormat('en-US', { month: style }).format(now);
  const fields: Record<string, () => string> = {
    '%Y': () => String(now.getFullYear()),
    '%m': () => pad2(now.getMonth() + 1),
    '%d': () => pad2(now.getDate()),
    '%b': () => month('short'),
    '%B': () => month('long'),
    '%H': () => pad2(now.getHours()),
    '%M': () => pad2(now.getMinutes()),
    '%%': () => '%',
  };
  return String(format).replace(/%[YmdbBHM%]/g, (f) => fields[f]!());
}

/**
 * Template.render with a budget: the same globals as @huggingface/jinja's render (which does not
 * export them), with `range` bounded; throws BudgetExceeded when the template goes over.
 */
export function renderWithBudget(template: Template, items: Record<string, unknown>, budget: RenderBudget): string {
  const env = new Environment();
  const globals: Record<string, unknown> = {
    false: false, true: true, none: null, False: false, True: true, None: null,
    raise_exception: (message: string) => {
      throw new Error(message);
    },
    range: boundedRange(budget.maxItems),
    strftime_now: strftimeNow,
  };
  for (const [key, value] of Object.entries({ ...globals, ...items })) env.set(key, value);
  return (new BudgetedInterpreter(env, budget).run(template.parsed) as { value: string }).value;
}
