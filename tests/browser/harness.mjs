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
	const lines = [];
	const keep = (prefix) => (chunk) => {
		for (const l of String(chunk).split('\n')) if (l) lines.push(`${prefix}${l}`);
		if (lines.length > 4000) lines.splice(0, lines.length - 4000);
	};
	const child = spawn(bin, args, {
		cwd: REPO_ROOT,
		stdio: ['ignore', 'pipe', 'pipe'],
		env: { ...process.env, PIPEMESH_LOG: process.env.PIPEMESH_LOG || 'info', ...env },
	});
	const tag = label ? `pipemesh ${label}` : 'pipemesh';
	child.stdout.on('data', keep(`[${tag} stdout] `));
	child.stderr.on('data', keep(`[${tag}] `));
	let exited = null;
	let spawnError = null;
	const exitPromise = new Promise((res) => {
		child.once('exit', (code, signal) => { exited = { code, signal }; res(exited); });
		child.once('error', (e) => { spawnError = e; exited = exited || { code: null, signal: null }; res(exited); });
	});
	// Backstop: never leave the server behind if the test process dies.
	const onExit = () => { if (!exited) try { child.kill('SIGKILL'); } catch { /* gone */ } };
	const onSignal = (sig) => { onExit(); process.exit(sig === 'SIGINT' ? 130 : 143); };
	process.once('exit', onExit);
	process.once('SIGINT', onSignal);
	process.once('SIGTERM', onSignal);

	const output = () => lines.join('\n');
	const stop = async () => {
		process.removeListener('exit', onExit);
		process.removeListener('SIGINT', onSignal);
		process.removeListener('SIGTERM', onSignal);
		if (exited) return exited;
		child.kill('SIGTERM');
		const r = await Promise.race([exitPromise, delay(5000).then(() => null)]);
		if (r) return r;
		child.kill('SIGKILL');
		return exitPromise;
	};
	const cmdline = `${bin} ${args.join(' ')}`;
	const healthUrl = `http://127.0.0.1:${adminPort}/healthz`;

	// Wait for readiness: a bounded number of /healthz probes (about 20 s in all).
	const pollMs = 200;
	const attempts = Math.ceil(readyTimeoutMs / pollMs);
	let lastProblem = 'no answer yet';
	for (let i = 0; i < attempts; i++) {
		if (exited) {
			throw new Error(
				`pipemesh exited before becoming ready (code ${exited.code}, signal ${exited.signal}` +
				`${spawnError ? `, spawn error: ${spawnError.message}` : ''}).\n` +
				`command: ${cmdline}\n--- server output ---\n${output() || '(none)'}`,
			);
		}
		try {
			const r = await fetch(healthUrl, { signal: AbortSignal.timeout(1000) });
			if (r.status === 200) {
				return {
					signalingPort, rtcPort, adminPort, child, cmdline, label,
					baseUrl: `http://127.0.0.1:${signalingPort}`,
					wsUrl: `ws://127.0.0.1:${signalingPort}`,
					healthUrl,
					metricsUrl: `http://127.0.0.1:${adminPort}/metrics`,
					exited: () => exited,
					output,
					stop,
				};
			}
			lastProblem = `HTTP ${r.status}`;
		} catch (e) {
			lastProblem = e.cause ? `${e.cause.code || e.cause.message}` : e.message;
		}
		await delay(pollMs);
	}
	await stop();
	throw new Error(
		`pipemesh did not answer 200 on ${healthUrl} within ${readyTimeoutMs} ms (last: ${lastProblem}).\n` +
		`command: ${cmdline}\n--- server output ---\n${output() || '(none)'}`,
	);
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
 * (value is null while the series is absent). Fails fast when the server exits.
 */
