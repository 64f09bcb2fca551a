// pipemesh demo client: a small mediasoup-demo v3 RoomClient look-alike.
//
// It speaks mediasoup-demo v3's protoo signaling with the public npm
// mediasoup-client (v3) and protoo-client, so it works against pipemesh (or
// against mediasoup-demo's server) unchanged. It is bundled by build.mjs into
// dist/app.js (IIFE) and loaded by dist/index.html.
//
// Test hooks on window.pm: ready (promise), stats(), close(), plus a few
// internals (device, peer, options, mediasoupClient) for page-level tests.

import * as mediasoupClient from 'mediasoup-client';
import * as protooClient from 'protoo-client';

// Same as mediasoup-demo v3's WEBCAM_SIMULCAST_ENCODINGS (minus scalabilityMode).
export const WEBCAM_SIMULCAST_ENCODINGS = [
	{ scaleResolutionDownBy: 4, maxBitrate: 500000 },
	{ scaleResolutionDownBy: 2, maxBitrate: 1000000 },
	{ scaleResolutionDownBy: 1, maxBitrate: 5000000 },
];
export const WEBCAM_CODEC_OPTIONS = { videoGoogleStartBitrate: 1000 };
export const MIC_CODEC_OPTIONS = { opusStereo: true, opusDtx: true, opusFec: true, opusNack: true };
export const VIDEO_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };

// ---------------------------------------------------------------- options

function parseBool(value, dflt) {
	if (value === null || value === undefined || value === '') return dflt;
	const v = String(value).toLowerCase();
	if (['1', 'true', 'yes', 'on'].includes(v)) return true;
	if (['0', 'false', 'no', 'off'].includes(v)) return false;
	return dflt;
}

function randomId(len = 8) {
	const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
	let s = '';
	const bytes = crypto.getRandomValues(new Uint8Array(len));
	for (const b of bytes) s += chars[b % chars.length];
	return s;
}

function defaultServer() {
	if (location.protocol === 'http:' || location.protocol === 'https:') {
		return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
	}
	return 'ws://127.0.0.1:4443'; // e.g. opened from file://
}

function readOptions() {
	const q = new URLSearchParams(location.search);
	let roomId = q.get('roomId');
	if (!roomId) {
		// Like mediasoup-demo: make up a room and put it in the URL so it can be shared.
		roomId = randomId(8);
		q.set('roomId', roomId);
		try { history.replaceState(null, '', `${location.pathname}?${q}`); } catch { /* file:// */ }
	}
	const server = (q.get('server') || defaultServer()).replace(/\/+$/, '');
	return {
		roomId,
		peerId: q.get('peerId') || randomId(8),
		displayName: q.get('displayName') || q.get('peerId') || 'pipemesh-demo',
		produce: parseBool(q.get('produce'), true),
		consume: parseBool(q.get('consume'), true),
		forceTcp: parseBool(q.get('forceTcp'), false),
		simulcast: parseBool(q.get('simulcast'), true),
		// A room token (`pipemesh token`), required by nodes started with --auth-secret-file.
		token: q.get('token') || null,
		server,
	};
}

// ---------------------------------------------------------------- state

const options = readOptions();
const state = {
	phase: 'loading',
	joined: false,
	joinPeerIds: [], // the peers listed in the join response (others arrive by newPeer)
	peers: new Map(), // peerId -> { id, displayName, device }
	consumers: new Map(), // consumerId -> { consumer, peerId, paused, producerPaused, score, layers }
	producers: new Map(), // producerId -> { producer, source, score }
	transportStates: {},
	errors: [],
	events: [],
	device: null,
	peer: null,
	sendTransport: null,
	recvTransport: null,
	localStreams: [],
	closed: false,
};

const $ = (id) => document.getElementById(id);

function errText(e) {
	if (e === null || e === undefined) return String(e);
	if (typeof e === 'string') return e;
	return e.message ? `${e.name && e.name !== 'Error' ? `${e.name}: ` : ''}${e.message}` : String(e);
}

