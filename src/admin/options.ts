// Typed option declarations: the one place that knows every option. Core options
// are declared in core-options.ts; modules declare their own with declareOptions.
// loadConfig merges flags > environment (IMNODE_<NAME>) > config file > defaults and
// refuses anything it does not understand, so that a typo never silently becomes a
// default. The README option table and --help are generated from the declarations.
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

export type OptionType = 'string' | 'int' | 'port' | 'bool' | 'path' | 'list' | 'enum' | 'duration';

export interface OptionSpec {
  /** kebab-case, e.g. 'c2s-port'; also the config-file key. */
  name: string;
  type: OptionType;
  /** Raw default, in the same form a user would write it ('300s' for a duration). */
  default?: unknown;
  description: string;
  /** Bounds for int, port and duration (milliseconds) options. */
  min?: number;
  max?: number;
  /** Allowed values of an enum option. */
  values?: readonly string[];
  /** Read IMNODE_<NAME_UPPER_SNAKE> from the environment. Default true. */
  env?: boolean;
  /** Accepted as a config-file key. Default true. */
  file?: boolean;
  /** README grouping: 'Server', 'TLS', 'Storage', 'Pool', ... */
  group?: string;
  /** Never shown (values, defaults) in help or logs. */
  secret?: boolean;
  /** Name of the value in help, e.g. 'PORT'. */
  placeholder?: string;
  /**
   * Set while the feature behind the option does not exist yet: giving the option
   * any non-default value is refused with this reason instead of being ignored.
   */
  notImplemented?: string;
}

/** A configuration problem the operator must fix; the message is one line. */
export class ConfigError extends Error {
  /** The option concerned, when there is one. */
  readonly option: string | undefined;
  constructor(message: string, option?: string) {
    super(message);
    this.name = 'ConfigError';
    this.option = option;
  }
}

export type Config = Record<string, unknown>;

const registry = new Map<string, OptionSpec>();
const NAME_RE = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

export function declareOptions(specs: OptionSpec[]): void {
  for (const spec of specs) {
    if (!NAME_RE.test(spec.name)) throw new Error(`option name must be kebab-case: ${spec.name}`);
    if (registry.has(spec.name)) throw new Error(`option declared twice: ${spec.name}`);
    if (spec.type === 'enum' && !spec.values?.length) throw new Error(`enum option without values: ${spec.name}`);
    // A bad default is a programming error; find it at declaration, not at start-up.
    if (spec.default !== undefined) convert(spec, spec.default, `default of --${spec.name}`, process.cwd());
    registry.set(spec.name, spec);
  }
}

export function allOptions(): OptionSpec[] {
  return [...registry.values()];
}

export function envName(name: string): string {
  return 'IMNODE_' + name.toUpperCase().replace(/-/g, '_');
}

