// Room tokens end to end: a pipemesh node started with --auth-secret-file, tokens minted with
// `pipemesh token`. Page A joins with a publish token (`&token=` in the page URL, which the page
// passes on to the WebSocket URL) and produces; page B joins with a subscribe-only token and
// receives A's media. A WebSocket upgrade without a token, or with A's token for another peer,
// is refused (401 / 403) before anything is allocated.
// Needs ../../target/debug/pipemesh (cargo build) or PIPEMESH_BIN; never skips.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startPipemesh, serverBinary } from './harness.mjs';
import { Session, assertMediaFlows } from './cluster-helpers.mjs';

const room = `token-${process.pid}-${Date.now().toString(36)}`;
const dir = mkdtempSync(join(tmpdir(), 'pipemesh-token-'));
const secretFile = join(dir, 'cluster.secret');
writeFileSync(secretFile, 'an example cluster secret of more than 32 bytes\n');

const session = new Session(room, { setup, teardown });
let server = null;

function token(peer, ...grants) {
	return execFileSync(serverBinary(), ['token', '--auth-secret-file', secretFile, '--room', room, '--peer', peer, '--ttl', '10m', ...grants], { encoding: 'utf8' }).trim();
}

async function setup() {
	server = await startPipemesh({ extraArgs: ['--auth-secret-file', secretFile] });
	session.addNodes([server]);
	await session.launchBrowser();
}

async function teardown() {
	if (server) await server.stop();
	rmSync(dir, { recursive: true, force: true });
}

/** The HTTP status of a protoo WebSocket upgrade to `url` (101 when accepted). */
function upgradeStatus(url) {
	return new Promise((resolve, reject) => {
		const ws = new WebSocket(url, 'protoo');
		ws.once('open', () => { ws.close(); resolve(101); });
		ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode); res.resume(); });
		ws.once('error', (e) => { if (!ws.readyState || ws.readyState === WebSocket.CLOSED) reject(e); });
	});
}

session.test('pages with tokens join, publish and consume', async () => {
	const a = await session.producer(server, 'A', `token=${token('A', '--can-publish')}`);
	assert.ok(a);
	const b = await session.consumer(server, 'B', `token=${token('B', '--can-subscribe')}`);
	await assertMediaFlows(b, { label: 'B (token)', timeoutMs: 30000, sampleMs: 2000 });
});

session.test('upgrades without a valid token are refused before allocation', async () => {
	const base = `${server.wsUrl}/?roomId=${room}`;
	assert.equal(await upgradeStatus(`${base}&peerId=X`), 401, 'no token');
	assert.equal(await upgradeStatus(`${base}&peerId=X&token=${token('A', '--can-publish')}`), 403, 'another peer\'s token');
	assert.equal(await upgradeStatus(`${base}&peerId=X&token=not.a.jwt`), 401, 'malformed token');
	assert.equal(await upgradeStatus(`${base}&peerId=X&token=${token('X')}`), 101, 'a valid token');
});