function logEvent(text) {
	const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
	state.events.push(line);
	if (state.events.length > 200) state.events.shift();
	const el = $('events');
	if (el) el.textContent = state.events.slice().reverse().join('\n');
}

function recordError(context, e) {
	const msg = `${context}: ${errText(e)}`;
	state.errors.push(msg);
	console.error(`[pipemesh] ${msg}`);
	logEvent(`ERROR ${msg}`);
	const el = $('errors');
	if (el) el.textContent = state.errors.join('\n');
}

function setPhase(phase) {
	state.phase = phase;
	const el = $('state');
	if (el) el.textContent = phase;
	logEvent(`state: ${phase}`);
}

window.addEventListener('error', (ev) => recordError('uncaught', ev.error || ev.message));
window.addEventListener('unhandledrejection', (ev) => recordError('unhandled rejection', ev.reason));

// pm.ready: resolved when joined and producing (whatever `produce` asked for),
// rejected on the first fatal error (e.g. signaling connection failure).
let resolveReady;
let rejectReady;
const ready = new Promise((res, rej) => { resolveReady = res; rejectReady = rej; });
ready.catch(() => { /* reported through pm.stats().errors; avoid unhandled rejection noise */ });

function fail(context, e) {
	recordError(context, e);
	rejectReady(new Error(`${context}: ${errText(e)}`));
	setPhase('failed');
}

// ---------------------------------------------------------------- media elements

function remoteContainer(peerId) {
	let box = document.querySelector(`.peer[data-peer-id="${CSS.escape(peerId)}"]`);
	if (!box) {
		box = document.createElement('div');
		box.className = 'peer';
		box.dataset.peerId = peerId;
		const title = document.createElement('div');
		const p = state.peers.get(peerId);
		title.textContent = `peer ${peerId}${p && p.displayName ? ` (${p.displayName})` : ''}`;
		box.appendChild(title);
		$('remote').appendChild(box);
	}
	return box;
}

function attachConsumer(consumer, peerId) {
	const el = document.createElement(consumer.kind === 'video' ? 'video' : 'audio');
	el.id = `consumer-${consumer.id}`;
	el.dataset.consumerId = consumer.id;
	el.autoplay = true;
	el.playsInline = true;
	el.controls = consumer.kind === 'audio';
	if (consumer.kind === 'video') el.muted = true; // video has no audio; muted keeps autoplay happy
	el.srcObject = new MediaStream([consumer.track]);
	remoteContainer(peerId).appendChild(el);
	el.play().catch((e) => logEvent(`play() of ${consumer.kind} consumer ${consumer.id} deferred: ${errText(e)}`));
}

function detachConsumer(consumerId) {
	const el = document.getElementById(`consumer-${consumerId}`);
	if (el) {
		el.srcObject = null;
		el.remove();
	}
}

function closeConsumer(consumerId, why) {
	const c = state.consumers.get(consumerId);
	if (!c) return;
	try { c.consumer.close(); } catch { /* already closed */ }
	state.consumers.delete(consumerId);
	detachConsumer(consumerId);
	logEvent(`consumer ${consumerId} closed (${why})`);
}

// ---------------------------------------------------------------- signaling

async function createDevice() {
	// Device.factory() (newer mediasoup-client) does a more careful browser detection.
	if (typeof mediasoupClient.Device.factory === 'function') return mediasoupClient.Device.factory();
	return new mediasoupClient.Device();
}

function trackTransportState(transport, name) {
	state.transportStates[name] = transport.connectionState;
	transport.on('connectionstatechange', (s) => {
		state.transportStates[name] = s;
		logEvent(`${name} transport: ${s}`);
		if (s === 'failed') recordError(`${name} transport`, 'ICE/DTLS connection failed');
	});
}

