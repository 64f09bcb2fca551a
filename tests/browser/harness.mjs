// Shared helpers for the browser tests: free ports, the pipemesh server process,
// a static file server for dist/, headless Chromium (playwright-core driving
// Debian's /usr/bin/chromium), and page helpers that poll window.pm.
import { spawn, execFile } from 'node:child_process';
import { existsSync, statSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer as createHttpServer } from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const DIST = join(HERE, 'dist');
export const REPO_ROOT = resolve(HERE, '..', '..');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
	'--no-sandbox',
	'--disable-gpu',
	'--disable-background-networking',
	'--disable-component-update',
	'--disable-sync',
	'--disable-quic',
	'--no-first-run',
	'--use-fake-device-for-media-stream',
	'--use-fake-ui-for-media-stream',
	// Without this Chromium never gathers/uses 127.0.0.1 ICE candidates.
	'--allow-loopback-in-peer-connection',
	'--autoplay-policy=no-user-gesture-required',
];

export function serverBinary() {
	return process.env.PIPEMESH_BIN
		? resolve(process.env.PIPEMESH_BIN)
		: join(REPO_ROOT, 'target', 'debug', 'pipemesh');
}

// ------------------------------------------------------------------ ports

function tcpPortFree(port) {
	return new Promise((res) => {
		const s = net.createServer();
		s.once('error', () => res(false));
		s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => res(true)));
	});
}

function udpPortFree(port) {
	return new Promise((res) => {
		const s = dgram.createSocket('udp4');
		s.once('error', () => { s.close(); res(false); });
		s.bind({ port, address: '127.0.0.1', exclusive: true }, () => s.close(() => res(true)));
	});
}

async function ephemeralTcpPort() {
	return new Promise((res, rej) => {
		const s = net.createServer();
		s.once('error', rej);
		s.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
			const { port } = s.address();
			s.close(() => res(port));
		});
	});
}

/**
 * Picks `count` distinct loopback ports that are free for TCP (and for UDP too
 * when `udp` is set, as the RTC port needs both). Bind port 0, close, reuse.
 */
export async function freePorts(count, { udp = false } = {}) {
	const ports = new Set();
	for (let attempt = 0; ports.size < count && attempt < 50; attempt++) {
		const p = await ephemeralTcpPort();
		if (ports.has(p)) continue;
		if (udp && !(await udpPortFree(p))) continue;
		if (!(await tcpPortFree(p))) continue;
		ports.add(p);
	}
	if (ports.size < count) throw new Error(`could not find ${count} free loopback ports`);
	return [...ports];
}

// ------------------------------------------------------------------ pipemesh server

/**
 * Starts `pipemesh serve` on free loopback ports and waits for /healthz.
 * Returns { signalingPort, rtcPort, adminPort, baseUrl, wsUrl, output(), stop() }.
 * Throws with a clear message (and the server's output) when it cannot start.
 */
