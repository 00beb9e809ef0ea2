// Copies each example file into README.md, in the code block marked <!-- example: PATH -->.
// test/docs.test.js fails until this is run after an example changes.
import { readFileSync, writeFileSync } from 'node:fs';

const root = new URL('../', import.meta.url);
const readmeUrl = new URL('README.md', root);
const readme = readFileSync(readmeUrl, 'utf8').replace(
  /(<!-- example: (\S+) -->\n```\w*\n)[^]*?(```\n)/g,
  (_, opening, path, closing) => `${opening}${readFileSync(new URL(path, root), 'utf8')}${closing}`,
);
writeFileSync(readmeUrl, readme);
