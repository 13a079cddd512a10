// For the structured-output tests: a small JSON Schema validator for the keywords the tests use
// (type, properties, required, additionalProperties, items, minItems, maxItems, enum, const,
// minimum, maximum, minLength, maxLength), so that a reply is checked against its schema by code
// that shares nothing with the grammar that produced it.

type Schema = Record<string, unknown>;

/** The places where `value` breaks `schema` ("$.address.zip: 3.5 is not an integer"); empty when it follows it. */
export function schemaViolations(value: unknown, schema: Schema, path = '$'): string[] {
  const out: string[] = [];
  const type = schema.type as string | undefined;
  const typeOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v);
  if (type !== undefined) {
    const actual = typeOf(value);
    const ok = actual === type || (type === 'number' && actual === 'integer');
    if (!ok) return [`${path}: ${JSON.stringify(value)} is not ${type === 'integer' ? 'an' : 'a'} ${type}`];
  }
  if (schema.enum && !(schema.enum as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(value))) out.push(`${path}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  if ('const' in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) out.push(`${path}: ${JSON.stringify(value)} is not ${JSON.stringify(schema.const)}`);
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) out.push(`${path}: ${value} < minimum ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) out.push(`${path}: ${value} > maximum ${schema.maximum}`);
  }
  if (typeof value === 'string') {
    const length = [...value].length;
    if (typeof schema.minLength === 'number' && length < schema.minLength) out.push(`${path}: length ${length} < minLength ${schema.minLength}`);
    if (typeof schema.maxLength === 'number' && length > schema.maxLength) out.push(`${path}: length ${length} > maxLength ${schema.maxLength}`);
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) out.push(`${path}: ${value.length} items < minItems ${schema.minItems}`);
    if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) out.push(`${path}: ${value.length} items > maxItems ${schema.maxItems}`);
    if (schema.items) value.forEach((item, i) => out.push(...schemaViolations(item, schema.items as Schema, `${path}[${i}]`)));
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    for (const key of (schema.required ?? []) as string[]) if (!(key in value)) out.push(`${path}: required property "${key}" is missing`);
    for (const [key, v] of Object.entries(value)) {
      if (properties[key]) out.push(...schemaViolations(v, properties[key], `${path}.${key}`));
      else if (schema.additionalProperties === false) out.push(`${path}: property "${key}" is not allowed`);
    }
  }
  return out;
}
