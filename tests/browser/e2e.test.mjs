// End-to-end: real pipemesh server + headless Chromium running the demo page.
//   A produces fake mic + fake webcam (simulcast), B consumes over UDP,
//   C consumes with forceTcp. Media must flow and keep flowing.
// Needs ../../target/debug/pipemesh (cargo build) or PIPEMESH_BIN; fails (never
// skips) when no server can be started. Run: npm test
import assert from 'node:assert/strict';
import { startPipemesh, waitForStats } from './harness.mjs';
import { Session, assertMediaFlows, assertLayerSwitches } from './cluster-helpers.mjs';

const MEDIA_TIMEOUT_MS = Number(process.env.PM_MEDIA_TIMEOUT_MS || 30000);
const SAMPLE_MS = 2000;
const session = new Session(`e2e-${process.pid}-${Date.now().toString(36)}`, { setup, teardown });

let server = null;

async function setup() {
	try {
		server = await startPipemesh();
	} catch (e) {
		throw new Error(`no pipemesh server could be started, so the browser e2e test cannot run:\n${e.message}`);
	}
	session.addNodes([server]);
	await session.launchBrowser();
}

// Page A: produces mic + webcam, consumes nothing. Shared by every test.
const producer = () => session.producer(server, 'A');

async function teardown() {
	if (server) {
		const r = await server.stop();
		console.log(`pipemesh stopped (code ${r.code}, signal ${r.signal})`);
	}
}

session.test('UDP: B consumes A\'s mic and simulcast webcam', async () => {
	await producer();
	const b = await session.consumer(server, 'B');
	const s = await assertMediaFlows(b, { label: 'B (udp)', timeoutMs: MEDIA_TIMEOUT_MS, sampleMs: SAMPLE_MS });
	assert.equal(s.transportStates.recv, 'connected');
});

session.test('TCP: C (forceTcp) consumes A\'s mic and webcam', async () => {
	await producer();
	const c = await session.consumer(server, 'C', 'forceTcp=true');
	const s = await assertMediaFlows(c, { label: 'C (forceTcp)', timeoutMs: MEDIA_TIMEOUT_MS, sampleMs: SAMPLE_MS });
	assert.equal(s.transportStates.recv, 'connected');
	const proto = s.ice.recv && s.ice.recv.protocol;
	if (proto) assert.equal(proto, 'tcp', `C asked for forceTcp but its selected ICE pair is ${JSON.stringify(s.ice.recv)}`);
	else console.log('C: selected ICE candidate pair not reported by getStats; protocol not checked');
});

// Simulcast: the consumer follows setConsumerPreferredLayers, switching on keyframes, and the
// decoder keeps running across switches (sequence numbers, timestamps and VP8 picture ids
// stay continuous).
session.test('simulcast: D switches layers with setConsumerPreferredLayers', async () => {
	const a = await producer();
	// The lowest and a higher layer must both be flowing before we can switch between them.
	await waitForStats(a, (st) => st.sent.video.streams >= 2, { timeoutMs: MEDIA_TIMEOUT_MS, what: 'A sending 2+ simulcast layers' });
	const d = await session.consumer(server, 'D');
	const s = await assertMediaFlows(d, { label: 'D (simulcast)', timeoutMs: MEDIA_TIMEOUT_MS, sampleMs: SAMPLE_MS });
	const video = s.consumerList.find((c) => c.kind === 'video');
	assert.equal(video.type, 'simulcast');
	await assertLayerSwitches(d, video, { timeoutMs: MEDIA_TIMEOUT_MS });
});
