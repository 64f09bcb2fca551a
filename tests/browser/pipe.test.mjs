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
import assert from 'node:assert/strict';
import { startPipeCluster, waitForPipeLinks, waitForStats } from './harness.mjs';
import {
	Session, stopCluster, assertHealthzNodeIds, waitForPeer, assertMediaFlows, assertPipeCarried, assertLayerSwitches,
} from './cluster-helpers.mjs';

const MEDIA_TIMEOUT_MS = Number(process.env.PM_MEDIA_TIMEOUT_MS || 30000);
const LINK_TIMEOUT_MS = Number(process.env.PM_LINK_TIMEOUT_MS || 20000);
const SAMPLE_MS = 3000;
const TEST_TIMEOUT_MS = 120000; // backstop only; a passing run takes far less
const session = new Session(`pipe-${process.pid}-${Date.now().toString(36)}`, {
	setup, teardown: () => stopCluster(cluster), testTimeoutMs: TEST_TIMEOUT_MS,
});

let cluster = null;

async function setup() {
	const t0 = Date.now();
	try {
		cluster = await startPipeCluster(['a', 'b'], { secure: !process.env.PM_INSECURE_PIPES });
	} catch (e) {
		throw new Error(`the two pipemesh nodes could not be started, so the pipe e2e test cannot run:\n${e.message}`);
	}
	session.addNodes(Object.values(cluster.nodes));
	await waitForPipeLinks(cluster, { timeoutMs: LINK_TIMEOUT_MS });
	console.log(`pipe link a <-> b up (${Date.now() - t0} ms after start)`);
	await session.launchBrowser();
}

// Page A on node a: mic + simulcast webcam, consumes nothing.
const producer = () => session.producer(cluster.nodes.a, 'A');

// Page B on node b: consumes only, once A produces.
async function consumer() {
	await producer();
	return session.consumer(cluster.nodes.b, 'B');
}

session.test('nodes a and b bring up the pipe link', async () => {
	await assertHealthzNodeIds(cluster);
});

session.test('B on node b consumes A\'s mic and simulcast webcam from node a', async () => {
	const b = await consumer();
	// A reaches B in the join response, or by newPeer when node b's view of the room
	// (gossiped from node a when B's session opened) arrives after B's join was answered.
	await waitForPeer(b, 'A', { what: 'B (node b) to see A (node a) as a peer (join response or newPeer)' });
	// B's media comes from node b (its own node), which got it from node a over the pipe.
	const s = await assertMediaFlows(b, {
		via: 'via the pipe', from: 'A', rtcPort: cluster.nodes.b.rtcPort, timeoutMs: MEDIA_TIMEOUT_MS, sampleMs: SAMPLE_MS,
	});
	await assertPipeCarried(cluster, 'a', 'b');
	assert.equal(s.consumerList.find((c) => c.kind === 'video').type, 'simulcast');
});

session.test('A on node a sees B (on node b) as a peer', async () => {
	const a = await producer();
	await consumer();
	await waitForPeer(a, 'B', { what: 'A to learn about B (newPeer across the pipe)', noErrors: true });
});

// Node a forwards every simulcast encoding over the pipe once; node b's consumer picks
// among them. Same checks as e2e test D: the 160x120 layer for spatial layer 0, a higher
// one again for spatial layer 2, with the decoder running across the switches.
session.test('simulcast across the pipe: B switches layers with setConsumerPreferredLayers', async () => {
	const a = await producer();
	await waitForStats(a, (st) => st.sent.video.streams >= 2, { timeoutMs: MEDIA_TIMEOUT_MS, what: 'A sending 2+ simulcast layers' });
	const b = await consumer();
	const s = await waitForStats(b, (st) => st.consumers >= 2 && st.video.framesDecoded > 0,
		{ timeoutMs: MEDIA_TIMEOUT_MS, what: 'B decoding video' });
	const video = s.consumerList.find((c) => c.kind === 'video');
	assert.equal(video.type, 'simulcast');
	await assertLayerSwitches(b, video, { timeoutMs: MEDIA_TIMEOUT_MS, reportedLayers: true });
});
