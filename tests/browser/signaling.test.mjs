// Protocol conformance of the demo page against a scripted mock protoo server
// (no media flows: ICE parameters are fake). Checks the exact requests the page
// sends (mediasoup-demo v3 order and payloads) and that it handles the server's
// newConsumer requests and consumer/peer notifications. It doubles as a
// reference for what pipemesh's signaling must answer. Run: npm run test:page
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { HERE, startStaticServer, launchBrowser, openPage, waitReady, waitForStats, stats } from './harness.mjs';

const routerCaps = JSON.parse(readFileSync(join(HERE, 'fixtures', 'router-rtp-capabilities.json'), 'utf8'));

const fakeTransport = (id) => ({
	id,
	iceParameters: { usernameFragment: `ufrag${id}`.padEnd(16, 'x'), password: 'abcdefghijklmnopqrstuvwxyz012345', iceLite: true },
	iceCandidates: [{ foundation: 'tcpcandidate', ip: '127.0.0.1', address: '127.0.0.1', port: 9, priority: 1076302079, protocol: 'tcp', type: 'host', tcpType: 'passive' }],
	dtlsParameters: {
		role: 'auto',
		fingerprints: [{ algorithm: 'sha-256', value: Array.from({ length: 32 }, (_, i) => (i * 13 % 256).toString(16).padStart(2, '0').toUpperCase()).join(':') }],
	},
	sctpParameters: undefined,
});

const consumerParams = {
	audio: {
		codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2, parameters: { useinbandfec: 1 }, rtcpFeedback: [{ type: 'transport-cc' }] }],
		headerExtensions: [
			{ uri: 'urn:ietf:params:rtp-hdrext:sdes:mid', id: 1, encrypt: false, parameters: {} },
			{ uri: 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01', id: 5, encrypt: false, parameters: {} },
		],
		encodings: [{ ssrc: 11111111 }],
		rtcp: { cname: 'zcname', reducedSize: true },
		mid: '0',
	},
	video: {
		codecs: [
			{ mimeType: 'video/VP8', payloadType: 101, clockRate: 90000, parameters: {}, rtcpFeedback: [{ type: 'nack' }, { type: 'nack', parameter: 'pli' }, { type: 'ccm', parameter: 'fir' }, { type: 'transport-cc' }] },
			{ mimeType: 'video/rtx', payloadType: 102, clockRate: 90000, parameters: { apt: 101 }, rtcpFeedback: [] },
		],
		headerExtensions: [
			{ uri: 'urn:ietf:params:rtp-hdrext:sdes:mid', id: 1, encrypt: false, parameters: {} },
			{ uri: 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01', id: 5, encrypt: false, parameters: {} },
		],
		encodings: [{ ssrc: 22222222, rtx: { ssrc: 22222223 }, scalabilityMode: 'L3T1' }],
		rtcp: { cname: 'zcname', reducedSize: true },
		mid: '1',
	},
};

