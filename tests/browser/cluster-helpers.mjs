// Shared steps of the browser tests that run the demo page against real nodes (e2e.test.mjs
// on one node, pipe.test.mjs on two, etcd.test.mjs on three): a Session that opens pages on
// nodes and prints what it knows when a test fails, the producer and consumer pages, and the
// checks that media reaches a consumer, keeps flowing, crosses a pipe and follows layer
// switches. Process and browser primitives live in harness.mjs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import {
	launchBrowser, openPage, waitReady, waitForStats, stats, fetchMetrics, fetchAdminJson, parseMetrics, metricValue,
} from './harness.mjs';

/**
 * One test file's browser and pages, all in one room, and the servers behind them. setup()
 * starts the servers (handing them to addNodes()) and the browser; it runs once, for the
 * first test, and every test awaits it. After the last test the pages and the browser close,
 * then teardown() stops the servers.
 */
export class Session {
	constructor(roomId, { setup, teardown, testTimeoutMs = Infinity }) {
		this.roomId = roomId;
		this.setup = setup;
		this.setupPromise = null;
		this.testTimeoutMs = testTimeoutMs;
		this.diagnosed = null; // the last error diagnose() printed for
		this.browser = null;
		this.pages = {}; // by peer id
		this.opening = new Map(); // peer id -> promise of its page from producer() or consumer()
		this.nodes = []; // pipemesh servers: /metrics and output tail on failure
		this.adminPaths = []; // admin JSON paths printed per node on failure, e.g. '/cluster'
		this.etcd = null; // a startEtcd() handle: output tail on failure
		after(async () => {
			await this.close();
			await teardown();
		});
	}

	/** Declares a test that runs setup(), then fn(), both under diagnose(). */
	test(name, fn) {
		test(name, { timeout: this.testTimeoutMs }, () => this.diagnose(async () => {
			this.setupPromise ??= this.setup();
			await this.setupPromise;
			await fn();
		}));
	}

	/** The pipemesh servers the pages use, for diagnose(); logs their command lines. */
	addNodes(servers) {
		this.nodes.push(...servers);
		for (const n of servers) console.log(`pipemesh${n.label ? ` ${n.label}` : ''} up: ${n.cmdline}`);
	}

	async launchBrowser() {
		this.browser = await launchBrowser();
		console.log(`chromium ${this.browser.version()}`);
	}

	/**
	 * Opens the demo page on `node` as `peerId` in the session's room; `query` adds page options.
	 * The page's `openedAt` is when the opening began (ms since the epoch).
	 */
	async open(node, peerId, query) {
		const url = `${node.baseUrl}/?roomId=${this.roomId}&peerId=${peerId}&${query}`;
		console.log(`opening ${peerId}${node.label ? ` on node ${node.label}` : ''}: ${url}`);
		const openedAt = Date.now();
		const peer = await openPage(this.browser, url, peerId);
		peer.openedAt = openedAt;
		this.pages[peerId] = peer;
		return peer;
	}

	/**
	 * The page `peerId` on `node` that produces its fake mic and simulcast webcam and consumes
	 * nothing (`query` adds options, e.g. token=...), once both producers exist. Opened on the first call; later calls (from any
	 * test) share it.
	 */
	producer(node, peerId, query = '') {
		return this.#once(peerId, async () => {
			const peer = await this.open(node, peerId, query ? `consume=false&${query}` : 'consume=false');
			await waitReady(peer);
			const s = await waitForStats(peer, (st) => st.producers === 2, { timeoutMs: 10000, what: `2 producers on ${peerId}` });
			console.log(`${peerId} producing${node.label ? ` on ${node.label}` : ''}: ` +
				`${JSON.stringify(s.producerList.map((p) => [p.kind, p.source, p.id]))}`);
			return peer;
		});
	}

	/**
	 * The page `peerId` on `node` that only consumes (`query` adds options, e.g. forceTcp=true),
	 * once it is ready. Opened on the first call; later calls share it.
	 */
	consumer(node, peerId, query = '') {
		return this.#once(peerId, async () => {
			const peer = await this.open(node, peerId, query ? `produce=false&${query}` : 'produce=false');
			await waitReady(peer);
			return peer;
		});
	}

	#once(peerId, open) {
		if (!this.opening.has(peerId)) this.opening.set(peerId, open());
		return this.opening.get(peerId);
	}

	/**
	 * Runs fn(); when it throws, prints every page's stats and every node's /metrics, admin
	 * paths and output tail (and etcd's), then rethrows. A failed setup (or shared page)
	 * rejects every later test with the same error: that is printed for once.
	 */
	async diagnose(fn) {
		try {
			await fn();
		} catch (e) {
			if (e === this.diagnosed) throw e;
			this.diagnosed = e;
			for (const [name, p] of Object.entries(this.pages)) {
				console.log(`${name} stats at failure: ${JSON.stringify(await stats(p).catch((x) => String(x)))}`);
			}
			for (const n of this.nodes) {
				const tag = n.label ? `node ${n.label}` : 'pipemesh';
				const m = await fetchMetrics(n).catch((x) => `(no metrics: ${x.message})`);
				console.log(`--- ${tag} /metrics ---\n${m}`);
				for (const path of this.adminPaths) {
					const v = await fetchAdminJson(n, path).then((j) => JSON.stringify(j, null, 1), (x) => `(no ${path}: ${x.message})`);
					console.log(`--- ${tag} ${path} ---\n${v}`);
				}
				console.log(`--- ${tag} output (tail) ---\n${tail(n.output(), 200)}`);
			}
			if (this.etcd) console.log(`--- etcd output (tail) ---\n${tail(this.etcd.output(), 50) || '(none)'}`);
			throw e;
		}
	}

	/** Closes every page's session, then the browser. */
	async close() {
		for (const p of Object.values(this.pages)) await p.page.evaluate(() => window.pm.close()).catch(() => {});
		if (this.browser) await this.browser.close().catch(() => {});
	}
}

