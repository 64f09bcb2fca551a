// Shared helpers for the browser tests: free ports, the pipemesh server process,
// a static file server for dist/, headless Chromium (playwright-core driving
// Debian's /usr/bin/chromium), and page helpers that poll window.pm.
import { spawn } from 'node:child_process';
import { existsSync, statSync, readFileSync } from 'node:fs';
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
export async function startPipemesh({ webRoot = DIST, extraArgs = [], env = {}, readyTimeoutMs = 20000 } = {}) {
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
	const [signalingPort, adminPort] = await freePorts(2);
	let rtcPort;
	for (;;) {
		[rtcPort] = await freePorts(1, { udp: true });
		if (rtcPort !== signalingPort && rtcPort !== adminPort) break;
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
	child.stdout.on('data', keep('[pipemesh stdout] '));
	child.stderr.on('data', keep('[pipemesh] '));
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
					signalingPort, rtcPort, adminPort, child, cmdline,
					baseUrl: `http://127.0.0.1:${signalingPort}`,
					wsUrl: `ws://127.0.0.1:${signalingPort}`,
					healthUrl,
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

/** Polls pm.stats() every 500 ms until predicate(stats) holds or the deadline passes. */
export async function waitForStats(peer, predicate, { timeoutMs = 30000, what = 'condition' } = {}) {
	const deadline = Date.now() + timeoutMs;
	let last;
	while (Date.now() < deadline) {
		last = await stats(peer);
		if (predicate(last)) return last;
		await delay(500);
	}
	throw new Error(`page ${peer.name}: timed out after ${timeoutMs} ms waiting for ${what}; last stats:\n${JSON.stringify(last, null, 1)}`);
}
