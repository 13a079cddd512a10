// The checkpoint's chat template (Jinja, from tokenizer_config.json or chat_template.jinja),
// rendered with @huggingface/jinja the way transformers' `apply_chat_template` renders it:
// variables `messages`, `add_generation_prompt` and the special tokens as strings. The template
// is untrusted code, so it is rendered within a budget of steps and characters (template_budget.ts).

import { Template } from '@huggingface/jinja';
import { ArgumentError, TokenizerError } from '../errors.ts';
import { BudgetExceeded, countLoopIterations, renderWithBudget, type RenderBudget } from './template_budget.ts';
import { CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE, describeFile, parseJsonObject, tokenContent } from './tokenizer_files.ts';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface ApplyChatTemplateOptions {
  /** End the prompt with the marker that starts the assistant's turn (DeepSeek-V3: `<｜Assistant｜>`). Default true. */
  addGenerationPrompt?: boolean;
}

export interface LoadChatTemplateOptions {
  /** tokenizer_config.json, as text or parsed: its chat_template and special tokens. */
  tokenizerConfigJson: string | object;
  /** The text of chat_template.jinja when the checkpoint has one; it wins over tokenizer_config.json's chat_template, as in transformers. */
  chatTemplate?: string;
  /** Where the files came from (a URL, a folder), for error messages. */
  source?: string;
  /** Limits of one render (template_budget.ts); the defaults are far above what real templates need. */
  budget?: Partial<RenderBudget>;
}

/**
 * Real chat templates are a few KiB and take ~100 steps per message; the budget is generous and
 * grows with the conversation, since the output holds every message.
 */
const MAX_TEMPLATE_CHARS = 256 * 1024;
const DEFAULT_BUDGET = { baseSteps: 200_000, stepsPerMessage: 2_000, baseChars: 1 << 20, maxItems: 1 << 16, maxDepth: 500, maxMillis: 2_000 };

const ROLES: ReadonlySet<string> = new Set<ChatRole>(['system', 'user', 'assistant']);
/** The special tokens transformers passes to every chat template (its `special_tokens_map`). */
const TOKEN_VARIABLES = ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const;

export class ChatTemplate {
  /** Where the template came from, for messages: "chat_template in tokenizer_config.json in <source>". */
  readonly origin: string;
  readonly #template: Template;
  readonly #tokens: Readonly<Record<string, string>>;
  readonly #budget: Partial<RenderBudget>;

  constructor(template: Template, tokens: Readonly<Record<string, string>>, origin: string, budget: Partial<RenderBudget> = {}) {
    this.#template = template;
    this.#tokens = tokens;
    this.origin = origin;
    this.#budget = budget;
  }

  /** Render a conversation into the prompt text; encode it with `addSpecialTokens: false` (the template writes BOS itself). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions = {}): string {
    checkMessages(messages);
    const items = {
      ...this.#tokens,
      // Plain copies: the template sees exactly role and content, nothing the caller attached.
      messages: messages.map(({ role, content }) => ({ role, content })),
      add_generation_prompt: options.addGenerationPrompt ?? true,
    };
    try {
      return renderWithBudget(this.#template, items, this.budgetFor(messages));
    } catch (err) {
      if (err instanceof BudgetExceeded) throw new TokenizerError(`${this.origin} was stopped: ${err.message}; it is not a usable chat template`, { cause: err });
      throw new TokenizerError(`${this.origin} failed to render: ${(err as Error).message}`, { cause: err });
    }
  }

  private budgetFor(messages: readonly ChatMessage[]): RenderBudget {
    const contentChars = messages.reduce((n, m) => n + m.content.length, 0);
    return {
      maxSteps: this.#budget.maxSteps ?? DEFAULT_BUDGET.baseSteps + DEFAULT_BUDGET.stepsPerMessage * messages.length,
      maxChars: this.#budget.maxChars ?? DEFAULT_BUDGET.baseChars + 2 * contentChars,
      maxItems: this.#budget.maxItems ?? DEFAULT_BUDGET.maxItems + messages.length,
      maxDepth: this.#budget.maxDepth ?? DEFAULT_BUDGET.maxDepth,
      maxMillis: this.#budget.maxMillis ?? DEFAULT_BUDGET.maxMillis,
    };
  }
}

/** Compile the chat template of a checkpoint; a missing or unparsable template is a TokenizerError. */
export function loadChatTemplate(options: LoadChatTemplateOptions): ChatTemplate {
  const { source } = options;
  const config = parseJsonObject(options.tokenizerConfigJson, TOKENIZER_CONFIG_FILE, source);
  const configOrigin = `chat_template in ${describeFile(TOKENIZER_CONFIG_FILE, source)}`;
  const [text, origin] =
    options.chatTemplate !== undefined
      ? [options.chatTemplate, describeFile(CHAT_TEMPLATE_FILE, source)]
      : [templateText(config.chat_template, configOrigin, source), configOrigin];

  if (text.length > MAX_TEMPLATE_CHARS) {
    throw new TokenizerError(`${origin} is ${text.length} characters long, over the limit of ${MAX_TEMPLATE_CHARS}: it is not a usable chat template`);
  }
  let template: Template;
  try {
    template = new Template(text);
  } catch (err) {
    throw new TokenizerError(`${origin} is not a valid Jinja template: ${(err as Error).message}`, { cause: err });
  }
  countLoopIterations(template);
  const tokens: Record<string, string> = {};
  for (const key of TOKEN_VARIABLES) {
    const content = tokenContent(config, key, source);
    if (content !== null) tokens[key] = content;
  }
  return new ChatTemplate(template, tokens, origin, options.budget);
}

/**
 * tokenizer_config.json's chat_template is a string, or (transformers' named templates) a list of
 * `{name, template}` of which "default" is the chat one.
 */
function templateText(value: unknown, origin: string, source: string | undefined): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => t && typeof t === 'object' && t.name === 'default' && typeof t.template === 'string');
    if (named) return named.template as string;
    const names = value.map((t) => (t && typeof t === 'object' ? JSON.stringify(t.name) : '?')).join(', ');
    throw new TokenizerError(`${origin} lists named templates (${names}) but none named "default"`);
  }
  if (value === undefined || value === null) {
    throw new TokenizerError(
      `${describeFile(TOKENIZER_CONFIG_FILE, source)} has no chat_template (and no ${CHAT_TEMPLATE_FILE} was given): ` +
        'this checkpoint has no chat format; give the prompt as plain text instead',
    );
  }
  throw new TokenizerError(`${origin} must be a string or a list of {name, template}, got ${typeof value}`);
}

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) throw new ArgumentError('messages must be an array of {role, content}');
  messages.forEach((m, i) => {
    if (!m || !ROLES.has(m.role)) {
      throw new ArgumentError(`messages[${i}].role must be "system", "user" or "assistant", got ${JSON.stringify(m?.role)}`);
    }
    if (typeof m.content !== 'string') throw new ArgumentError(`messages[${i}].content must be a string`);
  });
}
