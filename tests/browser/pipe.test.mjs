// End-to-end across two nodes: two `pipemesh serve` processes (node ids a and b) on
// loopback, linked by a QUIC pipe (static peers, cluster CA + node certificates made by
// `pipemesh certs`; PM_INSECURE_PIPES=1 uses --insecure-pipes instead).
//   Page A (Chromium, mediasoup-client) joins the room on node a and produces its fake mic
//   and a 3-layer simulcast webcam; page B joins the same room on node b and consumes.
// Rooms are global across static peers, so B must see A (join response), get both
// consumers, decode video and receive audio that keep flowing, and follow
// setConsumerPreferredLayers among the layers node a forwards over the pipe; A must see B
// (newPeer from the other node).
// Needs ../../target/debug/pipemesh (cargo build) or PIPEMESH_BIN; never skips.
// Run: npm run build && node --test pipe.test.mjs
// Environment: PM_INSECURE_PIPES=1, PM_LINK_TIMEOUT_MS (20000), PM_MEDIA_TIMEOUT_MS (30000),
// PM_SERVER_LOG=1 (print both nodes' output at the end), PIPEMESH_LOG (e.g. pipemesh=debug).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import {
	startPipeCluster, waitForPipeLinks, fetchMetrics, parseMetrics, metricValue,
	launchBrowser, openPage, waitReady, waitForStats, stats,
} from './harness.mjs';

const MEDIA_TIMEOUT_MS = Number(process.env.PM_MEDIA_TIMEOUT_MS || 30000);
const LINK_TIMEOUT_MS = Number(process.env.PM_LINK_TIMEOUT_MS || 20000);
const SAMPLE_MS = 3000;
const TEST_TIMEOUT_MS = 120000; // backstop only; a passing run takes far less
const roomId = `pipe-${process.pid}-${Date.now().toString(36)}`;

let cluster = null;
let browser = null;
const pages = {};
let setupPromise = null;
let producerPromise = null;
let consumerPromise = null;

function setup() {
	setupPromise ??= (async () => {
		const t0 = Date.now();
		try {
			cluster = await startPipeCluster(['a', 'b'], { secure: !process.env.PM_INSECURE_PIPES });
		} catch (e) {
			throw new Error(`the two pipemesh nodes could not be started, so the pipe e2e test cannot run:\n${e.message}`);
		}
		for (const n of Object.values(cluster.nodes)) console.log(`pipemesh ${n.label} up: ${n.cmdline}`);
		await waitForPipeLinks(cluster, { timeoutMs: LINK_TIMEOUT_MS });
		console.log(`pipe link a <-> b up (${Date.now() - t0} ms after start)`);
		browser = await launchBrowser();
		console.log(`chromium ${browser.version()}`);
	})();
	return setupPromise;
}

async function open(nodeId, peerId, query) {
	const node = cluster.nodes[nodeId];
	const url = `${node.baseUrl}/?roomId=${roomId}&peerId=${peerId}&${query}`;
	console.log(`opening ${peerId} on node ${nodeId}: ${url}`);
	const peer = await openPage(browser, url, peerId);
	pages[peerId] = peer;
	return peer;
}

// Page A on node a: mic + simulcast webcam, consumes nothing.
function producer() {
	producerPromise ??= (async () => {
		const a = await open('a', 'A', 'consume=false');
		await waitReady(a);
		const s = await waitForStats(a, (st) => st.producers === 2, { timeoutMs: 10000, what: '2 producers on A' });
		console.log(`A producing on node a: ${JSON.stringify(s.producerList.map((p) => [p.kind, p.source, p.id]))}`);
		return a;
	})();
	return producerPromise;
}

// Page B on node b: consumes only.
function consumer() {
	consumerPromise ??= (async () => {
		await producer();
		const b = await open('b', 'B', 'produce=false');
		await waitReady(b);
		return b;
	})();
	return consumerPromise;
}

async function withDiagnostics(fn) {
	try {
		await fn();
	} catch (e) {
		for (const [name, p] of Object.entries(pages)) {
			console.log(`${name} stats at failure: ${JSON.stringify(await stats(p).catch((x) => String(x)))}`);
		}
		if (cluster) {
			for (const n of Object.values(cluster.nodes)) {
				const m = await fetchMetrics(n).catch((x) => `(no metrics: ${x.message})`);
				console.log(`--- node ${n.label} /metrics ---\n${m}`);
				console.log(`--- node ${n.label} output (tail) ---\n${n.output().split('\n').slice(-200).join('\n')}`);
			}
		}
		throw e;
	}
}