async function createTransport(peer, device, producing) {
	const name = producing ? 'send' : 'recv';
	const info = await peer.request('createWebRtcTransport', {
		forceTcp: options.forceTcp,
		producing,
		consuming: !producing,
		sctpCapabilities: undefined,
	});
	const { id, iceParameters, iceCandidates, dtlsParameters, sctpParameters } = info;
	const params = {
		id,
		iceParameters,
		iceCandidates,
		dtlsParameters,
		sctpParameters,
		iceServers: [],
	};
	const transport = producing ? device.createSendTransport(params) : device.createRecvTransport(params);
	trackTransportState(transport, name);

	transport.on('connect', ({ dtlsParameters: localDtls }, callback, errback) => {
		peer.request('connectWebRtcTransport', { transportId: transport.id, dtlsParameters: localDtls })
			.then(callback)
			.catch((e) => { recordError(`connectWebRtcTransport (${name})`, e); errback(e); });
	});

	if (producing) {
		transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
			peer.request('produce', { transportId: transport.id, kind, rtpParameters, appData })
				.then(({ id: producerId }) => callback({ id: producerId }))
				.catch((e) => { recordError(`produce (${kind})`, e); errback(e); });
		});
	}
	return transport;
}

async function handleNewConsumer(request, accept, reject) {
	const { peerId, producerId, id, kind, rtpParameters, type, appData, producerPaused } = request.data;
	if (!options.consume || !state.recvTransport) {
		reject(403, 'I do not want to consume');
		return;
	}
	try {
		const consumer = await state.recvTransport.consume({
			id,
			producerId,
			kind,
			rtpParameters,
			appData: { ...(appData || {}), peerId },
		});
		state.consumers.set(consumer.id, {
			consumer,
			peerId,
			type,
			paused: false,
			producerPaused: Boolean(producerPaused),
			score: null,
			layers: null,
		});
		consumer.on('transportclose', () => closeConsumer(consumer.id, 'transport closed'));
		consumer.on('trackended', () => logEvent(`consumer ${consumer.id} track ended`));
		attachConsumer(consumer, peerId);
		logEvent(`new ${kind} consumer ${id} (${type}) for producer ${producerId} of peer ${peerId}`);
		// The server resumes the (paused) server-side consumer once we accept.
		accept();
	} catch (e) {
		recordError(`newConsumer ${id}`, e);
		reject(500, String(e));
	}
}

function handleNotification(notification) {
	const { method, data = {} } = notification;
	switch (method) {
		case 'newPeer':
			state.peers.set(data.id, data);
			logEvent(`peer ${data.id} joined (${data.displayName || ''})`);
			break;
		case 'peerClosed': {
			state.peers.delete(data.peerId);
			for (const [cid, c] of state.consumers) if (c.peerId === data.peerId) closeConsumer(cid, 'peer closed');
			const box = document.querySelector(`.peer[data-peer-id="${CSS.escape(data.peerId)}"]`);
			if (box) box.remove();
			logEvent(`peer ${data.peerId} left`);
			break;
		}
		case 'consumerClosed':
			closeConsumer(data.consumerId, 'closed by server');
			break;
		case 'consumerPaused': {
			const c = state.consumers.get(data.consumerId);
			if (c) { c.producerPaused = true; c.consumer.pause(); }
			logEvent(`consumer ${data.consumerId} paused`);
			break;
		}
		case 'consumerResumed': {
			const c = state.consumers.get(data.consumerId);
			if (c) { c.producerPaused = false; c.consumer.resume(); }
			logEvent(`consumer ${data.consumerId} resumed`);
			break;
		}
		case 'consumerLayersChanged': {
			const c = state.consumers.get(data.consumerId);
			if (c) c.layers = { spatialLayer: data.spatialLayer, temporalLayer: data.temporalLayer };
			logEvent(`consumer ${data.consumerId} layers: spatial ${data.spatialLayer} temporal ${data.temporalLayer}`);
			break;
		}
		case 'consumerScore': {
			const c = state.consumers.get(data.consumerId);
			if (c) c.score = data.score;
			break;
		}
		case 'producerScore': {
			const p = state.producers.get(data.producerId);
			if (p) p.score = data.score;
			break;
		}
		default:
			logEvent(`notification ${method}`);
	}
}

