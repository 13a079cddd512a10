// Loads a tokenizer.json + tokenizer_config.json written by bpe.py with the library the engine
// uses (@huggingface/tokenizers) and checks that it encodes like bpe.py and decodes back.
// Run from the repository root: node tools/train/check_tokenizer.mjs <dir> <samples.json>
// samples.json: [{"text": ..., "ids": [...]}] with the ids bpe.py gives (no BOS).
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';

const [dir, samplesFile] = process.argv.slice(2);
const tokenizer = new Tokenizer(
  JSON.parse(readFileSync(`${dir}/tokenizer.json`, 'utf8')),
  JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, 'utf8')),
);
const samples = JSON.parse(readFileSync(samplesFile, 'utf8'));
let failures = 0;
for (const { text, ids } of samples) {
  const got = tokenizer.encode(text, { add_special_tokens: false }).ids;
  const decoded = tokenizer.decode(got);
  const same = got.length === ids.length && got.every((id, i) => id === ids[i]);
  if (!same || decoded !== text) {
    failures++;
    const at = got.findIndex((id, i) => id !== ids[i]);
    console.error(`mismatch on ${JSON.stringify(text.slice(0, 60))}: first differing id at ${at}, js ${got.slice(at, at + 5)} vs python ${ids.slice(at, at + 5)}; round trip ${decoded === text}`);
  }
}
const special = tokenizer.encode('<｜User｜>Hi<｜Assistant｜>', { add_special_tokens: false }).ids;
if (special[0] !== 2 || special[special.length - 1] !== 3) {
  failures++;
  console.error(`role markers not recognised as added tokens: ${special}`);
}
console.log(`check_tokenizer: ${samples.length - failures}/${samples.length} samples identical in JS and Python`);
process.exit(failures ? 1 : 0);
