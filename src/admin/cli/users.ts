// `imnode user add|passwd|del|list|import`: accounts, through the admin socket of
// a running node, else in the data dir directly. Passwords are never echoed or logged.
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { getString, getOptionalString, type Config } from '../options.ts';
import type { Store } from '../../store/db.ts';
import { EmbeddedDirectory, UnknownUserError, UserExistsError } from '../../store/directory.ts';
import { prepPassword } from '../../xmpp/jid.ts';
import { UsageError, Failure, Interrupted } from './errors.ts';
import { configuredDomain, nodeFailure, openDataStore, runningNode, userName } from './admin-access.ts';
import { ldapEnabled } from '../../store/ldap/options.ts';

// ---- accounts --------------------------------------------------------------------

function firstLine(text: string): string {
  return text.split(/\r?\n/, 1)[0];
}

async function readStdinLine(): Promise<string> {
  let buf = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) {
    buf += chunk as string;
    // Stop at the first line: the rest of the input is not ours to wait for.
    if (buf.includes('\n')) break;
  }
  return firstLine(buf);
}

/** Reads one line from the terminal in raw mode, so that nothing is echoed. */
function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err); else resolve(buf);
    };
    const onData = (s: string): void => {
      for (const ch of s) {
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003' || (ch === '\u0004' && !buf)) return finish(new Interrupted('aborted'));
        if (ch === '\u007f' || ch === '\b') buf = [...buf].slice(0, -1).join('');
        else if (ch === '\u0015') buf = '';
        else if (ch >= ' ') buf += ch;
      }
    };
    process.stderr.write(question);
    stdin.setEncoding('utf8');
    stdin.setRawMode(true);
    stdin.on('data', onData);
    stdin.resume();
  });
}

async function readPassword(config: Config, jid: string): Promise<string> {
  let password: string;
  const file = getOptionalString(config, 'password-file');
  if (file) {
    try {
      password = firstLine(await readFile(file, 'utf8'));
    } catch (e) {
      throw new UsageError(`--password-file: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  } else if (!process.stdin.isTTY) {
    password = await readStdinLine();
  } else {
    password = await promptHidden(`Password for ${jid}: `);
    const again = await promptHidden('Again: ');
    if (again !== password) throw new UsageError('the passwords do not match');
  }
  if (password === '') throw new UsageError('no password given');
  try {
    return prepPassword(password);
  } catch {
    // The reason could quote the password; say what is wrong without it.
    throw new UsageError('the password contains characters that are not allowed (RFC 8265 OpaqueString)');
  }
}

function openStore(config: Config): Promise<Store> {
  return openDataStore(getString(config, 'data-dir'), 'in use by a running imnode; stop it first');
}

/** The accounts as `imnode user` reaches them: through the running node, or in the data dir. */
interface Accounts {
  exists(name: string): Promise<boolean>;
  create(name: string, password: string): Promise<void>;
  setPassword(name: string, password: string): Promise<void>;
  delete(name: string): Promise<void>;
  list(): Promise<string[]>;
  close(): Promise<void>;
}

async function openAccounts(config: Config): Promise<Accounts> {
  const admin = await runningNode(getString(config, 'data-dir'));
  if (admin) {
    return {
      exists: (n) => admin.userExists(n),
      create: (n, p) => admin.addUser(n, p),
      setPassword: (n, p) => admin.setPassword(n, p),
      delete: (n) => admin.deleteUser(n),
      list: () => admin.listUsers(),
      close: async () => {},
    };
  }
  const store = await openStore(config);
  const directory = new EmbeddedDirectory(store);
  return {
    exists: (n) => directory.exists(n),
    create: (n, p) => directory.create(n, p),
    setPassword: (n, p) => directory.setPassword(n, p),
    delete: (n) => directory.delete(n),
    list: () => directory.list(),
    close: () => store.close(),
  };
}

interface ImportedAccount { line: number; name: string; password: string }

/** Errors listed before the rest are summed up: enough to fix a file in a few rounds. */
const MAX_IMPORT_ERRORS = 10;

async function readImportInput(source: string | undefined): Promise<string> {
  if (source === undefined && process.stdin.isTTY) {
    throw new UsageError('user import: give a FILE, or pipe the accounts into standard input (or use - to type them)');
  }
  if (source === undefined || source === '-') {
    let text = '';
    process.stdin.setEncoding('utf8');
    for await (const chunk of process.stdin) text += chunk as string;
    return text;
  }
  try {
    return await readFile(source, 'utf8');
  } catch (e) {
    throw new UsageError(`user import: cannot read ${source} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/**
 * Parses "name:password" / "name password" lines. A localpart may contain
 * neither ':' nor spaces (RFC 7622 §3.3.1), so the first of them ends the name
 * and the password keeps any later ones.
 */
function parseImport(text: string, domain: string): { accounts: ImportedAccount[]; errors: string[] } {
  const accounts: ImportedAccount[] = [];
  const errors: string[] = [];
  const firstLineOf = new Map<string, number>();
  const lines = text.split('\n');
  // A final newline does not start another line.
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, i) => {
    const line = i + 1;
    const s = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (s.trim() === '' || s.startsWith('#')) return;
    const m = /^([^:\s]+)(?::|[ \t]+)(.*)$/.exec(s);
    if (!m) return void errors.push(`line ${line}: expected "name:password" or "name password"`);
    let name: string;
    try {
      name = userName(m[1], domain);
    } catch (e) {
      return void errors.push(`line ${line}: ${(e as Error).message}`);
    }
    if (m[2] === '') return void errors.push(`line ${line}: no password for ${name}`);
    let password: string;
    try {
      password = prepPassword(m[2]);
    } catch {
      // Never quote the password itself.
      return void errors.push(`line ${line}: the password of ${name} contains characters that are not allowed (RFC 8265 OpaqueString)`);
    }
    const seen = firstLineOf.get(name);
    if (seen !== undefined) return void errors.push(`line ${line}: duplicate user ${name}@${domain} (already on line ${seen})`);
    firstLineOf.set(name, line);
    accounts.push({ line, name, password });
  });
  return { accounts, errors };
}

function importErrors(errors: string[]): Failure {
  const shown = errors.slice(0, MAX_IMPORT_ERRORS);
  if (errors.length > shown.length) shown.push(`... and ${errors.length - shown.length} more`);
  return new Failure(`user import: nothing imported:\n  ${shown.join('\n  ')}`);
}

async function importUsers(directory: EmbeddedDirectory, accounts: ImportedAccount[], domain: string): Promise<number> {
  // Everything is checked before the first write, so a bad file leaves the database as it was.
  const existing = new Set(await directory.list());
  const clashes = accounts.filter((a) => existing.has(a.name))
    .map((a) => `line ${a.line}: user ${a.name}@${domain} already exists`);
  if (clashes.length) throw importErrors(clashes);
  // Key derivation (PBKDF2) dominates and runs on the libuv pool: keep it busy, not flooded.
  const workers = Math.max(2, availableParallelism() * 2);
  let next = 0;
  let created = 0;
  const work = async (): Promise<void> => {
    while (next < accounts.length) {
      const a = accounts[next++];
      await directory.create(a.name, a.password);
      created++;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(workers, accounts.length) }, work));
  } catch (e) {
    // Only storage can fail here; say how far the import got.
    const reason = e instanceof UserExistsError ? `user ${e.username}@${domain} was created meanwhile` : (e as Error).message;
    throw new Failure(`user import: stopped after creating ${created} of ${accounts.length} accounts: ${reason}`);
  }
  return created;
}