async function produceMedia(device, transport) {
	if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
		throw new Error('navigator.mediaDevices.getUserMedia is unavailable (page not in a secure context? use https or localhost)');
	}
	if (device.canProduce('audio')) {
		const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
		state.localStreams.push(stream);
		const track = stream.getAudioTracks()[0];
		const producer = await transport.produce({
			track,
			codecOptions: MIC_CODEC_OPTIONS,
			appData: { source: 'mic' },
		});
		state.producers.set(producer.id, { producer, source: 'mic', score: null });
		producer.on('transportclose', () => state.producers.delete(producer.id));
		logEvent(`producing mic: ${producer.id}`);
	} else {
		recordError('produce', 'device cannot produce audio');
	}
	if (device.canProduce('video')) {
		const stream = await navigator.mediaDevices.getUserMedia({ video: VIDEO_CONSTRAINTS });
		state.localStreams.push(stream);
		const track = stream.getVideoTracks()[0];
		$('local-video').srcObject = new MediaStream([track]);
		const producer = await transport.produce({
			track,
			encodings: options.simulcast ? WEBCAM_SIMULCAST_ENCODINGS.map((e) => ({ ...e })) : undefined,
			codecOptions: WEBCAM_CODEC_OPTIONS,
			appData: { source: 'webcam' },
		});
		state.producers.set(producer.id, { producer, source: 'webcam', score: null });
		producer.on('transportclose', () => state.producers.delete(producer.id));
		logEvent(`producing webcam: ${producer.id}`);
	} else {
		recordError('produce', 'device cannot produce video');
	}
}

async function onOpen(peer) {
	setPhase('connected');
	const device = await createDevice();
	state.device = device;
	const routerRtpCapabilities = await peer.request('getRouterRtpCapabilities');
	await device.load({ routerRtpCapabilities });
	logEvent(`device loaded (handler ${device.handlerName})`);

	if (options.produce) state.sendTransport = await createTransport(peer, device, true);
	if (options.consume) state.recvTransport = await createTransport(peer, device, false);

	const { peers } = await peer.request('join', {
		displayName: options.displayName,
		device: { flag: 'chrome', name: 'Chrome', version: chromeVersion() },
		rtpCapabilities: options.consume ? device.rtpCapabilities : undefined,
		sctpCapabilities: undefined,
	});
	state.joined = true;
	state.joinPeerIds = (peers || []).map((p) => p.id);
	for (const p of peers || []) state.peers.set(p.id, p);
	setPhase('joined');
	logEvent(`joined room ${options.roomId} with ${(peers || []).length} other peer(s)`);

	if (options.produce) await produceMedia(device, state.sendTransport);
	setPhase(options.produce ? 'joined+producing' : 'joined');
}

function chromeVersion() {
	const m = navigator.userAgent.match(/Chrom(?:e|ium)\/([\d.]+)/);
	return m ? m[1] : 'unknown';
}