// ---- conversion of one raw value -------------------------------------------------

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** '30s', '5m', '250ms', '1h', or a bare number of seconds -> milliseconds. */
export function parseDuration(raw: string | number): number | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) && raw >= 0 ? Math.round(raw * 1000) : undefined;
  const m = DURATION_RE.exec(raw.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']);
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

function show(raw: unknown): string {
  return typeof raw === 'string' ? `'${raw}'` : JSON.stringify(raw);
}

function checkBounds(spec: OptionSpec, n: number, label: string, what: string, unit = ''): void {
  if (spec.min !== undefined && n < spec.min) throw new ConfigError(`${label}: ${what} is below the minimum ${spec.min}${unit}`, spec.name);
  if (spec.max !== undefined && n > spec.max) throw new ConfigError(`${label}: ${what} is above the maximum ${spec.max}${unit}`, spec.name);
}

/**
 * Converts a raw value (a string from a flag or the environment, or a JSON value
 * from the config file) to the option's type. `base` resolves relative paths.
 */
function convert(spec: OptionSpec, raw: unknown, label: string, base: string): unknown {
  if (!spec.secret) return convertValue(spec, raw, label, base);
  try {
    return convertValue(spec, raw, label, base);
  } catch (e) {
    // The reason would quote the secret.
    if (e instanceof ConfigError) throw new ConfigError(`${label}: not a valid ${spec.type} (value not shown)`, spec.name);
    throw e;
  }
}

function convertValue(spec: OptionSpec, raw: unknown, label: string, base: string): unknown {
  const bad = (why: string): never => { throw new ConfigError(`${label}: ${why}`, spec.name); };
  const text = (): string => {
    if (typeof raw === 'number' && spec.type !== 'path') return String(raw);
    if (typeof raw !== 'string') return bad(`${show(raw)} is not a string`);
    if (raw.trim() === '') return bad('empty value');
    return raw.trim();
  };
  switch (spec.type) {
    case 'string':
      return text();
    case 'path':
      return resolve(base, text());
    case 'enum': {
      const v = text();
      if (!spec.values!.includes(v)) bad(`${show(v)} is not one of ${spec.values!.join(', ')}`);
      return v;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const v = typeof raw === 'string' ? raw.trim().toLowerCase() : '';
      if (TRUE.has(v)) return true;
      if (FALSE.has(v)) return false;
      return bad(`${show(raw)} is not a boolean (true or false)`);
    }
    case 'int':
    case 'port': {
      const v = text();
      if (!/^-?\d+$/.test(v)) bad(`${show(raw)} is not ${spec.type === 'port' ? 'a port number' : 'an integer'}`);
      const n = Number(v);
      if (spec.type === 'port') {
        const lo = spec.min ?? 1, hi = spec.max ?? 65535;
        if (n < lo || n > hi) bad(`${n} is not a port (${lo}-${hi})`);
        return n;
      }
      if (!Number.isSafeInteger(n)) bad(`${v} is too large`);
      checkBounds(spec, n, label, String(n));
      return n;
    }
    case 'duration': {
      const ms = typeof raw === 'number' || typeof raw === 'string' ? parseDuration(raw) : undefined;
      if (ms === undefined) return bad(`${show(raw)} is not a duration (e.g. 30s, 5m, 250ms, or a number of seconds)`);
      checkBounds(spec, ms, label, show(raw), 'ms');
      return ms;
    }
    case 'list': {
      const items = Array.isArray(raw) ? raw : [raw];
      const out: string[] = [];
      for (const item of items) {
        if (typeof item !== 'string') bad(`${show(item)} is not a string`);
        for (const part of (item as string).split(',')) if (part.trim()) out.push(part.trim());
      }
      return out;
    }
  }
}

// ---- command line ----------------------------------------------------------------

interface FlagValue { raws: string[]; negated?: boolean }

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

function unknownOption(label: string, name: string): ConfigError {
  let best: string | undefined, bestD = Infinity;
  for (const n of registry.keys()) {
    const d = editDistance(name, n);
    if (d < bestD) { best = n; bestD = d; }
  }
  const hint = best && bestD <= Math.max(2, Math.floor(name.length / 3)) ? `; did you mean --${best}?` : '';
  return new ConfigError(`${label}: unknown option${hint} (see imnode --help)`, name);
}

function parseArgv(argv: string[]): { flags: Map<string, FlagValue>; positionals: string[] } {
  const flags = new Map<string, FlagValue>();
  const positionals: string[] = [];
  const set = (spec: OptionSpec, raw: string): void => {
    const prev = flags.get(spec.name);
    // Lists accumulate over repeats; for the others the last one wins.
    if (prev && spec.type === 'list') prev.raws.push(raw);
    else flags.set(spec.name, { raws: [raw] });
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') { positionals.push(...argv.slice(i + 1)); break; }
    if (arg === '-h') { set(registry.get('help') ?? { name: 'help', type: 'bool', description: '' }, 'true'); continue; }
    if (!arg.startsWith('-') || arg === '-') { positionals.push(arg); continue; }
    if (!arg.startsWith('--')) throw unknownOption(arg, arg.replace(/^-+/, ''));
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    let spec = registry.get(name);
    if (!spec && name.startsWith('no-')) {
      const negated = registry.get(name.slice(3));
      if (negated?.type === 'bool') {
        if (inline !== undefined) throw new ConfigError(`--${name}: takes no value`, negated.name);
        set(negated, 'false');
        continue;
      }
    }
    if (!spec) throw unknownOption(`--${name}`, name);
    if (spec.type === 'bool') { set(spec, inline ?? 'true'); continue; }
    if (inline !== undefined) { set(spec, inline); continue; }
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) throw new ConfigError(`--${name}: missing value`, name);
    set(spec, next);
    i++;
  }
  return { flags, positionals };
}