export async function userCommand(args: string[], config: Config): Promise<void> {
  const [action, ...rest] = args;
  const arity: Record<string, [number, number, string]> = {
    add: [1, 1, ' <name>'], passwd: [1, 1, ' <name>'], del: [1, 1, ' <name>'], list: [0, 0, ''], import: [0, 1, ' [FILE|-]'],
  };
  if (action === undefined || !(action in arity)) {
    throw new UsageError(`unknown user command '${action ?? ''}' (add, passwd, del, list, import)`);
  }
  const [min, max, params] = arity[action];
  if (rest.length < min || rest.length > max) throw new UsageError(`usage: imnode user ${action}${params}`);
  // Accounts live in the directory then; an embedded account made here would never be used.
  if (action !== 'list' && ldapEnabled(config)) {
    throw new Failure(`user ${action}: the accounts are in the LDAP directory (--ldap-url): manage them there`);
  }
  const domain = configuredDomain(config);
  if (action === 'import') {
    // Read and checked before the database is opened: a bad file needs no lock.
    const { accounts, errors } = parseImport(await readImportInput(rest[0]), domain);
    if (errors.length) throw importErrors(errors);
    const store = await openStore(config);
    try {
      const n = await importUsers(new EmbeddedDirectory(store), accounts, domain);
      process.stderr.write(`imported ${n} accounts\n`);
    } finally {
      await store.close();
    }
    return;
  }
  const name = action === 'list' ? '' : userName(rest[0], domain);
  const jid = `${name}@${domain}`;

  const directory = await openAccounts(config);
  try {
    switch (action) {
      case 'list':
        for (const u of (await directory.list()).sort()) process.stdout.write(u + '\n');
        return;
      case 'add':
        // Check first so nobody types a password for nothing.
        if (await directory.exists(name)) throw new Failure(`user ${jid} already exists`);
        await directory.create(name, await readPassword(config, jid));
        process.stderr.write(`created ${jid}\n`);
        return;
      case 'passwd':
        if (!(await directory.exists(name))) throw new Failure(`no such user: ${jid}`);
        await directory.setPassword(name, await readPassword(config, jid));
        process.stderr.write(`changed the password of ${jid}\n`);
        return;
      case 'del':
        await directory.delete(name);
        process.stderr.write(`deleted ${jid}\n`);
        return;
    }
  } catch (e) {
    if (e instanceof UserExistsError) throw new Failure(`user ${jid} already exists`);
    if (e instanceof UnknownUserError) throw new Failure(`no such user: ${jid}`);
    throw nodeFailure(e);
  } finally {
    await directory.close();
  }
}