function tail(text, lines) {
	return text.split('\n').slice(-lines).join('\n');
}

/**
 * Stops a startPipeCluster()/startEtcdCluster() handle (if it started); PM_SERVER_LOG=1 prints
 * every node's output first.
 */
export async function stopCluster(cluster) {
	if (!cluster) return;
	if (process.env.PM_SERVER_LOG) {
		for (const n of Object.values(cluster.nodes)) console.log(`--- node ${n.label} output ---\n${n.output()}`);
	}
	const r = await cluster.stop();
	console.log(`pipemesh nodes stopped: ${JSON.stringify(r)}`);
}

/** Checks that every node's /healthz reports its own node id. */
export async function assertHealthzNodeIds(cluster) {
	for (const n of Object.values(cluster.nodes)) {
		const h = await (await fetch(n.healthUrl)).json();
		assert.equal(h.nodeId, n.label, `node ${n.label}: /healthz reports ${JSON.stringify(h)}`);
	}
}

/**
 * Waits until `peer` lists `otherId` among its peers: in its join response, or by a later
 * newPeer (a room's view from another node may arrive after the join was answered). With
 * `noErrors`, the page must also have reported no errors by then.
 */
export async function waitForPeer(peer, otherId, { what, timeoutMs = 10000, noErrors = false }) {
	const s = await waitForStats(peer, (st) => st.peerList.some((p) => p.id === otherId), { timeoutMs, what });
	console.log(`${peer.name} sees peers ${JSON.stringify(s.peerList)}; join response listed ${JSON.stringify(s.joinPeerIds)}` +
		`${s.joinPeerIds.includes(otherId) ? '' : ` (${otherId} came by newPeer after the join)`}`);
	if (noErrors) assert.deepEqual(s.errors, [], `${peer.name}: page reported errors`);
	return s;
}

/**
 * Waits until `peer` has 2 consumers, decodes video and receives audio, then checks over
 * `sampleMs` that both keep flowing: exactly one audio and one video consumer (both of peer
 * `from` when given), frame and packet counts rising, no page errors. With `rtcPort`, also
 * that the recv transport is connected, to that RTC port when getStats reports the pair.
 * `via` says in the wait's description how the media travels. Returns the last stats.
 */
export async function assertMediaFlows(peer, { label = peer.name, via, from, rtcPort, timeoutMs, sampleMs }) {
	const s = await waitForStats(
		peer,
		(st) => st.consumers >= 2 && st.video.framesDecoded > 0 && st.audio.packetsReceived > 0,
		{ timeoutMs, what: `2 consumers with decoded video frames and audio packets${via ? ` (${via})` : ''}` },
	);
	console.log(`${label}: consumers ${JSON.stringify(s.consumerList)}`);
	console.log(`${label}: transports ${JSON.stringify(s.transportStates)} ice ${JSON.stringify(s.ice)}`);
	const s1 = await stats(peer);
	await delay(sampleMs);
	const s2 = await stats(peer);
	console.log(`${label}: framesDecoded ${s1.video.framesDecoded} -> ${s2.video.framesDecoded} in ${sampleMs} ms (${s2.video.frameWidth}x${s2.video.frameHeight})`);
	console.log(`${label}: audio packetsReceived ${s1.audio.packetsReceived} -> ${s2.audio.packetsReceived}`);
	assert.equal(s2.consumers, 2, `${label}: expected exactly 2 consumers, got ${JSON.stringify(s2.consumerList)}`);
	assert.deepEqual(s2.consumerList.map((c) => c.kind).sort(), ['audio', 'video']);
	if (from) {
		for (const c of s2.consumerList) assert.equal(c.peerId, from, `${label}: consumer ${c.id} should belong to ${from}: ${JSON.stringify(c)}`);
	}
	if (rtcPort) {
		assert.equal(s2.transportStates.recv, 'connected');
		if (s2.ice.recv && s2.ice.recv.remotePort) {
			assert.equal(s2.ice.recv.remotePort, rtcPort,
				`${label}: selected ICE pair should be its node's RTC port ${rtcPort}: ${JSON.stringify(s2.ice.recv)}`);
		}
	}
	assert.ok(s2.video.framesDecoded > s1.video.framesDecoded,
		`${label}: video stalled: framesDecoded ${s1.video.framesDecoded} -> ${s2.video.framesDecoded}`);
	assert.ok(s2.audio.packetsReceived > s1.audio.packetsReceived,
		`${label}: audio stalled: packets ${s1.audio.packetsReceived} -> ${s2.audio.packetsReceived}`);
	assert.deepEqual(s2.errors, [], `${label}: page reported errors`);
	return s2;
}