export async function startPipemesh({
	webRoot = DIST, extraArgs = [], env = {}, readyTimeoutMs = 20000,
	// Ports this server must not take (e.g. pipe ports already promised to other nodes).
	avoidPorts = [],
	// Log prefix, e.g. the node id when several servers run at once.
	label = null,
} = {}) {
	const bin = serverBinary();
	if (!existsSync(bin)) {
		throw new Error(
			`pipemesh server binary not found at ${bin}. Build it first with \`cargo build\` in ${REPO_ROOT} ` +
			'(or point PIPEMESH_BIN at a binary). The browser e2e test needs a running server and does not skip.',
		);
	}
	if (!existsSync(join(webRoot, 'index.html')) || !existsSync(join(webRoot, 'app.js'))) {
		throw new Error(`web root ${webRoot} has no index.html/app.js: run \`npm run build\` in ${HERE} first`);
	}
	const avoid = new Set(avoidPorts);
	let signalingPort;
	let adminPort;
	for (;;) {
		[signalingPort, adminPort] = await freePorts(2);
		if (!avoid.has(signalingPort) && !avoid.has(adminPort)) break;
	}
	let rtcPort;
	for (;;) {
		[rtcPort] = await freePorts(1, { udp: true });
		if (rtcPort !== signalingPort && rtcPort !== adminPort && !avoid.has(rtcPort)) break;
	}
	const args = [
		'serve',
		'--signaling-listen', `127.0.0.1:${signalingPort}`,
		'--rtc-listen', `127.0.0.1:${rtcPort}`,
		'--admin-listen', `127.0.0.1:${adminPort}`,
		'--announced-address', '127.0.0.1',
		'--web-root', resolve(webRoot),
		...extraArgs,
	];
	const tag = label ? `pipemesh ${label}` : 'pipemesh';
	const proc = spawnKept(bin, args, {
		stdoutPrefix: `[${tag} stdout] `,
		stderrPrefix: `[${tag}] `,
		keepLines: 4000,
		spawnOptions: { cwd: REPO_ROOT, env: { ...process.env, PIPEMESH_LOG: process.env.PIPEMESH_LOG || 'info', ...env } },
	});
	const { output, cmdline } = proc;
	const stop = async () => {
		proc.release();
		if (proc.exited()) return proc.exited();
		proc.child.kill('SIGTERM');
		const r = await Promise.race([proc.exitPromise, delay(5000).then(() => null)]);
		if (r) return r;
		proc.child.kill('SIGKILL');
		return proc.exitPromise;
	};
	const healthUrl = `http://127.0.0.1:${adminPort}/healthz`;

	const probe = await probeHttp(healthUrl, { timeoutMs: readyTimeoutMs, exited: proc.exited });
	if (probe.ok) {
		return {
			signalingPort, rtcPort, adminPort, child: proc.child, cmdline, label,
			baseUrl: `http://127.0.0.1:${signalingPort}`,
			wsUrl: `ws://127.0.0.1:${signalingPort}`,
			healthUrl,
			metricsUrl: `http://127.0.0.1:${adminPort}/metrics`,
			exited: proc.exited,
			output,
			stop,
		};
	}
	await stop();
	throw notReadyError('pipemesh', proc, probe, {
		becoming: 'ready', answer: `answer 200 on ${healthUrl}`, timeoutMs: readyTimeoutMs,
	});
}

// ------------------------------------------------------------------ child processes and polling

/**
 * Spawns `bin` with stdout and stderr kept as prefixed lines (the last `keepLines`). A backstop
 * SIGKILLs it, then runs `onBackstop`, if the test process exits or is interrupted first:
 * nothing a test starts may outlive it. Returns { child, cmdline, exitPromise, exited(),
 * spawnError(), output(), release() }; exited() is null while it runs, then { code, signal };
 * release() removes the backstop (call it from stop()).
 */
function spawnKept(bin, args, { stdoutPrefix, stderrPrefix, keepLines, spawnOptions = {}, onBackstop = () => {} }) {
	const lines = [];
	const keep = (prefix) => (chunk) => {
		for (const l of String(chunk).split('\n')) if (l) lines.push(`${prefix}${l}`);
		if (lines.length > keepLines) lines.splice(0, lines.length - keepLines);
	};
	const child = spawn(bin, args, { ...spawnOptions, stdio: ['ignore', 'pipe', 'pipe'] });
	child.stdout.on('data', keep(stdoutPrefix));
	child.stderr.on('data', keep(stderrPrefix));
	let exited = null;
	let spawnError = null;
	const exitPromise = new Promise((res) => {
		child.once('exit', (code, signal) => { exited = { code, signal }; res(exited); });
		child.once('error', (e) => { spawnError = e; exited = exited || { code: null, signal: null }; res(exited); });
	});
	const onExit = () => {
		if (!exited) try { child.kill('SIGKILL'); } catch { /* gone */ }
		onBackstop();
	};
	const onSignal = (sig) => { onExit(); process.exit(sig === 'SIGINT' ? 130 : 143); };
	process.once('exit', onExit);
	process.once('SIGINT', onSignal);
	process.once('SIGTERM', onSignal);
	return {
		child,
		cmdline: `${bin} ${args.join(' ')}`,
		exitPromise,
		exited: () => exited,
		spawnError: () => spawnError,
		output: () => lines.join('\n'),
		release: () => {
			process.removeListener('exit', onExit);
			process.removeListener('SIGINT', onSignal);
			process.removeListener('SIGTERM', onSignal);
		},
	};
}

