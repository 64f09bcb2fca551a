// End-to-end in etcd cluster mode: one real etcd (Debian's `etcd`, PIPEMESH_ETCD_BIN
// overrides) and three `pipemesh serve` processes (n1, n2, n3) on loopback that register
// there and find each other through it: no static peers, insecure QUIC pipes, 3 s lease.
//   Page A (Chromium, mediasoup-client) joins the room on n1 and produces its fake mic and
//   simulcast webcam; page B joins the same room on n3 and consumes.
// B must see A (join response or newPeer), get both consumers, decode video and receive
// audio that keep flowing; A must see B (newPeer from another node); n3's admin /cluster
// must list all three nodes and the room with A and B.
// Needs ../../target/debug/pipemesh (cargo build) or PIPEMESH_BIN, and etcd; never skips.
// Run: npm run build && node --test etcd.test.mjs
// Environment: PM_READY_TIMEOUT_MS (20000), PM_MEDIA_TIMEOUT_MS (30000),
// PM_SERVER_LOG=1 (print every node's output at the end), PIPEMESH_LOG (e.g. pipemesh=debug).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import {
	startEtcd, startEtcdCluster, fetchAdminJson, fetchMetrics, parseMetrics, metricValue,
	launchBrowser, openPage, waitReady, waitForStats, stats,
} from './harness.mjs';

const MEDIA_TIMEOUT_MS = Number(process.env.PM_MEDIA_TIMEOUT_MS || 30000);
const READY_TIMEOUT_MS = Number(process.env.PM_READY_TIMEOUT_MS || 20000);
const SAMPLE_MS = 3000;
const TEST_TIMEOUT_MS = 120000; // backstop only; a passing run takes far less
const NODE_IDS = ['n1', 'n2', 'n3'];
const clusterName = `pm-etcd-${process.pid}`;
const roomId = `etcd-${process.pid}-${Date.now().toString(36)}`;

let etcd = null;
let cluster = null;
let browser = null;
const pages = {};
const timings = {}; // printed at the end, ms
let openedB = 0;
let setupPromise = null;
let producerPromise = null;
let consumerPromise = null;

// Node ids in a /cluster answer: nodes[*].record.nodeId.
function clusterNodeIds(view) {
	return (view.nodes || []).map((n) => (n.record && n.record.nodeId) ?? n.nodeId).filter(Boolean).sort();
}

// Peer ids of `roomId` in a /cluster answer: rooms[*].peers[*].peerId, the room named by rooms[*].room.
function clusterRoomPeerIds(view, id) {
	const room = (view.rooms || []).find((r) => (r.room ?? r.roomId ?? r.id) === id);
	return room ? (room.peers || []).map((p) => p.peerId ?? p.id).sort() : null;
}

/** Polls node `id`'s /cluster until predicate(view) holds; returns that view. */
async function waitForClusterView(id, predicate, { timeoutMs = READY_TIMEOUT_MS, what } = {}) {
	const node = cluster.nodes[id];
	const deadline = Date.now() + timeoutMs;
	let last = null;
	while (Date.now() < deadline) {
		const gone = node.exited();
		if (gone) throw new Error(`node ${id} exited (code ${gone.code}, signal ${gone.signal}) while waiting for ${what}`);
		try {
			last = await fetchAdminJson(node, '/cluster');
			if (predicate(last)) return last;
		} catch (e) {
			last = `(GET /cluster failed: ${e.message})`;
		}
		await delay(200);
	}
	throw new Error(`node ${id}: timed out after ${timeoutMs} ms waiting for ${what}; last /cluster:\n${JSON.stringify(last, null, 1)}`);
}

const seesAllNodes = (view) => NODE_IDS.every((id) => clusterNodeIds(view).includes(id));