function pipeMetrics(text) {
	return parseMetrics(text)
		.filter((s) => s.name.startsWith('pipemesh_pipe_') || s.name.startsWith('pipemesh_rtp_'))
		.map((s) => `${s.name}${Object.keys(s.labels).length ? JSON.stringify(s.labels) : ''}=${s.value}`)
		.join(' ');
}

after(async () => {
	for (const p of Object.values(pages)) await p.page.evaluate(() => window.pm.close()).catch(() => {});
	if (browser) await browser.close().catch(() => {});
	if (cluster) {
		if (process.env.PM_SERVER_LOG) {
			for (const n of Object.values(cluster.nodes)) console.log(`--- node ${n.label} output ---\n${n.output()}`);
		}
		const r = await cluster.stop();
		console.log(`pipemesh nodes stopped: ${JSON.stringify(r)}`);
	}
});

test('nodes a and b bring up the pipe link', { timeout: TEST_TIMEOUT_MS }, async () => {
	await withDiagnostics(async () => {
		await setup();
		for (const n of Object.values(cluster.nodes)) {
			const h = await (await fetch(n.healthUrl)).json();
			assert.equal(h.nodeId, n.label, `node ${n.label}: /healthz reports ${JSON.stringify(h)}`);
		}
	});
});

test('B on node b consumes A\'s mic and simulcast webcam from node a', { timeout: TEST_TIMEOUT_MS }, async () => {
	await setup();
	await withDiagnostics(async () => {
		const b = await consumer();
		// A reaches B in the join response, or by newPeer when node b's view of the room
		// (gossiped from node a when B's session opened) arrives after B's join was answered.
		const seen = await waitForStats(b, (st) => st.peerList.some((p) => p.id === 'A'),
			{ timeoutMs: 10000, what: 'B (node b) to see A (node a) as a peer (join response or newPeer)' });
		console.log(`B sees peers ${JSON.stringify(seen.peerList)}; join response listed ${JSON.stringify(seen.joinPeerIds)}` +
			`${seen.joinPeerIds.includes('A') ? '' : ' (A came by newPeer after the join)'}`);
		const s = await waitForStats(
			b,
			(st) => st.consumers >= 2 && st.video.framesDecoded > 0 && st.audio.packetsReceived > 0,
			{ timeoutMs: MEDIA_TIMEOUT_MS, what: '2 consumers with decoded video frames and audio packets (via the pipe)' },
		);
		console.log(`B: consumers ${JSON.stringify(s.consumerList)}`);
		console.log(`B: transports ${JSON.stringify(s.transportStates)} ice ${JSON.stringify(s.ice)}`);
		const s1 = await stats(b);
		await delay(SAMPLE_MS);
		const s2 = await stats(b);
		console.log(`B: framesDecoded ${s1.video.framesDecoded} -> ${s2.video.framesDecoded} in ${SAMPLE_MS} ms (${s2.video.frameWidth}x${s2.video.frameHeight})`);
		console.log(`B: audio packetsReceived ${s1.audio.packetsReceived} -> ${s2.audio.packetsReceived}`);
		assert.equal(s2.consumers, 2, `B: expected exactly 2 consumers, got ${JSON.stringify(s2.consumerList)}`);
		assert.deepEqual(s2.consumerList.map((c) => c.kind).sort(), ['audio', 'video']);
		for (const c of s2.consumerList) assert.equal(c.peerId, 'A', `B: consumer ${c.id} should belong to A: ${JSON.stringify(c)}`);
		assert.equal(s2.consumerList.find((c) => c.kind === 'video').type, 'simulcast');
		assert.equal(s2.transportStates.recv, 'connected');
		// B's media comes from node b (its own node), which got it from node a over the pipe.
		if (s2.ice.recv && s2.ice.recv.remotePort) {
			assert.equal(s2.ice.recv.remotePort, cluster.nodes.b.rtcPort,
				`B: selected ICE pair should be node b's RTC port ${cluster.nodes.b.rtcPort}: ${JSON.stringify(s2.ice.recv)}`);
		}
		assert.ok(s2.video.framesDecoded > s1.video.framesDecoded,
			`B: video stalled: framesDecoded ${s1.video.framesDecoded} -> ${s2.video.framesDecoded}`);
		assert.ok(s2.audio.packetsReceived > s1.audio.packetsReceived,
			`B: audio stalled: packets ${s1.audio.packetsReceived} -> ${s2.audio.packetsReceived}`);
		assert.deepEqual(s2.errors, [], 'B: page reported errors');
		const metrics = {};
		for (const n of Object.values(cluster.nodes)) {
			metrics[n.label] = await fetchMetrics(n);
			console.log(`node ${n.label} pipe metrics: ${pipeMetrics(metrics[n.label])}`);
		}
		const pipeIn = metricValue(metrics.b, 'pipemesh_pipe_datagrams_in_total', { peer: 'a' });
		const pipeOut = metricValue(metrics.a, 'pipemesh_pipe_datagrams_out_total', { peer: 'b' });
		assert.ok(pipeIn > 0, `node b: pipemesh_pipe_datagrams_in_total{peer="a"} should be > 0, got ${pipeIn}`);
		assert.ok(pipeOut > 0, `node a: pipemesh_pipe_datagrams_out_total{peer="b"} should be > 0, got ${pipeOut}`);
	});
});