/**
 * The error for a spawnKept() process whose readiness probe failed: it exited first
 * (probe.gone; hint(spawnError) may add advice) or never gave the answer it waits for.
 */
function notReadyError(name, proc, probe, { becoming, answer, timeoutMs, hint = () => '' }) {
	const context = `command: ${proc.cmdline}\n--- ${name} output ---\n${proc.output() || '(none)'}`;
	if (probe.gone) {
		const e = proc.spawnError();
		return new Error(`${name} exited before becoming ${becoming} (code ${probe.gone.code}, signal ${probe.gone.signal}` +
			`${e ? `, spawn error: ${e.message}${hint(e)}` : ''}).\n${context}`);
	}
	return new Error(`${name} did not ${answer} within ${timeoutMs} ms (last: ${probe.last}).\n${context}`);
}

/** A failed fetch() in a few words: the socket error code when there is one. */
function fetchProblem(e) {
	return e.cause ? `${e.cause.code || e.cause.message}` : e.message;
}

/**
 * Runs attempt() every `intervalMs` for at most `timeoutMs` until it returns { ok: true, value }.
 * Any other answer is a miss: { miss } says what was seen instead, and a throw is described by
 * describeError(e). Stops early once exited() (checked before each attempt) reports the process
 * gone. Returns { ok: true, value }, { gone, last } or, on timeout, { last }: last is the last miss.
 */
async function pollUntil(attempt, {
	timeoutMs, intervalMs = 200, exited = null, describeError = fetchProblem, first = 'no answer yet',
}) {
	const deadline = Date.now() + timeoutMs;
	let last = first;
	while (Date.now() < deadline) {
		const gone = exited && exited();
		if (gone) return { gone, last };
		try {
			const r = await attempt();
			if (r.ok) return r;
			last = r.miss;
		} catch (e) {
			last = describeError(e);
		}
		await delay(intervalMs);
	}
	return { last };
}

/** pollUntil() for a GET of `url` that answers `accept(status, body)` (by default: HTTP 200). */
function probeHttp(url, { accept = (status) => status === 200, ...options }) {
	return pollUntil(async () => {
		const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
		const body = await r.text();
		return accept(r.status, body) ? { ok: true } : { miss: `HTTP ${r.status} ${body.trim().slice(0, 200)}` };
	}, options);
}

// ------------------------------------------------------------------ metrics

/** Fetches a server's admin /metrics text. */
export async function fetchMetrics(server) {
	const r = await fetch(server.metricsUrl || `http://127.0.0.1:${server.adminPort}/metrics`, { signal: AbortSignal.timeout(2000) });
	if (r.status !== 200) throw new Error(`GET /metrics on ${server.label || 'pipemesh'}: HTTP ${r.status}`);
	return r.text();
}

/**
 * Parses Prometheus text into [{ name, labels: {k: v}, value }] (comments and
 * unparsable lines are skipped).
 */
