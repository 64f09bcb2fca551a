// Server-less checks of the demo page: the bundle loads in headless Chromium,
// window.pm exists, a dead signaling URL gives a clear error, mediasoup-client's
// Device loads from a router-capabilities fixture, and a send transport
// (with locally faked server answers) produces mic + simulcast webcam.
// Run: npm run test:page
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HERE, startStaticServer, launchBrowser, openPage, waitForStats } from './harness.mjs';

const routerCaps = JSON.parse(readFileSync(join(HERE, 'fixtures', 'router-rtp-capabilities.json'), 'utf8'));

let web;
let browser;
let peer;

before(async () => {
	web = await startStaticServer();
	browser = await launchBrowser();
	// Port 1 on loopback: nothing listens there, so the WebSocket fails at once.
	peer = await openPage(browser, `${web.baseUrl}/?roomId=t&peerId=x&server=ws://127.0.0.1:1`, 'X');
});

after(async () => {
	if (peer) await peer.page.evaluate(() => window.pm.close()).catch(() => {});
	if (browser) await browser.close();
	if (web) await web.close();
});

test('page loads the bundle and exposes window.pm', async () => {
	const info = await peer.page.evaluate(() => ({
		hasReady: window.pm.ready instanceof Promise,
		hasStats: typeof window.pm.stats === 'function',
		hasClose: typeof window.pm.close === 'function',
		version: window.pm.version,
		options: window.pm.options,
		title: document.title,
		roomText: document.getElementById('room-id').textContent,
	}));
	console.log(`mediasoup-client ${info.version} in ${await browser.version()}`);
	assert.ok(info.hasReady && info.hasStats && info.hasClose, JSON.stringify(info));
	assert.match(info.version, /^3\./);
	assert.equal(info.title, 'pipemesh demo');
	assert.equal(info.roomText, 't');
	assert.deepEqual(
		{ ...info.options },
		{ roomId: 't', peerId: 'x', displayName: 'x', produce: true, consume: true, forceTcp: false, simulcast: true, token: null, server: 'ws://127.0.0.1:1' },
	);
});

test('unreachable signaling server gives a clear error and rejects pm.ready', async () => {
	const s = await waitForStats(peer, (st) => st.errors.length > 0, { timeoutMs: 15000, what: 'a connection error' });
	console.log(`errors: ${JSON.stringify(s.errors)}`);
	assert.match(s.errors[0], /cannot connect to signaling server ws:\/\/127\.0\.0\.1:1\/\?roomId=t&peerId=x/);
	assert.equal(s.joined, false);
	assert.equal(s.consumers, 0);
	assert.equal(s.producers, 0);
	const ready = await peer.page.evaluate(() => window.pm.ready.then(() => 'resolved', (e) => `rejected: ${e.message}`));
	assert.match(ready, /^rejected: signaling: cannot connect/);
});

test('mediasoup-client Device loads from the router capabilities fixture', async () => {
	const r = await peer.page.evaluate(async (caps) => {
		const device = await window.pm.loadDevice(caps);
		return {
			handlerName: device.handlerName,
			loaded: device.loaded,
			audio: device.canProduce('audio'),
			video: device.canProduce('video'),
			codecs: device.rtpCapabilities.codecs.map((c) => `${c.mimeType}/${c.preferredPayloadType}`),
		};
	}, routerCaps);
	console.log(`device: ${JSON.stringify(r)}`);
	assert.equal(r.loaded, true);
	assert.match(r.handlerName, /^Chrome/);
	assert.equal(r.audio, true);
	assert.equal(r.video, true);
	assert.ok(r.codecs.includes('audio/opus/100'), r.codecs.join());
	assert.ok(r.codecs.includes('video/VP8/101'), r.codecs.join());
});

test('send transport produces mic and 3-layer simulcast webcam (server answers faked in-page)', async () => {
	const r = await peer.page.evaluate(async (caps) => {
		const { pm } = window;
		const device = await pm.loadDevice(caps);
		const transport = device.createSendTransport({
			id: 'fake-send',
			iceParameters: { usernameFragment: 'abcdefgh12345678', password: 'abcdefghijklmnopqrstuvwxyz012345', iceLite: true },
			iceCandidates: [{ foundation: 'udpcandidate', ip: '127.0.0.1', address: '127.0.0.1', port: 9, priority: 1076302079, protocol: 'udp', type: 'host' }],
			dtlsParameters: {
				role: 'auto',
				fingerprints: [{ algorithm: 'sha-256', value: Array.from({ length: 32 }, (_, i) => (i * 7 % 256).toString(16).padStart(2, '0').toUpperCase()).join(':') }],
			},
		});
		const produced = [];
		let connected = null;
		transport.on('connect', ({ dtlsParameters }, cb) => { connected = dtlsParameters; cb(); });
		transport.on('produce', ({ kind, rtpParameters, appData }, cb) => {
			produced.push({ kind, rtpParameters, appData });
			cb({ id: `fake-producer-${produced.length}` });
		});
		const mic = (await navigator.mediaDevices.getUserMedia({ audio: true })).getAudioTracks()[0];
		const cam = (await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } } })).getVideoTracks()[0];
		const camSettings = cam.getSettings();
		const pa = await transport.produce({ track: mic, codecOptions: { opusStereo: true, opusDtx: true, opusFec: true, opusNack: true }, appData: { source: 'mic' } });
		const pv = await transport.produce({
			track: cam,
			encodings: pm.encodings.map((e) => ({ ...e })),
			codecOptions: { videoGoogleStartBitrate: 1000 },
			appData: { source: 'webcam' },
		});
		const out = {
			ids: [pa.id, pv.id],
			connectedRole: connected && connected.role,
			fingerprints: connected ? connected.fingerprints.length : 0,
			camSettings: { width: camSettings.width, height: camSettings.height },
			produced: produced.map((p) => ({
				kind: p.kind,
				appData: p.appData,
				codec: p.rtpParameters.codecs[0].mimeType,
				pt: p.rtpParameters.codecs[0].payloadType,
				mid: p.rtpParameters.mid,
				encodings: p.rtpParameters.encodings.map((e) => ({ rid: e.rid, ssrc: e.ssrc, maxBitrate: e.maxBitrate, scaleResolutionDownBy: e.scaleResolutionDownBy })),
				headerExtensions: p.rtpParameters.headerExtensions.map((h) => h.uri),
			})),
		};
		transport.close();
		mic.stop();
		cam.stop();
		return out;
	}, routerCaps);
	console.log(`produce: ${JSON.stringify(r)}`);
	assert.deepEqual(r.ids, ['fake-producer-1', 'fake-producer-2']);
	assert.ok(['client', 'server'].includes(r.connectedRole), r.connectedRole);
	assert.ok(r.fingerprints >= 1);
	assert.deepEqual(r.camSettings, { width: 640, height: 480 });
	const [audio, video] = r.produced;
	assert.equal(audio.kind, 'audio');
	assert.equal(audio.codec, 'audio/opus');
	assert.deepEqual(audio.appData, { source: 'mic' });
	assert.equal(video.kind, 'video');
	assert.equal(video.codec, 'video/VP8');
	assert.equal(video.encodings.length, 3, JSON.stringify(video.encodings));
	assert.deepEqual(video.encodings.map((e) => e.maxBitrate), [500000, 1000000, 5000000]);
	assert.ok(video.encodings.every((e) => e.rid), `simulcast layers must carry rids: ${JSON.stringify(video.encodings)}`);
});