test('A on node a sees B (on node b) as a peer', { timeout: TEST_TIMEOUT_MS }, async () => {
	await setup();
	await withDiagnostics(async () => {
		const a = await producer();
		await consumer();
		const s = await waitForStats(a, (st) => st.peerList.some((p) => p.id === 'B'),
			{ timeoutMs: 10000, what: 'A to learn about B (newPeer across the pipe)' });
		console.log(`A sees peers ${JSON.stringify(s.peerList)}`);
		assert.deepEqual(s.errors, [], 'A: page reported errors');
	});
});

// Node a forwards every simulcast encoding over the pipe once; node b's consumer picks
// among them. Same checks as e2e test D: the 160x120 layer for spatial layer 0, a higher
// one again for spatial layer 2, with the decoder running across the switches.
test('simulcast across the pipe: B switches layers with setConsumerPreferredLayers', { timeout: TEST_TIMEOUT_MS }, async () => {
	await setup();
	await withDiagnostics(async () => {
		const a = await producer();
		await waitForStats(a, (st) => st.sent.video.streams >= 2, { timeoutMs: MEDIA_TIMEOUT_MS, what: 'A sending 2+ simulcast layers' });
		const b = await consumer();
		const s = await waitForStats(b, (st) => st.consumers >= 2 && st.video.framesDecoded > 0,
			{ timeoutMs: MEDIA_TIMEOUT_MS, what: 'B decoding video' });
		const video = s.consumerList.find((c) => c.kind === 'video');
		assert.equal(video.type, 'simulcast');
		const prefer = (spatialLayer) => b.page.evaluate(
			({ consumerId, spatialLayer }) => window.pm.peer.request('setConsumerPreferredLayers', { consumerId, spatialLayer }),
			{ consumerId: video.id, spatialLayer },
		);
		const layersOf = (st) => (st.consumerList.find((c) => c.id === video.id) || {}).layers || null;

		await prefer(0);
		const low = await waitForStats(b, (st) => st.video.frameHeight === 120,
			{ timeoutMs: MEDIA_TIMEOUT_MS, what: 'B decoding the 160x120 layer' });
		console.log(`B: preferred layer 0 -> ${low.video.frameWidth}x${low.video.frameHeight}, framesDecoded ${low.video.framesDecoded}, layers ${JSON.stringify(layersOf(low))}`);
		// consumerLayersChanged: the node reports the switch to spatial layer 0.
		const lowLayers = await waitForStats(b, (st) => layersOf(st) && layersOf(st).spatialLayer === 0,
			{ timeoutMs: 5000, what: 'consumerLayersChanged to spatial layer 0' });
		assert.equal(layersOf(lowLayers).spatialLayer, 0);

		await prefer(2);
		const high = await waitForStats(b, (st) => st.video.frameHeight > 120 && st.video.framesDecoded > low.video.framesDecoded + 30,
			{ timeoutMs: MEDIA_TIMEOUT_MS, what: 'B back on a higher layer and decoding' });
		console.log(`B: preferred layer 2 -> ${high.video.frameWidth}x${high.video.frameHeight}, framesDecoded ${high.video.framesDecoded}, layers ${JSON.stringify(layersOf(high))}`);
		const highLayers = await waitForStats(b, (st) => layersOf(st) && layersOf(st).spatialLayer > 0,
			{ timeoutMs: 5000, what: 'consumerLayersChanged to a spatial layer above 0' });
		assert.ok(layersOf(highLayers).spatialLayer > 0);
		assert.deepEqual(high.errors, [], 'B: page reported errors');
	});
});
