// README.md shows the examples whole: each block marked <!-- example: PATH --> must be the file
// (scripts/sync-readme.js copies them in).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const root = new URL('../', import.meta.url);
const readme = readFileSync(new URL('README.md', root), 'utf8');
const blocks = [...readme.matchAll(/<!-- example: (\S+) -->\n```\w*\n([^]*?)```\n/g)];

test('README.md shows the example files', () => {
  assert.deepEqual(blocks.map(([, path]) => path), [
    'examples/ivr-bot.test.js', 'examples/own-endpoint.test.js', 'examples/graph-client.test.js',
    'examples/vitest.spec.js', 'examples/jest.spec.js',
  ]);
});

for (const [, path, code] of blocks) {
  test(`README.md shows ${path} as it is`, () => {
    assert.equal(code, readFileSync(new URL(path, root), 'utf8'), `${path} changed: run \`node scripts/sync-readme.js\``);
  });
}
