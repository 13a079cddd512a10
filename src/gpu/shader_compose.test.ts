import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../errors.ts';
import { checkVariant, composeShader, selectVariant } from './shader_compose.ts';

const axes = { weights: ['fp8', 'bf16', 'f32'], strategy: ['row', 'tile'] } as const;

const kernel = {
  name: 'k.wgsl',
  code: [
    'common',
    '#if weights == fp8',
    'fp8 only',
    '#elif weights == bf16',
    'bf16 only',
    '  #if strategy == tile',
    'bf16 tile',
    '  #endif',
    '#else',
    'f32 only',
    '#endif',
    '#if strategy != row',
    'not row',
    '#endif',
    'end',
  ].join('\n'),
};

const lines = (weights: string, strategy: string) => selectVariant(kernel, axes, { weights, strategy }).split('\n');

describe('selectVariant', () => {
  it('keeps exactly the lines of the chosen branches, nested blocks included', () => {
    expect(lines('fp8', 'row')).toEqual(['common', 'fp8 only', 'end']);
    expect(lines('bf16', 'row')).toEqual(['common', 'bf16 only', 'end']);
    expect(lines('bf16', 'tile')).toEqual(['common', 'bf16 only', 'bf16 tile', 'not row', 'end']);
    expect(lines('f32', 'tile')).toEqual(['common', 'f32 only', 'not row', 'end']);
  });

  it('rejects malformed directives, naming the file and line', () => {
    const bad = (code: string) => () => selectVariant({ name: 'bad.wgsl', code }, axes, { weights: 'fp8', strategy: 'row' });
    expect(bad('#if weights == fp8\nx')).toThrow(/bad.wgsl:1: #if without #endif/);
    expect(bad('x\n#endif')).toThrow(/bad.wgsl:2: #endif without #if/);
    expect(bad('#if dtype == f16\n#endif')).toThrow(/"dtype" is not a variant axis/);
    expect(bad('#if weights == int4\n#endif')).toThrow(/"int4" is not a value of weights/);
    expect(bad('#if weights\n#endif')).toThrow(/expected "#if <axis> == <value>"/);
    expect(bad('#if weights == fp8\n#else\n#elif weights == bf16\n#endif')).toThrow(/bad.wgsl:3: #elif after #else/);
    // a condition in a branch not taken is still checked
    expect(bad('#if weights == fp8\n#elif weights == int4\n#endif')).toThrow(/"int4"/);
  });
});

describe('composeShader', () => {
  it('prepends the snippets in order, each specialised, under a header naming the variant', () => {
    const code = composeShader({
      kernel,
      snippets: [
        { name: 'a.wgsl', code: 'fn a() {}' },
        { name: 'b.wgsl', code: '#if strategy == row\nfn b_row() {}\n#else\nfn b_tile() {}\n#endif' },
      ],
      axes,
      variant: { strategy: 'tile', weights: 'f32' },
    });
    expect(code.split('\n')).toEqual([
      '// k.wgsl (strategy=tile weights=f32), composed by src/gpu/shader_compose.ts',
      '// ---- a.wgsl ----',
      'fn a() {}',
      '// ---- b.wgsl ----',
      'fn b_tile() {}',
      '// ---- k.wgsl ----',
      'common',
      'f32 only',
      'not row',
      'end',
    ]);
  });

  it('refuses a variant outside the closed list with a typed error', () => {
    expect(() => checkVariant('k', axes, { weights: 'int4', strategy: 'row' })).toThrow(ArgumentError);
    expect(() => checkVariant('k', axes, { weights: 'int4', strategy: 'row' })).toThrow(/use one of fp8, bf16, f32/);
    expect(() => checkVariant('k', axes, { weights: 'fp8' })).toThrow(/must set "strategy"/);
    expect(() => checkVariant('k', axes, { weights: 'fp8', strategy: 'row', extra: 'x' })).toThrow(/unknown variant axis "extra"/);
    expect(() => composeShader({ kernel, axes, variant: { weights: 'fp8', strategy: 'diagonal' } })).toThrow(ArgumentError);
  });
});