function connect() {
	const url = `${options.server}/?roomId=${encodeURIComponent(options.roomId)}&peerId=${encodeURIComponent(options.peerId)}`
		+ (options.token ? `&token=${encodeURIComponent(options.token)}` : '');
	logEvent(`connecting to ${url}`);
	setPhase('connecting');
	const transport = new protooClient.WebSocketTransport(url);
	const peer = new protooClient.Peer(transport);
	state.peer = peer;
	let opened = false;

	peer.on('open', () => {
		if (opened) {
			// protoo reconnected after a drop: the old server-side state is gone.
			recordError('signaling', 'reconnected after a disconnection; reload the page to rejoin');
			return;
		}
		opened = true;
		onOpen(peer).then(
			() => resolveReady({ peerId: options.peerId, roomId: options.roomId }),
			(e) => fail('join', e),
		);
	});
	peer.on('failed', (attempt) => {
		const msg = `cannot connect to signaling server ${url} (WebSocket connection failed, attempt ${attempt})`;
		if (!opened && attempt === 1) fail('signaling', msg);
		else recordError('signaling', msg);
	});
	peer.on('disconnected', () => {
		recordError('signaling', 'WebSocket disconnected');
		setPhase('disconnected');
		for (const t of [state.sendTransport, state.recvTransport]) if (t) t.close();
		state.sendTransport = null;
		state.recvTransport = null;
		rejectReady(new Error('signaling: WebSocket disconnected'));
	});
	peer.on('close', () => {
		if (!state.closed) recordError('signaling', 'protoo peer closed');
		setPhase('closed');
		rejectReady(new Error('signaling: protoo peer closed'));
	});
	peer.on('request', (request, accept, reject) => {
		switch (request.method) {
			case 'newConsumer':
				handleNewConsumer(request, accept, reject);
				break;
			case 'newDataConsumer':
				reject(403, 'I do not want DataChannels');
				break;
			default:
				logEvent(`unknown request ${request.method}`);
				reject(500, `unknown method ${request.method}`);
		}
	});
	peer.on('notification', handleNotification);
}

// ---------------------------------------------------------------- stats

function pickSelectedPair(report) {
	let pair = null;
	let transportEntry = null;
	report.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) transportEntry = s; });
	if (transportEntry) pair = report.get(transportEntry.selectedCandidatePairId) || null;
	if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s; });
	if (!pair) return null;
	const local = report.get(pair.localCandidateId) || {};
	const remote = report.get(pair.remoteCandidateId) || {};
	return {
		state: pair.state,
		protocol: local.protocol || remote.protocol || null,
		localCandidateType: local.candidateType || null,
		remoteAddress: remote.address || remote.ip || null,
		remotePort: remote.port || null,
		remoteProtocol: remote.protocol || null,
		tcpType: local.tcpType || null,
	};
}

async function stats() {
	const out = {
		peerId: options.peerId,
		roomId: options.roomId,
		phase: state.phase,
		joined: state.joined,
		handlerName: state.device ? state.device.handlerName : null,
		peers: state.peers.size,
		peerList: [...state.peers.values()].map((p) => ({ id: p.id, displayName: p.displayName || null })),
		joinPeerIds: state.joinPeerIds.slice(),
		video: { framesDecoded: 0, framesReceived: 0, packetsReceived: 0, bytesReceived: 0, frameWidth: 0, frameHeight: 0 },
		audio: { packetsReceived: 0, bytesReceived: 0 },
		sent: {
			video: { packetsSent: 0, bytesSent: 0, framesEncoded: 0, streams: 0 },
			audio: { packetsSent: 0, bytesSent: 0 },
		},
		consumers: state.consumers.size,
		producers: state.producers.size,
		consumerList: [],
		producerList: [],
		transportStates: { ...state.transportStates },
		ice: {},
		errors: state.errors.slice(),
	};
	for (const [id, c] of state.consumers) {
		out.consumerList.push({
			id, kind: c.consumer.kind, peerId: c.peerId, type: c.type,
			paused: c.consumer.paused, producerPaused: c.producerPaused, score: c.score, layers: c.layers,
		});
		try {
			const report = await c.consumer.getStats();
			report.forEach((s) => {
				if (s.type !== 'inbound-rtp') return;
				const kind = s.kind || s.mediaType;
				if (kind === 'video') {
					out.video.framesDecoded += s.framesDecoded || 0;
					out.video.framesReceived += s.framesReceived || 0;
					out.video.packetsReceived += s.packetsReceived || 0;
					out.video.bytesReceived += s.bytesReceived || 0;
					out.video.frameWidth = Math.max(out.video.frameWidth, s.frameWidth || 0);
					out.video.frameHeight = Math.max(out.video.frameHeight, s.frameHeight || 0);
				} else if (kind === 'audio') {
					out.audio.packetsReceived += s.packetsReceived || 0;
					out.audio.bytesReceived += s.bytesReceived || 0;
				}
			});
		} catch (e) {
			out.errors.push(`consumer ${id} getStats: ${errText(e)}`);
		}
	}
	for (const [id, p] of state.producers) {
		out.producerList.push({ id, kind: p.producer.kind, source: p.source, score: p.score });
		try {
			const report = await p.producer.getStats();
			report.forEach((s) => {
				if (s.type !== 'outbound-rtp') return;
				const kind = s.kind || s.mediaType;
				if (kind === 'video') {
					out.sent.video.packetsSent += s.packetsSent || 0;
					out.sent.video.bytesSent += s.bytesSent || 0;
					out.sent.video.framesEncoded += s.framesEncoded || 0;
					out.sent.video.streams += 1;
				} else if (kind === 'audio') {
					out.sent.audio.packetsSent += s.packetsSent || 0;
					out.sent.audio.bytesSent += s.bytesSent || 0;
				}
			});
		} catch (e) {
			out.errors.push(`producer ${id} getStats: ${errText(e)}`);
		}
	}
	for (const [name, t] of [['send', state.sendTransport], ['recv', state.recvTransport]]) {
		if (!t || t.closed) continue;
		try {
			out.ice[name] = pickSelectedPair(await t.getStats());
		} catch (e) {
			out.errors.push(`${name} transport getStats: ${errText(e)}`);
		}
	}
	return out;
}

