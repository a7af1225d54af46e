// `npm run build`: the single executable dist/imnode (Node.js single executable
// application, https://nodejs.org/api/single-executable-applications.html).
//
// 1. esbuild bundles bin/imnode.ts and every dependency into one CommonJS file
//    (Node 24 SEAs run CommonJS only). Dynamic imports become lazy module
//    initialisers, so libp2p is still evaluated only when a pool is started.
// 2. classic-level's native LevelDB addon goes into the executable as an asset;
//    scripts/sea-addon.ts extracts it to a cache directory at first run.
// 3. The blob (code, V8 code cache, asset) is made by this very node binary and
//    injected into a stripped copy of it with postject: the blob must come from the
//    same Node version as the binary, and using process.execPath guarantees that.
//
// Usage: node scripts/build.ts [--no-strip] [--no-minify] [--out FILE]
import { build, type Plugin } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(import.meta.dirname, '..');
/** Fixed by Node: the fuse string a SEA-capable binary carries (see the SEA docs). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const ADDON_ASSET = 'classic-level.node';

/** Intermediate files of this build, removed whatever happens. */
const scratch = new Set<string>();
process.on('exit', () => {
  for (const f of scratch) rmSync(f, { force: true });
});

function fail(msg: string): never {
  process.stderr.write(`build: ${msg}\n`);
  process.exit(1);
}

function mb(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

/** The addon node-gyp-build would load on this machine: a local build first, then the prebuild. */
function classicLevelAddon(): string {
  const dir = path.dirname(createRequire(import.meta.url).resolve('classic-level/package.json'));
  const built = path.join(dir, 'build', 'Release', 'classic-level.node');
  if (existsSync(built)) return built;
  if (process.platform !== 'linux') fail(`only Linux executables are built here (this is ${process.platform})`);
  const prebuilt = path.join(dir, 'prebuilds', `linux-${process.arch}`, 'classic-level.node');
  if (!existsSync(prebuilt)) fail(`no classic-level addon for linux-${process.arch} in ${dir}`);
  return prebuilt;
}

function plugins(addon: string, version: string): Plugin[] {
  const loader = path.join(ROOT, 'scripts', 'sea-addon.ts');
  return [{
    name: 'imnode-sea',
    setup(b) {
      // node-gyp-build searches the file system next to the module; there is none in a SEA.
      b.onLoad({ filter: /[\\/]classic-level[\\/]binding\.js$/ }, () => ({
        contents: `module.exports = require(${JSON.stringify(loader)}).loadAddon(${JSON.stringify(ADDON_ASSET)}, ${JSON.stringify(addon)});`,
        loader: 'js',
        resolveDir: ROOT,
      }));
      // version.ts reads package.json next to the sources, which the executable does not carry.
      b.onLoad({ filter: /[\\/]src[\\/]admin[\\/]version\.ts$/ }, () => ({
        contents: `export const VERSION: string = ${JSON.stringify(version)};`,
        loader: 'ts',
      }));
    },
  }];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { strip: { type: 'boolean', default: true }, 'no-strip': { type: 'boolean' }, minify: { type: 'boolean', default: true }, 'no-minify': { type: 'boolean' }, out: { type: 'string' } },
  });
  const strip = values.strip && !values['no-strip'];
  const minify = values.minify && !values['no-minify'];
  const out = path.resolve(values.out ?? path.join(ROOT, 'dist', 'imnode'));
  const dist = path.dirname(out);
  mkdirSync(dist, { recursive: true });
  const t0 = performance.now();
  const version = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const addon = classicLevelAddon();

  // The bundle stays next to the executable (for `node dist/imnode.cjs` and for
  // reading); the other intermediates carry the PID, so that two builds at once
  // (parallel test runs) never mix their files.
  const bundle = `${out}.cjs`;
  const bundleTmp = `${out}.${process.pid}.cjs`;
  const blob = `${out}.${process.pid}.blob`;
  const seaConfig = `${out}.${process.pid}.sea.json`;
  const tmp = `${out}.${process.pid}.tmp`;
  for (const f of [bundleTmp, blob, seaConfig, tmp]) scratch.add(f);
  const result = await build({
    entryPoints: [path.join(ROOT, 'bin', 'imnode.ts')],
    outfile: bundleTmp,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    minify,
    // Class and function names stay readable in stack traces and error names.
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
    plugins: plugins(addon, version),
  });
  // A warning here (an import.meta left empty, an unresolved require) is a bug in the executable.
  if (result.warnings.length) fail(`esbuild: ${result.warnings.length} warning(s), see above`);
  const t1 = performance.now();

  writeFileSync(seaConfig, JSON.stringify({
    main: bundleTmp,
    output: blob,
    disableExperimentalSEAWarning: true,
    // Compiled code in the blob: start-up skips parsing most of the bundle.
    useCodeCache: true,
    assets: { [ADDON_ASSET]: addon },
  }, null, 2));
  const gen = spawnSync(process.execPath, ['--experimental-sea-config', seaConfig], { encoding: 'utf8' });
  if (gen.status !== 0) fail(`node --experimental-sea-config failed (${gen.status}): ${gen.stderr || gen.stdout}`);

  copyFileSync(process.execPath, tmp);
  chmodSync(tmp, 0o755);
  if (strip) {
    // Debug symbols are most of node's size and play no part at run time.
    const s = spawnSync('strip', ['--strip-all', tmp], { encoding: 'utf8' });
    if (s.error || s.status !== 0) process.stderr.write(`build: strip unavailable or failed, keeping symbols (${s.error?.message ?? s.stderr.trim()})\n`);
  }
  // The CLI in a child process: its ELF library prints a harmless "Can't find string
  // offset for section name '.note...'" warning per note section, hidden below.
  const cli = path.join(path.dirname(createRequire(import.meta.url).resolve('postject')), 'cli.js');
  const inj = spawnSync(process.execPath, [cli, tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { encoding: 'utf8' });
  const noise = /^warning: Can't find string offset for section name '\.note[.\d]*'$/;
  const said = `${inj.stdout}${inj.stderr}`.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => l.trim() && !noise.test(l.trim()) && !/^(Start injection|Injection done|💉)/.test(l.trim()));
  if (inj.status !== 0) fail(`postject failed (${inj.status}): ${said.join('\n')}`);
  if (said.length) process.stderr.write(said.join('\n') + '\n');
  renameSync(tmp, out);
  renameSync(bundleTmp, bundle);
  const t2 = performance.now();

  // The executable must run with nothing around it: no node, no node_modules, no environment.
  const check = spawnSync('env', ['-i', out, '--version'], { encoding: 'utf8', cwd: '/' });
  if (check.status !== 0 || check.stdout.trim() !== `imnode ${version}`) {
    fail(`the built ${out} does not run: exit ${check.status}, ${check.stdout}${check.stderr}`);
  }
  process.stdout.write(`built ${path.relative(process.cwd(), out) || out}: ${mb(statSync(out).size)} (bundle ${mb(statSync(bundle).size)}, node ${process.version}${strip ? ', stripped' : ''}); ` +
    `bundle ${Math.round(t1 - t0)} ms, executable ${Math.round(t2 - t1)} ms\n`);
}

await main();
