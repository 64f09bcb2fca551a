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
import assert from 'node:assert/strict';
import { startEtcd, startEtcdCluster, fetchAdminJson, waitForAdminJson, waitForStats } from './harness.mjs';
import {
	Session, stopCluster, assertHealthzNodeIds, waitForPeer, assertMediaFlows, assertPipeCarried,
} from './cluster-helpers.mjs';

const MEDIA_TIMEOUT_MS = Number(process.env.PM_MEDIA_TIMEOUT_MS || 30000);
const READY_TIMEOUT_MS = Number(process.env.PM_READY_TIMEOUT_MS || 20000);
const SAMPLE_MS = 3000;
const TEST_TIMEOUT_MS = 120000; // backstop only; a passing run takes far less
const NODE_IDS = ['n1', 'n2', 'n3'];
const clusterName = `pm-etcd-${process.pid}`;
const roomId = `etcd-${process.pid}-${Date.now().toString(36)}`;
const session = new Session(roomId, { setup, teardown, testTimeoutMs: TEST_TIMEOUT_MS });
session.adminPaths = ['/cluster'];

let etcd = null;
let cluster = null;
const timings = {}; // printed at the end, ms

// Node ids in a /cluster answer: nodes[*].record.nodeId.
function clusterNodeIds(view) {
	return (view.nodes || []).map((n) => (n.record && n.record.nodeId) ?? n.nodeId).filter(Boolean).sort();
}

// Peer ids of `roomId` in a /cluster answer: rooms[*].peers[*].peerId, the room named by rooms[*].room.
function clusterRoomPeerIds(view, id) {
	const room = (view.rooms || []).find((r) => (r.room ?? r.roomId ?? r.id) === id);
	return room ? (room.peers || []).map((p) => p.peerId ?? p.id).sort() : null;
}

const seesAllNodes = (view) => NODE_IDS.every((id) => clusterNodeIds(view).includes(id));

async function setup() {
	const t0 = Date.now();
	try {
		etcd = await startEtcd();
	} catch (e) {
		throw new Error(`etcd could not be started, so the etcd e2e test cannot run:\n${e.message}`);
	}
	session.etcd = etcd;
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
	session.addNodes(Object.values(cluster.nodes));
	console.log(`cluster start: 3 nodes answering /readyz 200 after ${timings.clusterReadyMs} ms`);
	// Every node must see every other one in etcd before pages join.
	for (const n of session.nodes) {
		await waitForAdminJson(n, '/cluster', seesAllNodes,
			{ timeoutMs: READY_TIMEOUT_MS, what: `/cluster listing ${NODE_IDS.join(', ')}` });
	}
	timings.clusterViewMs = Date.now() - t1;
	console.log(`cluster start: every node lists ${NODE_IDS.join(', ')} in /cluster after ${timings.clusterViewMs} ms`);
	await session.launchBrowser();
}

// Page A on n1: mic + simulcast webcam, consumes nothing.
const producer = () => session.producer(cluster.nodes.n1, 'A');

// Page B on n3: consumes only, once A produces.
async function consumer() {
	await producer();
	return session.consumer(cluster.nodes.n3, 'B');
}

async function teardown() {
	await stopCluster(cluster);
	if (etcd) console.log(`etcd stopped: ${JSON.stringify(await etcd.stop())}`);
	console.log(`timings: ${JSON.stringify(timings)}`);
}

session.test('n1, n2 and n3 register in etcd and find each other', async () => {
	await assertHealthzNodeIds(cluster);
	for (const n of Object.values(cluster.nodes)) {
		const view = await fetchAdminJson(n, '/cluster');
		assert.deepEqual(clusterNodeIds(view), [...NODE_IDS].sort(),
			`node ${n.label}: /cluster should list exactly ${NODE_IDS.join(', ')}: ${JSON.stringify(view)}`);
	}
});

session.test('B on n3 consumes A\'s mic and webcam from n1', async () => {
	const b = await consumer();
	// A reaches B in the join response, or by newPeer when n3's view of the room arrives
	// after B's join was answered.
	await waitForPeer(b, 'A', { what: 'B (n3) to see A (n1) as a peer (join response or newPeer)' });
	const first = await waitForStats(b, (st) => st.video.framesDecoded > 0,
		{ timeoutMs: MEDIA_TIMEOUT_MS, intervalMs: 100, what: 'B\'s first decoded video frame (n1 -> n3)' });
	timings.firstFrameMs = Date.now() - b.openedAt;
	console.log(`B: first decoded frame ${timings.firstFrameMs} ms after opening B (${first.video.frameWidth}x${first.video.frameHeight})`);
	// B's media comes from n3 (its own node), which got it from n1 over a pipe.
	await assertMediaFlows(b, {
		via: 'n1 -> n3', from: 'A', rtcPort: cluster.nodes.n3.rtcPort, timeoutMs: MEDIA_TIMEOUT_MS, sampleMs: SAMPLE_MS,
	});
	await assertPipeCarried(cluster, 'n1', 'n3');
});

session.test('A on n1 sees B (on n3) as a peer', async () => {
	const a = await producer();
	await consumer();
	await waitForPeer(a, 'B', { what: 'A to learn about B (newPeer from n3)', noErrors: true });
});

session.test('n3\'s /cluster lists n1, n2, n3 and the room with A and B', async () => {
	await consumer();
	const view = await waitForAdminJson(cluster.nodes.n3, '/cluster',
		(v) => seesAllNodes(v) && ['A', 'B'].every((p) => (clusterRoomPeerIds(v, roomId) || []).includes(p)),
		{ timeoutMs: 10000, what: `nodes ${NODE_IDS.join(', ')} and room ${roomId} with peers A and B` });
	console.log(`n3 /cluster: nodes ${JSON.stringify(clusterNodeIds(view))}, room ${roomId} peers ${JSON.stringify(clusterRoomPeerIds(view, roomId))}`);
	assert.deepEqual(clusterNodeIds(view), [...NODE_IDS].sort());
	assert.deepEqual(clusterRoomPeerIds(view, roomId), ['A', 'B']);
});
