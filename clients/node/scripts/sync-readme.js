// Copies each example file into README.md, in the code block marked <!-- example: PATH -->, or
// one of its sections into the block marked <!-- example: PATH#N --> (see examples.js).
// test/docs.test.js fails until this is run after an example changes.
import { readFileSync, writeFileSync } from 'node:fs';

import { exampleText } from './examples.js';

const readmeUrl = new URL('../README.md', import.meta.url);
const readme = readFileSync(readmeUrl, 'utf8').replace(
  /(<!-- example: (\S+) -->\n```\w*\n)[^]*?(```\n)/g,
  (_, opening, target, closing) => `${opening}${exampleText(target)}${closing}`,
);
writeFileSync(readmeUrl, readme);