function close() {
	state.closed = true;
	for (const s of state.localStreams) for (const t of s.getTracks()) t.stop();
	for (const t of [state.sendTransport, state.recvTransport]) if (t) t.close();
	if (state.peer) state.peer.close();
	setPhase('closed');
}

// Loads a Device from router capabilities handed in (no server needed); used by page tests.
async function loadDevice(routerRtpCapabilities) {
	const device = await createDevice();
	await device.load({ routerRtpCapabilities });
	return device;
}

// ---------------------------------------------------------------- UI

function renderStatus(s) {
	const lines = [
		`phase: ${s.phase}   handler: ${s.handlerName}   other peers: ${s.peers}`,
		`transports: ${JSON.stringify(s.transportStates)}   ice: ${JSON.stringify(s.ice)}`,
		`producers: ${s.producers}   sent video: ${JSON.stringify(s.sent.video)}   sent audio: ${JSON.stringify(s.sent.audio)}`,
		...s.producerList.map((p) => `  producer ${p.id} ${p.kind}/${p.source} score ${JSON.stringify(p.score)}`),
		`consumers: ${s.consumers}   recv video: ${JSON.stringify(s.video)}   recv audio: ${JSON.stringify(s.audio)}`,
		...s.consumerList.map((c) => `  consumer ${c.id} ${c.kind} of ${c.peerId} paused ${c.paused}/${c.producerPaused} score ${JSON.stringify(c.score)} layers ${JSON.stringify(c.layers)}`),
	];
	$('status').textContent = lines.join('\n');
}

function startStatusLoop() {
	const tick = () => {
		if (state.closed && state.phase === 'closed') return;
		stats().then(renderStatus, (e) => recordError('stats', e)).finally(() => setTimeout(tick, 1000));
	};
	tick();
}

window.pm = {
	ready,
	stats,
	close,
	options,
	loadDevice,
	mediasoupClient,
	protooClient,
	encodings: WEBCAM_SIMULCAST_ENCODINGS,
	get device() { return state.device; },
	get peer() { return state.peer; },
	get sendTransport() { return state.sendTransport; },
	get recvTransport() { return state.recvTransport; },
	get producers() { return [...state.producers.values()].map((p) => p.producer); },
	version: mediasoupClient.version,
};

$('room-id').textContent = options.roomId;
$('peer-id').textContent = options.peerId;
$('close').addEventListener('click', close);
window.addEventListener('beforeunload', () => { if (state.peer) state.peer.close(); });
logEvent(`mediasoup-client ${mediasoupClient.version}, options ${JSON.stringify(options)}`);
startStatusLoop();
try {
	connect();
} catch (e) {
	fail('signaling', e);
}
