// Per-component loggers (imnode:c2s, imnode:pool:membership) writing one line per
// entry to stderr, so that logs stay greppable and collectors need no multi-line
// parsing. The level is process-wide: there is one --log-level.
import { inspect } from 'node:util';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface Logger {
  error(...a: unknown[]): void;
  warn(...a: unknown[]): void;
  info(...a: unknown[]): void;
  debug(...a: unknown[]): void;
  /** A logger for a sub-component: child('c2s') of 'imnode' logs as 'imnode:c2s'. */
  child(component: string): Logger;
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };
let current: LogLevel = 'info';
let write: (line: string) => void = (line) => { process.stderr.write(line + '\n'); };

export function setLogLevel(level: LogLevel): void {
  if (!(level in RANK)) throw new Error(`unknown log level: ${level}`);
  current = level;
}

export function getLogLevel(): LogLevel {
  return current;
}

/** Redirects log lines (tests capture them); returns the previous writer. */
export function setLogWriter(w: (line: string) => void): (line: string) => void {
  const prev = write;
  write = w;
  return prev;
}

function render(a: unknown): string {
  if (typeof a === 'string') return a;
  if (a instanceof Error) {
    const code = (a as NodeJS.ErrnoException).code;
    const head = `${a.name}: ${a.message}${code ? ` (${code})` : ''}`;
    // Where it came from matters for unexpected errors; keep the frames on the same line.
    if (current === 'debug' && a.stack) {
      const frames = a.stack.split('\n').filter((l) => l.trimStart().startsWith('at ')).map((l) => l.trim());
      return frames.length ? `${head} ${frames.join(' | ')}` : head;
    }
    return head;
  }
  return inspect(a, { breakLength: Infinity, depth: 4 });
}

function makeLogger(component: string): Logger {
  const emit = (level: LogLevel, args: unknown[]): void => {
    if (RANK[level] > RANK[current]) return;
    const msg = args.map(render).join(' ').replace(/\r?\n/g, '\\n');
    write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${component} ${msg}`);
  };
  return {
    error: (...a) => emit('error', a),
    warn: (...a) => emit('warn', a),
    info: (...a) => emit('info', a),
    debug: (...a) => emit('debug', a),
    child: (sub) => makeLogger(`${component}:${sub}`),
  };
}

/** Creates a root logger and sets the process-wide level. */
export function createLogger(level: LogLevel, component = 'imnode'): Logger {
  setLogLevel(level);
  return makeLogger(component);
}
