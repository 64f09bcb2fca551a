// End-to-end: real pipemesh server + headless Chromium running the demo page.
//   A produces fake mic + fake webcam (simulcast), B consumes over UDP,
//   C consumes with forceTcp. Media must flow and keep flowing.
// Needs ../../target/debug/pipemesh (cargo build) or PIPEMESH_BIN; fails (never
// skips) when no server can be started. Run: npm test
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import {
	startPipemesh, launchBrowser, openPage, waitReady, waitForStats, stats,
} from './harness.mjs';

const MEDIA_TIMEOUT_MS = Number(process.env.PM_MEDIA_TIMEOUT_MS || 30000);
const roomId = `e2e-${process.pid}-${Date.now().toString(36)}`;

let server = null;
let browser = null;
const pages = [];
let setupPromise = null;
let producerPromise = null;

function setup() {
	setupPromise ??= (async () => {
		try {
			server = await startPipemesh();
		} catch (e) {
			throw new Error(`no pipemesh server could be started, so the browser e2e test cannot run:\n${e.message}`);
		}
		console.log(`pipemesh up: ${server.cmdline}`);
		browser = await launchBrowser();
		console.log(`chromium ${browser.version()}`);
		return { server, browser };
	})();
	return setupPromise;
}

async function open(peerId, query) {
	const url = `${server.baseUrl}/?roomId=${roomId}&peerId=${peerId}&${query}`;
	console.log(`opening ${peerId}: ${url}`);
	const peer = await openPage(browser, url, peerId);
	pages.push(peer);
	return peer;
}

// Page A: produces mic + webcam, consumes nothing. Shared by both tests.
function producer() {
	producerPromise ??= (async () => {
		const a = await open('A', 'consume=false');
		await waitReady(a);
		const s = await waitForStats(a, (st) => st.producers === 2, { timeoutMs: 10000, what: '2 producers on A' });
		console.log(`A producing: ${JSON.stringify(s.producerList)}`);
		return a;
	})();
	return producerPromise;
}

async function withDiagnostics(fn) {
	try {
		await fn();
	} catch (e) {
		if (producerPromise) {
			const a = await producerPromise.catch(() => null);
			if (a) console.log(`A stats at failure: ${JSON.stringify(await stats(a).catch((x) => String(x)))}`);
		}
		if (server) console.log(`--- pipemesh output (tail) ---\n${server.output().split('\n').slice(-200).join('\n')}`);
		throw e;
	}
}

async function assertConsumes(peer, label) {
	const s = await waitForStats(
		peer,
		(st) => st.consumers >= 2 && st.video.framesDecoded > 0 && st.audio.packetsReceived > 0,
		{ timeoutMs: MEDIA_TIMEOUT_MS, what: '2 consumers with decoded video frames and audio packets' },
	);
	console.log(`${label}: consumers ${JSON.stringify(s.consumerList)}`);
	console.log(`${label}: transports ${JSON.stringify(s.transportStates)} ice ${JSON.stringify(s.ice)}`);
	const s1 = await stats(peer);
	await delay(2000);
	const s2 = await stats(peer);
	console.log(`${label}: framesDecoded: ${s1.video.framesDecoded} -> ${s2.video.framesDecoded} (${s2.video.frameWidth}x${s2.video.frameHeight})`);
	console.log(`${label}: audio packetsReceived: ${s1.audio.packetsReceived} -> ${s2.audio.packetsReceived}`);
	assert.equal(s2.consumers, 2, `${label}: expected exactly 2 consumers, got ${JSON.stringify(s2.consumerList)}`);
	assert.deepEqual(s2.consumerList.map((c) => c.kind).sort(), ['audio', 'video']);
	assert.ok(s2.video.framesDecoded > s1.video.framesDecoded, `${label}: video stalled: framesDecoded ${s1.video.framesDecoded} -> ${s2.video.framesDecoded}`);
	assert.ok(s2.audio.packetsReceived > s1.audio.packetsReceived, `${label}: audio stalled: packets ${s1.audio.packetsReceived} -> ${s2.audio.packetsReceived}`);
	assert.deepEqual(s2.errors, [], `${label}: page reported errors`);
	return s2;
}

after(async () => {
	for (const p of pages) await p.page.evaluate(() => window.pm.close()).catch(() => {});
	if (browser) await browser.close().catch(() => {});
	if (server) {
		const r = await server.stop();
		console.log(`pipemesh stopped (code ${r.code}, signal ${r.signal})`);
	}
});

test('UDP: B consumes A\'s mic and simulcast webcam', async () => {
	await setup();
	await withDiagnostics(async () => {
		await producer();
		const b = await open('B', 'produce=false');
		await waitReady(b);
		const s = await assertConsumes(b, 'B (udp)');
		assert.equal(s.transportStates.recv, 'connected');
	});
});

test('TCP: C (forceTcp) consumes A\'s mic and webcam', async () => {
	await setup();
	await withDiagnostics(async () => {
		await producer();
		const c = await open('C', 'produce=false&forceTcp=true');
		await waitReady(c);
		const s = await assertConsumes(c, 'C (forceTcp)');
		assert.equal(s.transportStates.recv, 'connected');
		const proto = s.ice.recv && s.ice.recv.protocol;
		if (proto) assert.equal(proto, 'tcp', `C asked for forceTcp but its selected ICE pair is ${JSON.stringify(s.ice.recv)}`);
		else console.log('C: selected ICE candidate pair not reported by getStats; protocol not checked');
	});
});

// Simulcast: the consumer follows setConsumerPreferredLayers, switching on keyframes, and the
// decoder keeps running across switches (sequence numbers, timestamps and VP8 picture ids
// stay continuous).
test('simulcast: D switches layers with setConsumerPreferredLayers', async () => {
	await setup();
	await withDiagnostics(async () => {
		const a = await producer();
		// The lowest and a higher layer must both be flowing before we can switch between them.
		await waitForStats(a, (st) => st.sent.video.streams >= 2, { timeoutMs: MEDIA_TIMEOUT_MS, what: 'A sending 2+ simulcast layers' });
		const d = await open('D', 'produce=false');
		await waitReady(d);
		const s = await assertConsumes(d, 'D (simulcast)');
		const video = s.consumerList.find((c) => c.kind === 'video');
		assert.equal(video.type, 'simulcast');
		const prefer = (spatialLayer) => d.page.evaluate(
			({ consumerId, spatialLayer }) => window.pm.peer.request('setConsumerPreferredLayers', { consumerId, spatialLayer }),
			{ consumerId: video.id, spatialLayer },
		);
		await prefer(0);
		const low = await waitForStats(d, (st) => st.video.frameHeight === 120, { timeoutMs: MEDIA_TIMEOUT_MS, what: 'D decoding the 160x120 layer' });
		console.log(`D (simulcast): preferred layer 0 -> ${low.video.frameWidth}x${low.video.frameHeight}, framesDecoded ${low.video.framesDecoded}`);
		await prefer(2);
		const high = await waitForStats(d, (st) => st.video.frameHeight > 120 && st.video.framesDecoded > low.video.framesDecoded + 30,
			{ timeoutMs: MEDIA_TIMEOUT_MS, what: 'D back on a higher layer and decoding' });
		console.log(`D (simulcast): preferred layer 2 -> ${high.video.frameWidth}x${high.video.frameHeight}, framesDecoded ${high.video.framesDecoded}`);
		assert.deepEqual(high.errors, [], 'D: page reported errors');
	});
});