// ---- config file -----------------------------------------------------------------

async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(`config file ${file}: cannot read it (${err.code ?? err.message})`, 'config');
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config file ${file}: not valid JSON (${(e as Error).message.split('\n')[0]})`, 'config');
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(`config file ${file}: must be a JSON object of option names to values`, 'config');
  }
  return data as Record<string, unknown>;
}

// ---- loading ---------------------------------------------------------------------

export async function loadConfig(argv: string[], env: NodeJS.ProcessEnv): Promise<{ config: Config; positionals: string[] }> {
  const cwd = process.cwd();
  const { flags, positionals } = parseArgv(argv);
  const envValue = (spec: OptionSpec): string | undefined => {
    if (spec.env === false) return undefined;
    const v = env[envName(spec.name)];
    // An empty variable is how shells and compose files unset things.
    return v === undefined || v.trim() === '' ? undefined : v;
  };

  let fileData: Record<string, unknown> = {};
  let filePath: string | undefined;
  const configSpec = registry.get('config');
  if (configSpec) {
    const flag = flags.get('config');
    const fromEnv = envValue(configSpec);
    if (flag) filePath = convert(configSpec, flag.raws[0], '--config', cwd) as string;
    else if (fromEnv !== undefined) filePath = convert(configSpec, fromEnv, `--config (${envName('config')})`, cwd) as string;
  }
  if (filePath) {
    fileData = await readConfigFile(filePath);
    for (const key of Object.keys(fileData)) {
      const spec = registry.get(key);
      if (!spec) throw unknownOption(`config file ${filePath}: key '${key}'`, key);
      if (spec.file === false) throw new ConfigError(`config file ${filePath}: key '${key}' is not allowed in a config file`, key);
    }
  }

  const config: Config = {};
  const explicit = new Set<string>();
  for (const spec of registry.values()) {
    const flag = flags.get(spec.name);
    const fromEnv = envValue(spec);
    let value: unknown;
    if (flag) {
      value = convert(spec, spec.type === 'list' ? flag.raws : flag.raws[flag.raws.length - 1], `--${spec.name}`, cwd);
      explicit.add(spec.name);
    } else if (fromEnv !== undefined) {
      value = convert(spec, fromEnv, `--${spec.name} (${envName(spec.name)})`, cwd);
      explicit.add(spec.name);
    } else if (filePath && spec.name in fileData) {
      // Relative paths in a config file are relative to the file, not to wherever imnode was started.
      value = convert(spec, fileData[spec.name], `--${spec.name} (in ${filePath})`, dirname(filePath));
      explicit.add(spec.name);
    } else if (spec.default !== undefined) {
      value = convert(spec, spec.default, `default of --${spec.name}`, cwd);
    } else if (spec.type === 'list') {
      value = [];
    }
    if (value !== undefined) config[spec.name] = value;
  }

  for (const spec of registry.values()) {
    if (!spec.notImplemented || !explicit.has(spec.name)) continue;
    const def = spec.default === undefined ? (spec.type === 'list' ? [] : undefined) : convert(spec, spec.default, '', cwd);
    if (JSON.stringify(config[spec.name]) !== JSON.stringify(def)) {
      throw new ConfigError(`--${spec.name}: ${spec.notImplemented}`, spec.name);
    }
  }
  return { config, positionals };
}

// ---- typed accessors ---------------------------------------------------------------

function get(config: Config, name: string, type: string, check: (v: unknown) => boolean): unknown {
  const v = config[name];
  if (!check(v)) throw new TypeError(`option ${name} is ${v === undefined ? 'not set' : 'not ' + type}`);
  return v;
}

/** A required string, path or enum option (throws TypeError if absent: a programming error). */
export function getString(config: Config, name: string): string {
  return get(config, name, 'a string', (v) => typeof v === 'string') as string;
}
export function getOptionalString(config: Config, name: string): string | undefined {
  return config[name] === undefined ? undefined : getString(config, name);
}
/** int, port and duration (milliseconds) options. */
export function getNumber(config: Config, name: string): number {
  return get(config, name, 'a number', (v) => typeof v === 'number') as number;
}
export function getBool(config: Config, name: string): boolean {
  return get(config, name, 'a boolean', (v) => typeof v === 'boolean') as boolean;
}
export function getList(config: Config, name: string): string[] {
  return config[name] === undefined ? [] : get(config, name, 'a list', Array.isArray) as string[];
}

// ---- documentation -----------------------------------------------------------------

function placeholder(spec: OptionSpec): string {
  if (spec.placeholder) return spec.placeholder;
  switch (spec.type) {
    case 'enum': return spec.values!.join('|');
    case 'int': return 'N';
    case 'port': return 'PORT';
    case 'path': return 'FILE';
    case 'duration': return 'DURATION';
    case 'list': return 'VALUE';
    default: return 'VALUE';
  }
}

function flagText(spec: OptionSpec): string {
  if (spec.name === 'help') return '--help, -h';
  // The negative form is worth showing only where it changes something.
  if (spec.type === 'bool') return spec.default === true ? `--${spec.name}, --no-${spec.name}` : `--${spec.name}`;
  return `--${spec.name} ${placeholder(spec)}`;
}

function defaultText(spec: OptionSpec): string {
  if (spec.secret || spec.default === undefined) return '';
  if (Array.isArray(spec.default)) return spec.default.join(',');
  return String(spec.default);
}

function groups(): Map<string, OptionSpec[]> {
  const out = new Map<string, OptionSpec[]>();
  for (const spec of registry.values()) {
    const g = spec.group ?? 'Other';
    if (!out.has(g)) out.set(g, []);
    out.get(g)!.push(spec);
  }
  return out;
}

function descriptionText(spec: OptionSpec): string {
  let d = spec.description;
  if (spec.type === 'list') d += ' Repeat the flag, or separate values with commas.';
  return d;
}

/** The README option table, one table per group. */
export function optionsMarkdown(): string {
  const cell = (s: string): string => s.replace(/\|/g, '\\|');
  const code = (s: string): string => (s ? '`' + s + '`' : '');
  const parts: string[] = [];
  for (const [group, specs] of groups()) {
    parts.push(`### ${group}`, '', '| Flag | Environment | Config key | Default | Description |', '| --- | --- | --- | --- | --- |');
    for (const spec of specs) {
      parts.push('| ' + [
        code(flagText(spec)),
        spec.env === false ? '' : code(envName(spec.name)),
        spec.file === false ? '' : code(`"${spec.name}"`),
        code(defaultText(spec)),
        descriptionText(spec),
      ].map(cell).join(' | ') + ' |');
    }
    parts.push('');
  }
  return parts.join('\n');
}

/** The option list printed by --help. */
export function optionsHelp(width = 100): string {
  const lines: string[] = [];
  for (const [group, specs] of groups()) {
    lines.push('', `${group}:`);
    for (const spec of specs) {
      const def = defaultText(spec);
      const head = `  ${flagText(spec)}`;
      const desc = descriptionText(spec) + (def ? ` (default: ${def})` : '') + (spec.env === false ? '' : ` [${envName(spec.name)}]`);
      lines.push(head);
      lines.push(...wrap(desc, width - 6).map((l) => '      ' + l));
    }
  }
  return lines.join('\n').trimStart() + '\n';
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) { out.push(line); line = word; }
    else line = line ? line + ' ' + word : word;
  }
  if (line) out.push(line);
  return out;
}
