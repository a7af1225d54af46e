import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import '../../src/admin/core-options.ts';
import { checkPoolConfig, declarePoolOptions, poolOptionsFromConfig, POOL_PORT_DEFAULT } from '../../src/pool/options.ts';
import {
  ConfigError, allOptions, declareOptions, envName, getBool, getList, getNumber, getString,
  loadConfig, optionsHelp, optionsMarkdown, parseDuration,
} from '../../src/admin/options.ts';

let dir: string;
test.before(async () => { dir = await mkdtemp(join(tmpdir(), 'imnode-config-')); });
test.after(async () => { await rm(dir, { recursive: true, force: true }); });

async function file(name: string, content: unknown): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}

/** Asserts loadConfig rejects with a ConfigError whose message matches. */
async function refuses(argv: string[], env: NodeJS.ProcessEnv, re: RegExp): Promise<ConfigError> {
  try {
    await loadConfig(argv, env);
  } catch (e) {
    assert.instance(e, ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.match((e as Error).message, re);
    assert.not.match((e as Error).message, /\n/, 'one line');
    return e as ConfigError;
  }
  assert.unreachable(`accepted ${argv.join(' ')}`);
  throw new Error('unreachable');
}

test('defaults', async () => {
  const { config, positionals } = await loadConfig([], {});
  assert.is(config.domain, 'imnode.local');
  assert.is(config['c2s-port'], 5222);
  assert.is(config['c2s-tls-port'], 5223);
  assert.is(config['direct-tls'], true);
  assert.is(config['allow-registration'], false);
  assert.is(config['log-level'], 'info');
  assert.is(config['max-stanza-size'], 262144);
  assert.is(config['sm-resume-timeout'], 300_000);
  assert.is(config['auth-fail-delay'], 1000);
  assert.is(config['data-dir'], resolve('imnode-data'));
  assert.equal(config.peer, []);
  assert.is(config.cert, undefined);
  assert.equal(positionals, []);
});

test('precedence: flag > environment > config file > default', async () => {
  const conf = await file('prec.json', { domain: 'file.example', 'c2s-port': 1111, 'c2s-tls-port': 2222, 'log-level': 'warn' });
  const env = { IMNODE_CONFIG: conf, IMNODE_DOMAIN: 'env.example', IMNODE_C2S_PORT: '3333' };
  const { config } = await loadConfig(['--domain', 'flag.example'], env);
  assert.is(config.domain, 'flag.example');
  assert.is(config['c2s-port'], 3333);
  assert.is(config['c2s-tls-port'], 2222);
  assert.is(config['log-level'], 'warn');
  assert.is(config['max-stanza-size'], 262144);
  // --config beats IMNODE_CONFIG
  const other = await file('other.json', { 'c2s-tls-port': 4444 });
  const r = await loadConfig(['--config', other], env);
  assert.is(r.config['c2s-tls-port'], 4444);
});

test('flag forms: --name value, --name=value, booleans, positionals, --', async () => {
  const { config, positionals } = await loadConfig(
    ['user', '--c2s-port=6000', 'add', '--no-direct-tls', '--allow-registration', '--', '--domain', 'x'], {});
  assert.is(config['c2s-port'], 6000);
  assert.is(config['direct-tls'], false);
  assert.is(config['allow-registration'], true);
  assert.is(config.domain, 'imnode.local');
  assert.equal(positionals, ['user', 'add', '--domain', 'x']);
  assert.is((await loadConfig(['--direct-tls=false'], {})).config['direct-tls'], false);
  assert.is((await loadConfig(['--direct-tls=no'], {})).config['direct-tls'], false);
  assert.is((await loadConfig([], { IMNODE_DIRECT_TLS: 'false' })).config['direct-tls'], false);
  assert.is((await loadConfig(['--direct-tls'], { IMNODE_DIRECT_TLS: 'false' })).config['direct-tls'], true);
  // the last of a repeated single-valued flag wins
  assert.is((await loadConfig(['--domain', 'a.example', '--domain', 'b.example'], {})).config.domain, 'b.example');
});

test('an empty environment variable counts as unset', async () => {
  const { config } = await loadConfig([], { IMNODE_DOMAIN: '', IMNODE_C2S_PORT: ' ' });
  assert.is(config.domain, 'imnode.local');
  assert.is(config['c2s-port'], 5222);
});

test('paths: relative to the working directory, or to the config file', async () => {
  const conf = await file('paths.json', { 'data-dir': 'data', cert: '/etc/ssl/x.pem' });
  const { config } = await loadConfig(['--config', conf, '--key', 'k.pem'], {});
  assert.is(config['data-dir'], join(dir, 'data'));
  assert.is(config.cert, '/etc/ssl/x.pem');
  assert.is(config.key, resolve('k.pem'));
});

test('unknown flags are refused, with a suggestion', async () => {
  const e = await refuses(['--port-typo', '5'], {}, /^--port-typo: unknown option/);
  assert.is(e.option, 'port-typo');
  await refuses(['--c2s-prot', '5'], {}, /did you mean --c2s-port\?/);
  await refuses(['-x'], {}, /^-x: unknown option/);
  await refuses(['--no-domain'], {}, /^--no-domain: unknown option/);
});

test('missing values are refused', async () => {
  await refuses(['--domain'], {}, /^--domain: missing value$/);
  await refuses(['--c2s-port', '--domain', 'a'], {}, /^--c2s-port: missing value$/);
  await refuses(['--domain='], {}, /^--domain: empty value$/);
});

test('bad types and out-of-range values name the option', async () => {
  await refuses(['--c2s-port', '70000'], {}, /^--c2s-port: 70000 is not a port \(0-65535\)$/);
  await refuses(['--c2s-port', '-5'], {}, /^--c2s-port: /);
  await refuses(['--c2s-port', 'abc'], {}, /^--c2s-port: 'abc' is not a port number$/);
  await refuses(['--c2s-tls-port', '-1'], {}, /^--c2s-tls-port: -1 is not a port \(0-65535/);
  assert.is((await loadConfig(['--c2s-tls-port', '0'], {})).config['c2s-tls-port'], 0);
  await refuses(['--max-stanza-size', '12.5'], {}, /^--max-stanza-size: '12.5' is not an integer$/);
  await refuses(['--max-stanza-size', '10'], {}, /^--max-stanza-size: 10 is below the minimum 1024$/);
  await refuses(['--log-level', 'verbose'], {}, /^--log-level: 'verbose' is not one of error, warn, info, debug$/);
  await refuses(['--direct-tls=maybe'], {}, /^--direct-tls: 'maybe' is not a boolean/);
  await refuses(['--no-direct-tls=true'], {}, /^--no-direct-tls: takes no value$/);
  await refuses(['--sm-resume-timeout', '5 minutes'], {}, /^--sm-resume-timeout: '5 minutes' is not a duration/);
  await refuses(['--auth-fail-delay', '2m'], {}, /^--auth-fail-delay: '2m' is above the maximum 60000ms$/);
  await refuses([], { IMNODE_C2S_PORT: '70000' }, /^--c2s-port \(IMNODE_C2S_PORT\): 70000 is not a port/);
  await refuses([], { IMNODE_DIRECT_TLS: 'sometimes' }, /^--direct-tls \(IMNODE_DIRECT_TLS\): /);
});

test('config file problems name the file and the key', async () => {
  const missing = join(dir, 'nope.json');
  await refuses(['--config', missing], {}, new RegExp(`^config file ${missing}: cannot read it \\(ENOENT\\)$`));
  await refuses([], { IMNODE_CONFIG: missing }, /nope\.json: cannot read it/);
  await refuses(['--config', await file('bad.json', '{"domain": ')], {}, /^config file .*bad\.json: not valid JSON/);
  await refuses(['--config', await file('array.json', [1, 2])], {}, /array\.json: must be a JSON object/);
  await refuses(['--config', await file('unknown.json', { 'c2s-prot': 5222 })], {}, /unknown\.json: key 'c2s-prot': unknown option; did you mean --c2s-port\?/);
  await refuses(['--config', await file('type.json', { 'c2s-port': 'abc' })], {}, /^--c2s-port \(in .*type\.json\): 'abc' is not a port number$/);
  await refuses(['--config', await file('bool.json', { 'direct-tls': 3 })], {}, /^--direct-tls \(in .*bool\.json\): 3 is not a boolean/);
  await refuses(['--config', await file('nested.json', { config: 'x.json' })], {}, /key 'config' is not allowed in a config file/);
  await refuses(['--config', await file('help.json', { help: true })], {}, /key 'help' is not allowed/);
});

test('list options: repeated flags, commas, arrays; flags replace the environment', async () => {
  declareOptions([{ name: 'test-list', type: 'list', description: 'a test list', group: 'Test' }]);
  assert.equal((await loadConfig(['--test-list', 'a', '--test-list=b,c'], {})).config['test-list'], ['a', 'b', 'c']);
  assert.equal((await loadConfig([], { IMNODE_TEST_LIST: 'x, y,,z' })).config['test-list'], ['x', 'y', 'z']);
  assert.equal((await loadConfig(['--test-list', 'f'], { IMNODE_TEST_LIST: 'x,y' })).config['test-list'], ['f']);
  const conf = await file('list.json', { 'test-list': ['p', 'q'] });
  assert.equal((await loadConfig(['--config', conf], {})).config['test-list'], ['p', 'q']);
  await refuses(['--config', await file('badlist.json', { 'test-list': [1] })], {}, /^--test-list \(in .*\): 1 is not a string$/);
  assert.equal((await loadConfig([], {})).config['test-list'], []);
});

test('secret values are not quoted in errors', async () => {
  declareOptions([{ name: 'test-secret-port', type: 'port', secret: true, description: 'a secret', group: 'Test' }]);
  const e = await refuses(['--test-secret-port', 'hunter2'], {}, /^--test-secret-port: not a valid port \(value not shown\)$/);
  assert.not.match(e.message, /hunter2/);
});

test('durations', async () => {
  assert.is(parseDuration('30s'), 30_000);
  assert.is(parseDuration('5m'), 300_000);
  assert.is(parseDuration('250ms'), 250);
  assert.is(parseDuration('1h'), 3_600_000);
  assert.is(parseDuration('1.5s'), 1500);
  assert.is(parseDuration('30'), 30_000);
  assert.is(parseDuration(2), 2000);
  assert.is(parseDuration('-1s'), undefined);
  assert.is(parseDuration('5 minutes'), undefined);
  assert.is(parseDuration(''), undefined);
  assert.is((await loadConfig(['--sm-resume-timeout', '90'], {})).config['sm-resume-timeout'], 90_000);
  assert.is((await loadConfig([], { IMNODE_SM_RESUME_TIMEOUT: '2m' })).config['sm-resume-timeout'], 120_000);
  const conf = await file('dur.json', { 'auth-fail-delay': 0.5, 'sm-resume-timeout': '10m' });
  const { config } = await loadConfig(['--config', conf], {});
  assert.is(config['auth-fail-delay'], 500);
  assert.is(config['sm-resume-timeout'], 600_000);
});

test('pool options: defaults, flags, environment, config file', async () => {
  const d = (await loadConfig([], {})).config;
  assert.is(d.autodiscover, false);
  assert.is(d['pool-port'], 7400);
  assert.is(d['failure-timeout'], 3000);
  assert.equal(d['pool-listen'], []);
  assert.is(d['server-id'], undefined);
  assert.is(d['pool-password'], undefined);
  const { config } = await loadConfig(['--autodiscover', '--pool-port', '7401', '--server-id', 'n1', '--peer', '/ip4/10.0.0.2/tcp/7400',
    '--peer', '/ip4/10.0.0.3/tcp/7400', '--pool-listen', '/ip4/10.0.0.1/tcp/7400', '--failure-timeout', '1500ms'], { IMNODE_POOL_PASSWORD: 'env secret' });
  assert.is(config.autodiscover, true);
  assert.is(config['pool-port'], 7401);
  assert.is(config['server-id'], 'n1');
  assert.equal(config.peer, ['/ip4/10.0.0.2/tcp/7400', '/ip4/10.0.0.3/tcp/7400']);
  assert.equal(config['pool-listen'], ['/ip4/10.0.0.1/tcp/7400']);
  assert.is(config['failure-timeout'], 1500);
  assert.is(config['pool-password'], 'env secret');
  assert.is((await loadConfig(['--pool-port', '0'], {})).config['pool-port'], 0, '0: a free port');
  const conf = await file('pool.json', { autodiscover: true, peer: ['/ip4/10.0.0.9/tcp/7400'] });
  const f = (await loadConfig(['--config', conf], {})).config;
  assert.is(f.autodiscover, true);
  assert.equal(f.peer, ['/ip4/10.0.0.9/tcp/7400']);
  await refuses(['--failure-timeout', '100ms'], {}, /^--failure-timeout: '100ms' is below the minimum 500ms$/);
});

/** Asserts checkPoolConfig rejects with a one-line ConfigError naming the option. */
async function poolRefuses(argv: string[], re: RegExp, option: string): Promise<void> {
  const { config } = await loadConfig(argv, {});
  try {
    await checkPoolConfig(config);
  } catch (e) {
    assert.instance(e, ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.match((e as Error).message, re);
    assert.not.match((e as Error).message, /\n/, 'one line');
    assert.is((e as ConfigError).option, option);
    return;
  }
  assert.unreachable(`accepted ${argv.join(' ')}`);
}

test('pool values are checked as the pool will use them', async () => {
  await poolRefuses(['--peer', '10.0.0.2:7400'], /^--peer 10\.0\.0\.2:7400: not a multiaddr/, 'peer');
  await poolRefuses(['--peer', '/ip4/300.0.0.2/tcp/7400'], /^--peer \/ip4\/300\.0\.0\.2\/tcp\/7400: not a multiaddr \(Invalid IPv4/, 'peer');
  await poolRefuses(['--peer', '/ip4/10.0.0.2'], /needs a TCP port/, 'peer');
  await poolRefuses(['--peer', '/ip4/10.0.0.2/tcp/7400/p2p/nonsense'], /'nonsense' is not a peer id/, 'peer');
  await poolRefuses(['--peer', '/ip4/10.0.0.2/tcp/7400/ws'], /unexpected \/ws/, 'peer');
  await poolRefuses(['--pool-listen', '/dns4/example.org/tcp/7400'], /^--pool-listen \/dns4\/example\.org\/tcp\/7400: must start with \/ip4, \/ip6/, 'pool-listen');
  await poolRefuses(['--pool-listen', '/ip4/0.0.0.0/udp/7400'], /needs a TCP port/, 'pool-listen');
  await poolRefuses(['--server-id', 'node one'], /^--server-id: 'node one' is not valid/, 'server-id');
  await poolRefuses(['--server-id', '-n1'], /is not valid/, 'server-id');
  await poolRefuses(['--server-id', 'n'.repeat(65)], /is not valid/, 'server-id');
  const pw = await file('pool-pw', 'file secret\nignored\n');
  await poolRefuses(['--pool-password', 'hunter2', '--pool-password-file', pw], /^--pool-password and --pool-password-file: give one of them, not both$/, 'pool-password-file');
  await poolRefuses(['--pool-password-file', join(dir, 'missing-pw')], /^--pool-password-file .*missing-pw: cannot read it \(ENOENT\)$/, 'pool-password-file');
  await poolRefuses(['--pool-password-file', await file('empty-pw', '\nsecond')], /the first line is empty/, 'pool-password-file');
  // good values pass, in every accepted form
  const ok = await loadConfig(['--server-id', 'node-1.east_2', '--peer', '/ip4/10.0.0.2/tcp/7400', '--peer', '/ip6/fe80::1/tcp/7400',
    '--peer', '/dns4/n3.example.org/tcp/7400/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf', '--peer', '/dnsaddr/pool.example.org',
    '--pool-listen', '/ip4/0.0.0.0/tcp/0', '--pool-password-file', pw], {});
  await checkPoolConfig(ok.config);
});

test('poolOptionsFromConfig: what the pool gets', async () => {
  const pw = await file('pool-pw2', 'from the file\r\n');
  const log = { error() {}, warn() {}, info() {}, debug() {}, child() { return log; } };
  const { config } = await loadConfig(['--domain', 'example.org', '--data-dir', dir, '--server-id', 'n2', '--peer', '/ip4/10.0.0.2/tcp/7400/',
    '--autodiscover', '--pool-password-file', pw, '--failure-timeout', '2s'], {});
  const o = await poolOptionsFromConfig(config, log);
  assert.is(o.domain, 'example.org');
  assert.is(o.dataDir, dir);
  assert.is(o.serverId, 'n2');
  assert.is(o.password, 'from the file');
  assert.equal(o.peers, ['/ip4/10.0.0.2/tcp/7400'], 'canonical form');
  assert.equal(o.listen, []);
  assert.is(o.port, 7400);
  assert.is(o.autodiscover, true);
  assert.is(o.failureTimeoutMs, 2000);
  assert.is((await poolOptionsFromConfig((await loadConfig(['--pool-password', 'inline'], {})).config, log)).password, 'inline');
  assert.is((await poolOptionsFromConfig((await loadConfig([], {})).config, log)).password, undefined);
});

test('the pool options agree with the pool', async () => {
  // Imported here only: options.ts must not load libp2p.
  const { DEFAULT_POOL_PORT, Libp2pPool } = await import('../../src/pool/libp2p-pool.ts');
  assert.is(POOL_PORT_DEFAULT, DEFAULT_POOL_PORT);
  const log = { error() {}, warn() {}, info() {}, debug() {}, child() { return log; } };
  for (const id of ['n1', 'node-1.east_2', 'A', '9', '-n1', '.n', 'node one', 'n/1', 'é', 'n'.repeat(64), 'n'.repeat(65)]) {
    let poolAccepts = true;
    try { new Libp2pPool({ dataDir: dir, domain: 'example.org', serverId: id, log }); } catch { poolAccepts = false; }
    let optionAccepts = true;
    try { await checkPoolConfig((await loadConfig(['--server-id', id], {})).config); } catch { optionAccepts = false; }
    assert.is(optionAccepts, poolAccepts, `server id '${id}'`);
  }
  // declared once (by core-options.ts); asking again declares nothing twice
  declarePoolOptions();
  assert.is(allOptions().filter((o) => o.name === 'peer').length, 1);
});

test('typed accessors', async () => {
  const { config } = await loadConfig([], {});
  assert.is(getString(config, 'domain'), 'imnode.local');
  assert.is(getNumber(config, 'c2s-port'), 5222);
  assert.is(getBool(config, 'direct-tls'), true);
  assert.equal(getList(config, 'peer'), []);
  assert.throws(() => getNumber(config, 'domain'), /not a number/);
  assert.throws(() => getString(config, 'cert'), /not set/);
});

test('declarations: duplicates and bad defaults are programming errors', () => {
  assert.throws(() => declareOptions([{ name: 'domain', type: 'string', description: 'again' }]), /declared twice/);
  assert.throws(() => declareOptions([{ name: 'BadName', type: 'string', description: '' }]), /kebab-case/);
  assert.throws(() => declareOptions([{ name: 'bad-default', type: 'port', default: 99999, description: '' }]), /not a port/);
  assert.not.ok(allOptions().some((o) => o.name === 'bad-default'));
});

test('generated documentation lists every option', () => {
  const md = optionsMarkdown();
  const help = optionsHelp();
  for (const spec of allOptions()) {
    assert.ok(md.includes(`--${spec.name}`), `markdown lists --${spec.name}`);
    assert.ok(help.includes(`--${spec.name}`), `help lists --${spec.name}`);
    if (spec.env !== false) assert.ok(md.includes(envName(spec.name)), `markdown lists ${envName(spec.name)}`);
  }
  assert.match(md, /\| `--c2s-port PORT` \| `IMNODE_C2S_PORT` \| `"c2s-port"` \| `5222` \| /);
  assert.match(md, /### Pool\n/);
  assert.match(md, /\| `--pool-password SECRET` \| `IMNODE_POOL_PASSWORD` \| `"pool-password"` \|  \| .*visible to every local user in `ps`/);
  assert.match(help, /--direct-tls, --no-direct-tls/);
});

test.run();
