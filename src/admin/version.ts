// The version of imnode, read once from package.json: --version, the status of
// the admin socket and XEP-0092 answers all report this one value.
import { readFileSync } from 'node:fs';

export const VERSION: string =
  (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