// A minimal protoo server: HTTP (static dist/ on the same port, like pipemesh) + WebSocket.
function startMock() {
	const log = { connections: [], requests: [], responses: [], sockets: [] };
	let seq = 0;
	const pending = new Map();
	const wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has('protoo') ? 'protoo' : false) });
	const api = {
		log,
		send(ws, msg) { ws.send(JSON.stringify(msg)); },
		request(ws, method, data) {
			const id = ++seq + 1000;
			api.send(ws, { request: true, id, method, data });
			return new Promise((res, rej) => pending.set(id, { res, rej, method }));
		},
		notify(ws, method, data) { api.send(ws, { notification: true, method, data }); },
		onJoined: null,
	};
	let transports = 0;
	let producers = 0;
	wss.on('connection', (ws, req) => {
		log.connections.push({ url: req.url, protocol: ws.protocol });
		log.sockets.push(ws);
		ws.on('message', (raw) => {
			const m = JSON.parse(String(raw));
			if (m.response) {
				log.responses.push(m);
				const p = pending.get(m.id);
				if (p) { pending.delete(m.id); if (m.ok) p.res(m.data); else p.rej(new Error(`${p.method} rejected: ${m.errorCode} ${m.errorReason}`)); }
				return;
			}
			if (!m.request) return;
			log.requests.push({ method: m.method, data: m.data });
			const ok = (data = {}) => api.send(ws, { response: true, id: m.id, ok: true, data });
			switch (m.method) {
				case 'getRouterRtpCapabilities': ok(routerCaps); break;
				case 'createWebRtcTransport': ok(fakeTransport(`t${++transports}`)); break;
				case 'connectWebRtcTransport': ok(); break;
				case 'join':
					ok({ peers: [{ id: 'Z', displayName: 'zed', device: { flag: 'chrome', name: 'Chrome', version: '1' } }] });
					setTimeout(() => api.onJoined && api.onJoined(ws), 10);
					break;
				case 'produce': ok({ id: `p${++producers}` }); break;
				default: api.send(ws, { response: true, id: m.id, ok: false, errorCode: 500, errorReason: `unknown method ${m.method}` });
			}
		});
	});
	return { wss, api };
}

let web;
let mock;
let browser;
let peer;
const acceptances = [];

before(async () => {
	mock = startMock();
	web = await startStaticServer();
	// Same port serves the page and the WebSocket, as pipemesh's signaling listener does.
	web.server.on('upgrade', (req, socket, head) => mock.wss.handleUpgrade(req, socket, head, (ws) => mock.wss.emit('connection', ws, req)));
	mock.api.onJoined = (ws) => {
		for (const [i, kind] of ['audio', 'video'].entries()) {
			acceptances.push(mock.api.request(ws, 'newConsumer', {
				peerId: 'Z',
				producerId: `zp-${kind}`,
				id: `zc-${kind}`,
				kind,
				rtpParameters: consumerParams[kind],
				type: kind === 'video' ? 'simulcast' : 'simple',
				appData: { source: i ? 'webcam' : 'mic' },
				producerPaused: false,
			}));
		}
	};
	browser = await launchBrowser();
	peer = await openPage(browser, `${web.baseUrl}/?roomId=R1&peerId=P&forceTcp=true`, 'P');
});

after(async () => {
	if (peer) await peer.page.evaluate(() => window.pm.close()).catch(() => {});
	if (browser) await browser.close();
	if (mock) mock.wss.close();
	if (web) await web.close();
});

test('page speaks mediasoup-demo v3 protoo: requests, order and payloads', async () => {
	await waitReady(peer, 20000);
	const { connections, requests } = mock.api.log;
	assert.equal(connections.length, 1);
	assert.equal(connections[0].url, '/?roomId=R1&peerId=P');
	assert.equal(connections[0].protocol, 'protoo');

	const methods = requests.map((r) => r.method);
	console.log(`request sequence: ${methods.join(', ')}`);
	assert.deepEqual(methods.slice(0, 4), ['getRouterRtpCapabilities', 'createWebRtcTransport', 'createWebRtcTransport', 'join']);
	const [, sendT, recvT, join] = requests;
	assert.deepEqual(sendT.data, { forceTcp: true, producing: true, consuming: false });
	assert.deepEqual(recvT.data, { forceTcp: true, producing: false, consuming: true });
	assert.equal(join.data.displayName, 'P');
	assert.deepEqual(Object.keys(join.data.device).sort(), ['flag', 'name', 'version']);
	assert.equal(join.data.device.flag, 'chrome');
	assert.ok(join.data.rtpCapabilities.codecs.some((c) => c.mimeType === 'video/VP8'));
	assert.ok(!('sctpCapabilities' in join.data));

	const produces = requests.filter((r) => r.method === 'produce');
	assert.deepEqual(produces.map((p) => [p.data.transportId, p.data.kind, p.data.appData.source]), [['t1', 'audio', 'mic'], ['t1', 'video', 'webcam']]);
	assert.equal(produces[1].data.rtpParameters.encodings.length, 3);
	assert.deepEqual(produces[1].data.rtpParameters.encodings.map((e) => e.rid), ['r0', 'r1', 'r2']);

	// Each transport is connected once, before its first produce/consume completes.
	const connects = requests.filter((r) => r.method === 'connectWebRtcTransport');
	assert.deepEqual(connects.map((c) => c.data.transportId).sort(), ['t1', 't2']);
	for (const c of connects) {
		assert.ok(['client', 'server'].includes(c.data.dtlsParameters.role));
		assert.ok(c.data.dtlsParameters.fingerprints.length > 0);
	}
	console.log(`sample produce request: ${JSON.stringify(produces[1].data)}`);
});