export async function waitForMetric(server, name, labels, predicate, { timeoutMs = 20000, what } = {}) {
	const deadline = Date.now() + timeoutMs;
	const desc = what || `${name}${JSON.stringify(labels)}`;
	let last = null;
	let lastText = '';
	while (Date.now() < deadline) {
		const gone = server.exited && server.exited();
		if (gone) {
			throw new Error(`${server.label || 'pipemesh'} exited (code ${gone.code}, signal ${gone.signal}) while waiting for ${desc}`);
		}
		try {
			lastText = await fetchMetrics(server);
			last = metricValue(lastText, name, labels);
			if (predicate(last)) return last;
		} catch (e) {
			lastText = `(fetch failed: ${e.message})`;
		}
		await delay(250);
	}
	throw new Error(`${server.label || 'pipemesh'}: timed out after ${timeoutMs} ms waiting for ${desc}; last value ${last}; ` +
		`last /metrics:\n${lastText}`);
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
	const pipePorts = await freePorts(nodeIds.length, { udp: true });
	const pipePort = Object.fromEntries(nodeIds.map((id, i) => [id, pipePorts[i]]));
	const certs = secure ? await makeClusterCerts(nodeIds, { cluster }) : null;
	const nodes = {};
	const stop = async () => {
		const results = {};
		for (const [id, n] of Object.entries(nodes).reverse()) results[id] = await n.stop();
		if (certs) certs.remove();
		return results;
	};
	try {
		for (const id of nodeIds) {
			const args = [
				'--node-id', id,
				'--cluster', cluster,
				'--pipe-listen', `127.0.0.1:${pipePort[id]}`,
				...nodeIds.filter((o) => o !== id).flatMap((o) => ['--static-peer', `${o}=127.0.0.1:${pipePort[o]}`]),
				...(certs
					? ['--cluster-ca', certs.ca, '--node-cert', certs.cert(id), '--node-key', certs.key(id)]
					: ['--insecure-pipes']),
				...(graceSecs !== null ? ['--pipe-grace-secs', String(graceSecs)] : []),
				...extraArgs,
			];
			nodes[id] = await startPipemesh({ label: id, avoidPorts: pipePorts, extraArgs: args, env });
			nodes[id].pipePort = pipePort[id];
		}
	} catch (e) {
		await stop().catch(() => {});
		throw e;
	}
	return {
		nodes,
		ids: [...nodeIds],
		certs,
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
	const lines = [];
	const keep = (chunk) => {
		for (const l of String(chunk).split('\n')) if (l) lines.push(`[etcd] ${l}`);
		if (lines.length > 1000) lines.splice(0, lines.length - 1000);
	};
	const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
	child.stdout.on('data', keep);
	child.stderr.on('data', keep);
	let exited = null;
	let spawnError = null;
	const exitPromise = new Promise((res) => {
		child.once('exit', (code, signal) => { exited = { code, signal }; res(exited); });
		child.once('error', (e) => { spawnError = e; exited = exited || { code: null, signal: null }; res(exited); });
	});
	const removeDir = () => rmSync(dataDir, { recursive: true, force: true });
	// Backstop: never leave etcd (or its data) behind if the test process dies.
	const onExit = () => {
		if (!exited) try { child.kill('SIGKILL'); } catch { /* gone */ }
		try { removeDir(); } catch { /* best effort */ }
	};
	const onSignal = (sig) => { onExit(); process.exit(sig === 'SIGINT' ? 130 : 143); };
	process.once('exit', onExit);
	process.once('SIGINT', onSignal);
	process.once('SIGTERM', onSignal);

	const output = () => lines.join('\n');
	const stop = async () => {
		process.removeListener('exit', onExit);
		process.removeListener('SIGINT', onSignal);
		process.removeListener('SIGTERM', onSignal);
		if (!exited) child.kill('SIGKILL');
		const r = await exitPromise;
		removeDir();
		return r;
	};
	const cmdline = `${bin} ${args.join(' ')}`;
	const healthUrl = `${client}/health`;

	const deadline = Date.now() + readyTimeoutMs;
	let lastProblem = 'no answer yet';
	while (Date.now() < deadline) {
		if (exited) {
			await stop();
			const hint = spawnError && spawnError.code === 'ENOENT'
				? ` (not found: install Debian's etcd-server, \`apt-get install -y etcd-server\`, or set PIPEMESH_ETCD_BIN)`
				: '';
			throw new Error(
				`etcd exited before becoming healthy (code ${exited.code}, signal ${exited.signal}` +
				`${spawnError ? `, spawn error: ${spawnError.message}${hint}` : ''}).\n` +
				`command: ${cmdline}\n--- etcd output ---\n${output() || '(none)'}`,
			);
		}
		try {
			const r = await fetch(healthUrl, { signal: AbortSignal.timeout(1000) });
			const body = await r.text();
			let health = null;
			try { health = JSON.parse(body).health; } catch { /* not JSON yet */ }
			if (r.status === 200 && health === 'true') {
				return {
					endpoint: client, clientPort, peerPort, dataDir, cmdline, healthUrl,
					exited: () => exited,
					output,
					stop,
				};
			}
			lastProblem = `HTTP ${r.status} ${body.trim().slice(0, 200)}`;
		} catch (e) {
			lastProblem = e.cause ? `${e.cause.code || e.cause.message}` : e.message;
		}
		await delay(100);
	}
	await stop();
	throw new Error(
		`etcd did not report {"health":"true"} on ${healthUrl} within ${readyTimeoutMs} ms (last: ${lastProblem}).\n` +
		`command: ${cmdline}\n--- etcd output ---\n${output() || '(none)'}`,
	);
}

/**
 * Polls a node's admin GET /readyz until 200 (its etcd session is up); /readyz answers
 * 503 until then. Fails fast when the node exits; the error carries the node's output tail.
 */
export async function waitForReadyz(server, { timeoutMs = 20000 } = {}) {
	const url = `http://127.0.0.1:${server.adminPort}/readyz`;
	const deadline = Date.now() + timeoutMs;
	let lastProblem = 'no answer yet';
	while (Date.now() < deadline) {
		const gone = server.exited && server.exited();
		if (gone) {
			throw new Error(`${server.label || 'pipemesh'} exited (code ${gone.code}, signal ${gone.signal}) before /readyz answered 200.\n` +
				`--- server output ---\n${server.output() || '(none)'}`);
		}
		try {
			const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
			const body = await r.text();
			if (r.status === 200) return;
			lastProblem = `HTTP ${r.status} ${body.trim().slice(0, 200)}`;
		} catch (e) {
			lastProblem = e.cause ? `${e.cause.code || e.cause.message}` : e.message;
		}
		await delay(200);
	}
	throw new Error(`${server.label || 'pipemesh'}: GET ${url} not 200 within ${timeoutMs} ms (last: ${lastProblem}).\n` +
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
	const pipePorts = await freePorts(nodeIds.length, { udp: true });
	const pipePort = Object.fromEntries(nodeIds.map((id, i) => [id, pipePorts[i]]));
	const nodes = {};
	const stop = async () => {
		const results = {};
		for (const [id, n] of Object.entries(nodes).reverse()) results[id] = await n.stop();
		return results;
	};
	try {
		for (const id of nodeIds) {
			const args = [
				'--node-id', id,
				'--cluster', cluster,
				'--etcd-endpoints', endpoint,
				'--pipe-listen', `127.0.0.1:${pipePort[id]}`,
				'--insecure-pipes',
				'--etcd-lease-ttl-secs', String(leaseTtlSecs),
				...extraArgs,
			];
			nodes[id] = await startPipemesh({ label: id, avoidPorts: pipePorts, extraArgs: args, env });
			nodes[id].pipePort = pipePort[id];
		}
		await Promise.all(Object.values(nodes).map((n) => waitForReadyz(n, { timeoutMs: readyTimeoutMs })));
	} catch (e) {
		await stop().catch(() => {});
		throw e;
	}
	return {
		nodes,
		ids: [...nodeIds],
		endpoint,
		output: () => Object.values(nodes).map((n) => n.output()).join('\n'),
		stop,
	};
}