function setup() {
	setupPromise ??= (async () => {
		const t0 = Date.now();
		try {
			etcd = await startEtcd();
		} catch (e) {
			throw new Error(`etcd could not be started, so the etcd e2e test cannot run:\n${e.message}`);
		}
		timings.etcdMs = Date.now() - t0;
		console.log(`etcd healthy at ${etcd.endpoint} (${timings.etcdMs} ms): ${etcd.cmdline}`);
		const t1 = Date.now();
		try {
			cluster = await startEtcdCluster(NODE_IDS, { etcd, cluster: clusterName, readyTimeoutMs: READY_TIMEOUT_MS });
		} catch (e) {
			throw new Error(`the three pipemesh nodes could not be started in etcd mode:\n${e.message}\n` +
				`--- etcd output ---\n${etcd.output() || '(none)'}`);
		}
		timings.clusterReadyMs = Date.now() - t1;
		for (const n of Object.values(cluster.nodes)) console.log(`pipemesh ${n.label} up: ${n.cmdline}`);
		console.log(`cluster start: 3 nodes answering /readyz 200 after ${timings.clusterReadyMs} ms`);
		// Every node must see every other one in etcd before pages join.
		for (const id of NODE_IDS) {
			await waitForClusterView(id, seesAllNodes, { what: `/cluster listing ${NODE_IDS.join(', ')}` });
		}
		timings.clusterViewMs = Date.now() - t1;
		console.log(`cluster start: every node lists ${NODE_IDS.join(', ')} in /cluster after ${timings.clusterViewMs} ms`);
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

// Page A on n1: mic + simulcast webcam, consumes nothing.
function producer() {
	producerPromise ??= (async () => {
		const a = await open('n1', 'A', 'consume=false');
		await waitReady(a);
		const s = await waitForStats(a, (st) => st.producers === 2, { timeoutMs: 10000, what: '2 producers on A' });
		console.log(`A producing on n1: ${JSON.stringify(s.producerList.map((p) => [p.kind, p.source, p.id]))}`);
		return a;
	})();
	return producerPromise;
}

// Page B on n3: consumes only.
function consumer() {
	consumerPromise ??= (async () => {
		await producer();
		openedB = Date.now();
		const b = await open('n3', 'B', 'produce=false');
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
				const c = await fetchAdminJson(n, '/cluster').then((v) => JSON.stringify(v, null, 1), (x) => `(no /cluster: ${x.message})`);
				console.log(`--- node ${n.label} /cluster ---\n${c}`);
				console.log(`--- node ${n.label} output (tail) ---\n${n.output().split('\n').slice(-200).join('\n')}`);
			}
		}
		if (etcd) console.log(`--- etcd output (tail) ---\n${etcd.output().split('\n').slice(-50).join('\n') || '(none)'}`);
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
	if (etcd) console.log(`etcd stopped: ${JSON.stringify(await etcd.stop())}`);
	console.log(`timings: ${JSON.stringify(timings)}`);
});

test('n1, n2 and n3 register in etcd and find each other', { timeout: TEST_TIMEOUT_MS }, async () => {
	await withDiagnostics(async () => {
		await setup();
		for (const n of Object.values(cluster.nodes)) {
			const h = await (await fetch(n.healthUrl)).json();
			assert.equal(h.nodeId, n.label, `node ${n.label}: /healthz reports ${JSON.stringify(h)}`);
			const view = await fetchAdminJson(n, '/cluster');
			assert.deepEqual(clusterNodeIds(view), [...NODE_IDS].sort(),
				`node ${n.label}: /cluster should list exactly ${NODE_IDS.join(', ')}: ${JSON.stringify(view)}`);
		}
	});
});

test('B on n3 consumes A\'s mic and webcam from n1', { timeout: TEST_TIMEOUT_MS }, async () => {
	await setup();
	await withDiagnostics(async () => {
		const b = await consumer();
		// A reaches B in the join response, or by newPeer when n3's view of the room arrives
		// after B's join was answered.
		const seen = await waitForStats(b, (st) => st.peerList.some((p) => p.id === 'A'),
			{ timeoutMs: 10000, what: 'B (n3) to see A (n1) as a peer (join response or newPeer)' });
		console.log(`B sees peers ${JSON.stringify(seen.peerList)}; join response listed ${JSON.stringify(seen.joinPeerIds)}` +
			`${seen.joinPeerIds.includes('A') ? '' : ' (A came by newPeer after the join)'}`);
		const first = await waitForStats(b, (st) => st.video.framesDecoded > 0,
			{ timeoutMs: MEDIA_TIMEOUT_MS, intervalMs: 100, what: 'B\'s first decoded video frame (n1 -> n3)' });
		timings.firstFrameMs = Date.now() - openedB;
		console.log(`B: first decoded frame ${timings.firstFrameMs} ms after opening B (${first.video.frameWidth}x${first.video.frameHeight})`);
		const s = await waitForStats(
			b,
			(st) => st.consumers >= 2 && st.video.framesDecoded > 0 && st.audio.packetsReceived > 0,
			{ timeoutMs: MEDIA_TIMEOUT_MS, what: '2 consumers with decoded video frames and audio packets (n1 -> n3)' },
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
		assert.equal(s2.transportStates.recv, 'connected');
		// B's media comes from n3 (its own node), which got it from n1 over a pipe.
		if (s2.ice.recv && s2.ice.recv.remotePort) {
			assert.equal(s2.ice.recv.remotePort, cluster.nodes.n3.rtcPort,
				`B: selected ICE pair should be n3's RTC port ${cluster.nodes.n3.rtcPort}: ${JSON.stringify(s2.ice.recv)}`);
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
		const pipeIn = metricValue(metrics.n3, 'pipemesh_pipe_datagrams_in_total', { peer: 'n1' });
		const pipeOut = metricValue(metrics.n1, 'pipemesh_pipe_datagrams_out_total', { peer: 'n3' });
		assert.ok(pipeIn > 0, `n3: pipemesh_pipe_datagrams_in_total{peer="n1"} should be > 0, got ${pipeIn}`);
		assert.ok(pipeOut > 0, `n1: pipemesh_pipe_datagrams_out_total{peer="n3"} should be > 0, got ${pipeOut}`);
	});
});

test('A on n1 sees B (on n3) as a peer', { timeout: TEST_TIMEOUT_MS }, async () => {
	await setup();
	await withDiagnostics(async () => {
		const a = await producer();
		await consumer();
		const s = await waitForStats(a, (st) => st.peerList.some((p) => p.id === 'B'),
			{ timeoutMs: 10000, what: 'A to learn about B (newPeer from n3)' });
		console.log(`A sees peers ${JSON.stringify(s.peerList)}`);
		assert.deepEqual(s.errors, [], 'A: page reported errors');
	});
});

test('n3\'s /cluster lists n1, n2, n3 and the room with A and B', { timeout: TEST_TIMEOUT_MS }, async () => {
	await setup();
	await withDiagnostics(async () => {
		await consumer();
		const view = await waitForClusterView('n3',
			(v) => seesAllNodes(v) && ['A', 'B'].every((p) => (clusterRoomPeerIds(v, roomId) || []).includes(p)),
			{ timeoutMs: 10000, what: `nodes ${NODE_IDS.join(', ')} and room ${roomId} with peers A and B` });
		console.log(`n3 /cluster: nodes ${JSON.stringify(clusterNodeIds(view))}, room ${roomId} peers ${JSON.stringify(clusterRoomPeerIds(view, roomId))}`);
		assert.deepEqual(clusterNodeIds(view), [...NODE_IDS].sort());
		assert.deepEqual(clusterRoomPeerIds(view, roomId), ['A', 'B']);
	});
});
