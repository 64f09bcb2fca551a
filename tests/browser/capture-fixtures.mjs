// Captures what the real mediasoup-client sends from this machine's Chromium: the Device's
// rtpCapabilities (as in `join`) and the rtpParameters of its mic and simulcast webcam
// producers (as in `produce`). Writes them to tests/fixtures/ for the Rust negotiation tests.
// Run after `cargo build` and `npm run build`: node capture-fixtures.mjs
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startPipemesh, launchBrowser, openPage, waitReady, waitForStats, REPO_ROOT } from './harness.mjs';

const server = await startPipemesh();
const browser = await launchBrowser();
try {
	const a = await openPage(browser, `${server.baseUrl}/?roomId=fixtures&peerId=A`, 'A');
	await waitReady(a);
	await waitForStats(a, (s) => s.producers === 2, { timeoutMs: 20000, what: '2 producers' });
	const captured = await a.page.evaluate(() => ({
		chrome: navigator.userAgent.match(/Chrome\/([\d.]+)/)?.[1],
		mediasoupClient: window.pm.version,
		rtpCapabilities: window.pm.device.rtpCapabilities,
		producers: Object.fromEntries(window.pm.producers.map((p) => [p.kind, p.rtpParameters])),
	}));
	const dir = join(REPO_ROOT, 'tests', 'fixtures');
	const note = `captured from Chromium ${captured.chrome} with mediasoup-client ${captured.mediasoupClient}`;
	const write = (name, value) => {
		writeFileSync(join(dir, name), `${JSON.stringify(value, null, 2)}\n`);
		console.log(`wrote tests/fixtures/${name} (${note})`);
	};
	write('captured_chrome_rtp_capabilities.json', captured.rtpCapabilities);
	write('captured_chrome_producer_audio.json', captured.producers.audio);
	write('captured_chrome_producer_video_simulcast.json', captured.producers.video);
	writeFileSync(join(dir, 'captured_chrome_README.txt'), `${note}\nby tests/browser/capture-fixtures.mjs\n`);
} finally {
	await browser.close();
	await server.stop();
}