test('page accepts newConsumer and follows consumer/peer notifications', async () => {
	const accepted = await Promise.all(acceptances);
	assert.equal(accepted.length, 2);
	let s = await waitForStats(peer, (st) => st.consumers === 2, { timeoutMs: 5000, what: '2 consumers' });
	assert.deepEqual(s.consumerList.map((c) => [c.id, c.kind, c.peerId, c.type]), [['zc-audio', 'audio', 'Z', 'simple'], ['zc-video', 'video', 'Z', 'simulcast']]);
	assert.equal(await peer.page.locator('video[data-consumer-id="zc-video"]').count(), 1);
	assert.equal(await peer.page.locator('audio[data-consumer-id="zc-audio"]').count(), 1);

	const ws = mock.api.log.sockets[0];
	mock.api.notify(ws, 'consumerScore', { consumerId: 'zc-video', score: { score: 10, producerScore: 9, producerScores: [9, 9, 9] } });
	mock.api.notify(ws, 'consumerLayersChanged', { consumerId: 'zc-video', spatialLayer: 2, temporalLayer: 0 });
	mock.api.notify(ws, 'producerScore', { producerId: 'p2', score: [{ ssrc: 1, rid: 'r0', score: 10 }] });
	mock.api.notify(ws, 'consumerPaused', { consumerId: 'zc-video' });
	s = await waitForStats(peer, (st) => st.consumerList.find((c) => c.id === 'zc-video')?.paused === true, { timeoutMs: 5000, what: 'video consumer paused' });
	const v = s.consumerList.find((c) => c.id === 'zc-video');
	assert.deepEqual(v.layers, { spatialLayer: 2, temporalLayer: 0 });
	assert.equal(v.score.score, 10);
	assert.deepEqual(s.producerList.find((p) => p.id === 'p2').score, [{ ssrc: 1, rid: 'r0', score: 10 }]);
	mock.api.notify(ws, 'consumerResumed', { consumerId: 'zc-video' });
	await waitForStats(peer, (st) => st.consumerList.find((c) => c.id === 'zc-video')?.paused === false, { timeoutMs: 5000, what: 'video consumer resumed' });

	mock.api.notify(ws, 'newPeer', { id: 'Y', displayName: 'why', device: { flag: 'chrome' } });
	await waitForStats(peer, (st) => st.peers === 2, { timeoutMs: 5000, what: '2 peers after newPeer' });
	mock.api.notify(ws, 'consumerClosed', { consumerId: 'zc-audio' });
	await waitForStats(peer, (st) => st.consumers === 1, { timeoutMs: 5000, what: 'audio consumer closed' });
	assert.equal(await peer.page.locator('audio[data-consumer-id="zc-audio"]').count(), 0);
	mock.api.notify(ws, 'peerClosed', { peerId: 'Z' });
	s = await waitForStats(peer, (st) => st.consumers === 0 && st.peers === 1, { timeoutMs: 5000, what: 'peer Z and its consumers gone' });
	assert.equal(await peer.page.locator('video[data-consumer-id="zc-video"]').count(), 0);
	assert.deepEqual(s.errors, []);
	const final = await stats(peer);
	console.log(`final: phase ${final.phase}, producers ${final.producers}, peers ${final.peers}, transports ${JSON.stringify(final.transportStates)}`);
});
