// README.md's option reference must be the one generated from the declarations.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { readmePath, updatedReadme, BEGIN } from '../../src/admin/readme.ts';
import { allOptions } from '../../src/admin/options.ts';

test('README option reference is up to date (run `npm run docs`)', () => {
  const readme = readFileSync(readmePath(), 'utf8');
  assert.ok(readme.includes(BEGIN), 'README has the options block');
  assert.is(readme, updatedReadme(readme), 'README option block differs from the declarations: run npm run docs');
});

test('every declared option appears in the README', () => {
  const readme = readFileSync(readmePath(), 'utf8');
  for (const o of allOptions()) assert.ok(readme.includes('--' + o.name), `--${o.name} missing from README`);
});

test.run();
