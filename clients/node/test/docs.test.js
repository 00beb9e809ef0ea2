// README.md shows the examples whole: each block marked <!-- example: PATH --> must be the file,
// and the blocks marked <!-- example: PATH#N --> its sections, every one, in order
// (scripts/sync-readme.js copies them in; scripts/examples.js says what a marker stands for).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { exampleText, sections } from '../scripts/examples.js';

const root = new URL('../', import.meta.url);
const readme = readFileSync(new URL('README.md', root), 'utf8');
const blocks = [...readme.matchAll(/<!-- example: (\S+) -->\n```\w*\n([^]*?)```\n/g)];
const faultSections = sections(exampleText('examples/faults.test.js')).map((_, index) => `examples/faults.test.js#${index + 1}`);

test('README.md shows the example files', () => {
  assert.deepEqual(blocks.map(([, target]) => target), [
    'examples/ivr-bot.test.js', 'examples/own-endpoint.test.js', 'examples/graph-client.test.js',
    ...faultSections, 'examples/vitest.spec.js', 'examples/jest.spec.js',
  ]);
});

for (const [, target, code] of blocks) {
  test(`README.md shows ${target} as it is`, () => {
    assert.equal(code, exampleText(target), `${target} changed: run \`node scripts/sync-readme.js\``);
  });
}