/** A node's pipe and RTP metrics on one line. */
function pipeMetrics(text) {
	return parseMetrics(text)
		.filter((s) => s.name.startsWith('pipemesh_pipe_') || s.name.startsWith('pipemesh_rtp_'))
		.map((s) => `${s.name}${Object.keys(s.labels).length ? JSON.stringify(s.labels) : ''}=${s.value}`)
		.join(' ');
}

/**
 * Prints every node's pipe metrics, then checks that the pipe from node `from` to node `to`
 * carried datagrams: counted out on `from` and in on `to`.
 */
export async function assertPipeCarried(cluster, from, to) {
	const metrics = {};
	for (const n of Object.values(cluster.nodes)) {
		metrics[n.label] = await fetchMetrics(n);
		console.log(`node ${n.label} pipe metrics: ${pipeMetrics(metrics[n.label])}`);
	}
	const pipeIn = metricValue(metrics[to], 'pipemesh_pipe_datagrams_in_total', { peer: from });
	const pipeOut = metricValue(metrics[from], 'pipemesh_pipe_datagrams_out_total', { peer: to });
	assert.ok(pipeIn > 0, `node ${to}: pipemesh_pipe_datagrams_in_total{peer="${from}"} should be > 0, got ${pipeIn}`);
	assert.ok(pipeOut > 0, `node ${from}: pipemesh_pipe_datagrams_out_total{peer="${to}"} should be > 0, got ${pipeOut}`);
}

/**
 * Asks `peer`'s node (setConsumerPreferredLayers) for spatial layer 0, then 2, of the
 * simulcast consumer `video`: the page must decode the 160x120 layer, then a higher one with
 * the decoder running on (30+ more frames), and report no errors. With `reportedLayers`, the
 * node's consumerLayersChanged must also report spatial layer 0, then one above 0.
 */
export async function assertLayerSwitches(peer, video, { timeoutMs, reportedLayers = false }) {
	const label = peer.name;
	const prefer = (spatialLayer) => peer.page.evaluate(
		({ consumerId, spatialLayer }) => window.pm.peer.request('setConsumerPreferredLayers', { consumerId, spatialLayer }),
		{ consumerId: video.id, spatialLayer },
	);
	const layersOf = (st) => (st.consumerList.find((c) => c.id === video.id) || {}).layers || null;

	await prefer(0);
	const low = await waitForStats(peer, (st) => st.video.frameHeight === 120,
		{ timeoutMs, what: `${label} decoding the 160x120 layer` });
	console.log(`${label}: preferred layer 0 -> ${low.video.frameWidth}x${low.video.frameHeight}, framesDecoded ${low.video.framesDecoded}, layers ${JSON.stringify(layersOf(low))}`);
	if (reportedLayers) {
		const lowLayers = await waitForStats(peer, (st) => layersOf(st) && layersOf(st).spatialLayer === 0,
			{ timeoutMs: 5000, what: 'consumerLayersChanged to spatial layer 0' });
		assert.equal(layersOf(lowLayers).spatialLayer, 0);
	}

	await prefer(2);
	const high = await waitForStats(peer, (st) => st.video.frameHeight > 120 && st.video.framesDecoded > low.video.framesDecoded + 30,
		{ timeoutMs, what: `${label} back on a higher layer and decoding` });
	console.log(`${label}: preferred layer 2 -> ${high.video.frameWidth}x${high.video.frameHeight}, framesDecoded ${high.video.framesDecoded}, layers ${JSON.stringify(layersOf(high))}`);
	if (reportedLayers) {
		const highLayers = await waitForStats(peer, (st) => layersOf(st) && layersOf(st).spatialLayer > 0,
			{ timeoutMs: 5000, what: 'consumerLayersChanged to a spatial layer above 0' });
		assert.ok(layersOf(highLayers).spatialLayer > 0);
	}
	assert.deepEqual(high.errors, [], `${label}: page reported errors`);
}