export function parseMetrics(text) {
	const out = [];
	for (const line of String(text).split('\n')) {
		const m = line.match(/^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
		if (!m) continue;
		const labels = {};
		for (const l of (m[2] || '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
		out.push({ name: m[1], labels, value: Number(m[3]) });
	}
	return out;
}

/** The value of metric `name` whose labels include `labels`, or null when absent. */
export function metricValue(text, name, labels = {}) {
	const hit = parseMetrics(text).find((s) => s.name === name
		&& Object.entries(labels).every(([k, v]) => s.labels[k] === v));
	return hit ? hit.value : null;
}

/**
 * Polls a server's /metrics every 250 ms until predicate(value of `name`{labels}) holds
 * (value is null while the series is absent) and returns that value. Fails fast when the
 * server exits.
 */
export async function waitForMetric(server, name, labels, predicate, { timeoutMs = 20000, what } = {}) {
	const value = (text) => metricValue(text, name, labels);
	const text = await waitOnServer(server, () => fetchMetrics(server), (t) => predicate(value(t)), {
		timeoutMs,
		intervalMs: 250,
		what: what || `${name}${JSON.stringify(labels)}`,
		show: (t) => `value ${value(t)}; /metrics:\n${t}`,
	});
	return value(text);
}

/**
 * Polls read() (a fetch from `server`) every `intervalMs` until predicate(answer) holds and
 * returns that answer. Fails fast when the server exits; a timeout's error shows the last
 * answer (as show(answer) renders it) or the last fetch error.
 */
async function waitOnServer(server, read, predicate, { timeoutMs, intervalMs, what, show }) {
	const name = server.label || 'pipemesh';
	const r = await pollUntil(async () => {
		const answer = await read();
		return predicate(answer) ? { ok: true, value: answer } : { miss: show(answer) };
	}, {
		timeoutMs, intervalMs, exited: server.exited, first: '(none yet)',
		describeError: (e) => `(fetch failed: ${e.message})`,
	});
	if (r.ok) return r.value;
	if (r.gone) throw new Error(`${name} exited (code ${r.gone.code}, signal ${r.gone.signal}) while waiting for ${what}`);
	throw new Error(`${name}: timed out after ${timeoutMs} ms waiting for ${what}; last answer: ${r.last}`);
}

// ------------------------------------------------------------------ clusters (pipes)

function run(cmd, args) {
	return new Promise((res, rej) => {
		execFile(cmd, args, { cwd: REPO_ROOT, timeout: 30000 }, (err, stdout, stderr) => {
			if (err) rej(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`));
			else res({ stdout, stderr });
		});
	});
}

/**
 * `pipemesh certs`: a new cluster CA plus one certificate per node id in a fresh
 * temporary directory. Returns { dir, ca, cert(id), key(id), remove() }.
 */
export async function makeClusterCerts(nodeIds, { cluster = 'pipemesh' } = {}) {
	const dir = mkdtempSync(join(tmpdir(), 'pipemesh-certs-'));
	try {
		await run(serverBinary(), ['certs', '--out', dir, '--cluster', cluster, ...nodeIds]);
	} catch (e) {
		rmSync(dir, { recursive: true, force: true });
		throw e;
	}
	return {
		dir,
		ca: join(dir, 'ca.pem'),
		cert: (id) => join(dir, `${id}.pem`),
		key: (id) => join(dir, `${id}.key`),
		remove: () => rmSync(dir, { recursive: true, force: true }),
	};
}

/**
 * Starts one `pipemesh serve` per node id on loopback, each with a QUIC pipe listener
 * and every other node as a static peer. `secure` (default) issues a cluster CA and
 * node certificates with `pipemesh certs`; otherwise `--insecure-pipes`.
 * Returns { nodes: {id: server}, ids, certs, output(), stop() }. When any node fails to
 * start, the ones already running are stopped before the error is rethrown.
 * Does not wait for the links: see waitForPipeLinks().
 */
export async function startPipeCluster(nodeIds, {
	secure = true, cluster = 'pipemesh', graceSecs = null, extraArgs = [], env = {},
} = {}) {
	const certs = secure ? await makeClusterCerts(nodeIds, { cluster }) : null;
	const handle = await startNodes(nodeIds, {
		cluster,
		env,
		nodeArgs: (id, pipePort) => [
			...nodeIds.filter((o) => o !== id).flatMap((o) => ['--static-peer', `${o}=127.0.0.1:${pipePort[o]}`]),
			...(certs
				? ['--cluster-ca', certs.ca, '--node-cert', certs.cert(id), '--node-key', certs.key(id)]
				: ['--insecure-pipes']),
			...(graceSecs !== null ? ['--pipe-grace-secs', String(graceSecs)] : []),
			...extraArgs,
		],
		cleanup: () => { if (certs) certs.remove(); },
	});
	return { ...handle, certs };
}

/**
 * Starts one `pipemesh serve` per node id with `--node-id`, `--cluster`, a QUIC pipe listener
 * on its own free loopback UDP port, then nodeArgs(id, pipePort by id), and awaits
 * whenStarted(nodes). stop() stops the nodes in reverse order, then runs cleanup(); when a node
 * fails to start or whenStarted throws, stop() runs before the error is rethrown.
 * Returns { nodes: {id: server}, ids, output(), stop() }; each server also has its pipePort.
 */
async function startNodes(nodeIds, { cluster, env, nodeArgs, whenStarted = async () => {}, cleanup = () => {} }) {
	const nodes = {};
	const stop = async () => {
		const results = {};
		for (const [id, n] of Object.entries(nodes).reverse()) results[id] = await n.stop();
		cleanup();
		return results;
	};
	try {
		const pipePorts = await freePorts(nodeIds.length, { udp: true });
		const pipePort = Object.fromEntries(nodeIds.map((id, i) => [id, pipePorts[i]]));
		for (const id of nodeIds) {
			const args = [
				'--node-id', id,
				'--cluster', cluster,
				'--pipe-listen', `127.0.0.1:${pipePort[id]}`,
				...nodeArgs(id, pipePort),
			];
			nodes[id] = await startPipemesh({ label: id, avoidPorts: pipePorts, extraArgs: args, env });
			nodes[id].pipePort = pipePort[id];
		}
		await whenStarted(nodes);
	} catch (e) {
		await stop().catch(() => {});
		throw e;
	}
	return {
		nodes,
		ids: [...nodeIds],
		output: () => Object.values(nodes).map((n) => n.output()).join('\n'),
		stop,
	};
}

/** Waits until every node reports pipemesh_pipe_link_up{peer=other} 1 for every other node. */
export async function waitForPipeLinks(clusterHandle, { timeoutMs = 20000 } = {}) {
	const deadline = Date.now() + timeoutMs;
	for (const id of clusterHandle.ids) {
		for (const other of clusterHandle.ids) {
			if (other === id) continue;
			await waitForMetric(clusterHandle.nodes[id], 'pipemesh_pipe_link_up', { peer: other }, (v) => v === 1, {
				timeoutMs: Math.max(1000, deadline - Date.now()),
				what: `pipe link ${id} -> ${other} up (pipemesh_pipe_link_up{peer="${other}"} 1)`,
			});
		}
	}
}

// ------------------------------------------------------------------ static server (page tests)

const MIME = {
	'.html': 'text/html; charset=utf-8',
	'.js': 'text/javascript; charset=utf-8',
	'.map': 'application/json',
	'.json': 'application/json',
};

/** Serves `root` on a free loopback port: `/` (any query) -> index.html, else the file. */
export async function startStaticServer(root = DIST) {
	const absRoot = resolve(root);
	const server = createHttpServer((req, res) => {
		const url = new URL(req.url, 'http://x');
		let rel = decodeURIComponent(url.pathname);
		if (rel === '/' || rel === '') rel = '/index.html';
		const file = normalize(join(absRoot, rel));
		if (!file.startsWith(absRoot + sep) || !existsSync(file) || !statSync(file).isFile()) {
			res.writeHead(404, { 'content-type': 'text/plain' });
			res.end('not found');
			return;
		}
		res.writeHead(200, { 'content-type': MIME[extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
		res.end(readFileSync(file));
	});
	await new Promise((res, rej) => { server.once('error', rej); server.listen(0, '127.0.0.1', res); });
	const { port } = server.address();
	return {
		port,
		server,
		baseUrl: `http://127.0.0.1:${port}`,
		close: () => new Promise((res) => { server.closeAllConnections?.(); server.close(() => res()); }),
	};
}

// ------------------------------------------------------------------ browser

export async function launchBrowser() {
	if (!existsSync(CHROMIUM)) {
		throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (or set CHROMIUM_BIN)`);
	}
	// playwright's launch() always starts Chromium with a fresh temporary user-data-dir.
	return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60000 });
}

/** Opens `url` in a new context; page console errors/warnings and crashes go to our output. */
export async function openPage(browser, url, name, { log = console.log } = {}) {
	const context = await browser.newContext();
	const page = await context.newPage();
	page.on('console', (msg) => {
		const t = msg.type();
		if (t === 'error' || t === 'warning' || process.env.PM_PAGE_LOG) log(`[page ${name} ${t}] ${msg.text()}`);
	});
	page.on('pageerror', (e) => log(`[page ${name} uncaught] ${e.message}`));
	page.on('crash', () => log(`[page ${name}] CRASHED`));
	const resp = await page.goto(url, { waitUntil: 'load', timeout: 20000 });
	if (!resp || !resp.ok()) {
		throw new Error(`loading ${url} for page ${name} gave HTTP ${resp ? resp.status() : 'no response'}`);
	}
	await page.waitForFunction(() => typeof window.pm === 'object' && window.pm !== null, null, { timeout: 10000 })
		.catch(() => { throw new Error(`page ${name}: window.pm never appeared (app.js not loaded from ${url}?)`); });
	return { page, context, name, close: () => context.close() };
}

/** Waits for window.pm.ready on a page; rejects with the page's own error list. */
export async function waitReady({ page, name }, timeoutMs = 30000) {
	const r = await page.evaluate(async (ms) => {
		const timeout = new Promise((res) => setTimeout(() => res({ ok: false, error: `not ready after ${ms} ms` }), ms));
		const done = window.pm.ready.then(() => ({ ok: true }), (e) => ({ ok: false, error: String(e && e.message || e) }));
		return Promise.race([done, timeout]);
	}, timeoutMs);
	if (!r.ok) {
		const s = await stats({ page });
		throw new Error(`page ${name}: pm.ready failed: ${r.error}\nstats: ${JSON.stringify(s, null, 1)}`);
	}
}

export function stats({ page }) {
	return page.evaluate(() => window.pm.stats());
}

/** Polls pm.stats() every `intervalMs` (500) until predicate(stats) holds or the deadline passes. */
export async function waitForStats(peer, predicate, { timeoutMs = 30000, what = 'condition', intervalMs = 500 } = {}) {
	const deadline = Date.now() + timeoutMs;
	let last;
	while (Date.now() < deadline) {
		last = await stats(peer);
		if (predicate(last)) return last;
		await delay(intervalMs);
	}
	throw new Error(`page ${peer.name}: timed out after ${timeoutMs} ms waiting for ${what}; last stats:\n${JSON.stringify(last, null, 1)}`);
}

// ------------------------------------------------------------------ etcd (discovery)

/** The etcd binary: Debian's `etcd` (package etcd-server) unless PIPEMESH_ETCD_BIN says otherwise. */
export function etcdBinary() {
	return process.env.PIPEMESH_ETCD_BIN || 'etcd';
}

/**
 * Starts a single-member etcd on free loopback client and peer ports with its own temporary
 * data directory (the flags of tests/common/etcd.rs) and waits until GET /health reports
 * {"health":"true"}. Returns { endpoint, clientPort, peerPort, dataDir, output(), exited(), stop() };
 * stop() kills etcd (SIGKILL: nothing in it outlives the test) and removes the data directory.
 */
export async function startEtcd({ readyTimeoutMs = 15000 } = {}) {
	const bin = etcdBinary();
	const [clientPort, peerPort] = await freePorts(2);
	const dataDir = mkdtempSync(join(tmpdir(), 'pipemesh-etcd-'));
	const client = `http://127.0.0.1:${clientPort}`;
	const peer = `http://127.0.0.1:${peerPort}`;
	const args = [
		'--name=pm',
		`--data-dir=${dataDir}`,
		`--listen-client-urls=${client}`,
		`--advertise-client-urls=${client}`,
		`--listen-peer-urls=${peer}`,
		`--initial-advertise-peer-urls=${peer}`,
		`--initial-cluster=pm=${peer}`,
		'--log-level=error',
	];
	const removeDir = () => rmSync(dataDir, { recursive: true, force: true });
	const proc = spawnKept(bin, args, {
		stdoutPrefix: '[etcd] ',
		stderrPrefix: '[etcd] ',
		keepLines: 1000,
		// Nor its data directory.
		onBackstop: () => { try { removeDir(); } catch { /* best effort */ } },
	});
	const { output, cmdline } = proc;
	const stop = async () => {
		proc.release();
		if (!proc.exited()) proc.child.kill('SIGKILL');
		const r = await proc.exitPromise;
		removeDir();
		return r;
	};
	const healthUrl = `${client}/health`;
	const healthOf = (body) => { try { return JSON.parse(body).health; } catch { return null; /* not JSON yet */ } };

	const probe = await probeHttp(healthUrl, {
		accept: (status, body) => status === 200 && healthOf(body) === 'true',
		timeoutMs: readyTimeoutMs,
		intervalMs: 100,
		exited: proc.exited,
	});
	if (probe.ok) {
		return {
			endpoint: client, clientPort, peerPort, dataDir, cmdline, healthUrl,
			exited: proc.exited,
			output,
			stop,
		};
	}
	await stop();
	throw notReadyError('etcd', proc, probe, {
		becoming: 'healthy',
		answer: `report {"health":"true"} on ${healthUrl}`,
		timeoutMs: readyTimeoutMs,
		hint: (e) => (e.code === 'ENOENT'
			? ` (not found: install Debian's etcd-server, \`apt-get install -y etcd-server\`, or set PIPEMESH_ETCD_BIN)`
			: ''),
	});
}

/**
 * Polls a node's admin GET /readyz until 200 (its etcd session is up); /readyz answers
 * 503 until then. Fails fast when the node exits; the error carries the node's output tail.
 */
export async function waitForReadyz(server, { timeoutMs = 20000 } = {}) {
	const url = `http://127.0.0.1:${server.adminPort}/readyz`;
	const probe = await probeHttp(url, { timeoutMs, exited: server.exited });
	if (probe.ok) return;
	if (probe.gone) {
		throw new Error(`${server.label || 'pipemesh'} exited (code ${probe.gone.code}, signal ${probe.gone.signal}) before /readyz answered 200.\n` +
			`--- server output ---\n${server.output() || '(none)'}`);
	}
	throw new Error(`${server.label || 'pipemesh'}: GET ${url} not 200 within ${timeoutMs} ms (last: ${probe.last}).\n` +
		`command: ${server.cmdline}\n--- server output (tail) ---\n${server.output().split('\n').slice(-100).join('\n') || '(none)'}`);
}

/** GET `path` on a node's admin port as JSON (throws on a non-200 answer). */
export async function fetchAdminJson(server, path) {
	const r = await fetch(`http://127.0.0.1:${server.adminPort}${path}`, { signal: AbortSignal.timeout(2000) });
	const body = await r.text();
	if (r.status !== 200) throw new Error(`GET ${path} on ${server.label || 'pipemesh'}: HTTP ${r.status} ${body.slice(0, 500)}`);
	return JSON.parse(body);
}

/**
 * Polls GET `path` on a node's admin port (JSON) every 200 ms until predicate(answer) holds and
 * returns that answer. Fails fast when the node exits.
 */
export function waitForAdminJson(server, path, predicate, { timeoutMs = 20000, what = `GET ${path} to match` } = {}) {
	return waitOnServer(server, () => fetchAdminJson(server, path), predicate, {
		timeoutMs,
		intervalMs: 200,
		what,
		show: (v) => `GET ${path}:\n${JSON.stringify(v, null, 1)}`,
	});
}

/**
 * Starts one `pipemesh serve` per node id in etcd cluster mode: every node registers in
 * `etcd` (a startEtcd() handle, or an endpoint string) under `cluster` and finds the others
 * there (no static peers), with an insecure QUIC pipe listener on a free loopback UDP port
 * and a 3 s lease. Waits for /healthz, then /readyz 200 on every node.
 * Returns { nodes: {id: server}, ids, endpoint, output(), stop() }; when any node fails to
 * start or get ready, the ones already running are stopped before the error is rethrown.
 */
export async function startEtcdCluster(nodeIds, {
	etcd, cluster = 'pipemesh', leaseTtlSecs = 3, extraArgs = [], env = {}, readyTimeoutMs = 20000,
} = {}) {
	const endpoint = typeof etcd === 'string' ? etcd : etcd && etcd.endpoint;
	if (!endpoint) throw new Error('startEtcdCluster needs { etcd }: a startEtcd() handle or an endpoint URL');
	const handle = await startNodes(nodeIds, {
		cluster,
		env,
		nodeArgs: () => [
			'--etcd-endpoints', endpoint,
			'--insecure-pipes',
			'--etcd-lease-ttl-secs', String(leaseTtlSecs),
			...extraArgs,
		],
		whenStarted: (nodes) => Promise.all(Object.values(nodes).map((n) => waitForReadyz(n, { timeoutMs: readyTimeoutMs }))),
	});
	return { ...handle, endpoint };
}
