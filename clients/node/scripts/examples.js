// What a marker <!-- example: TARGET --> in README.md shows: the file TARGET, or for PATH#N the
// Nth section of PATH (counted from 1). A section begins at a line `// --- name ---`; the first
// is what comes before the first such line.
import { readFileSync } from 'node:fs';

const root = new URL('../', import.meta.url);

/**
 * The sections of an example file, each ending with one newline.
 * @param {string} text
 * @returns {string[]}
 */
export function sections(text) {
  return text.split(/\n\n+(?=\/\/ --- )/).map((section) => `${section.trimEnd()}\n`);
}

/**
 * The text a marker's target stands for.
 * @param {string} target `PATH` or `PATH#N`, relative to the kit's folder
 * @returns {string}
 */
export function exampleText(target) {
  const [path, section] = target.split('#');
  const text = readFileSync(new URL(path, root), 'utf8');
  return section ? sections(text)[Number(section) - 1] : text;
}
