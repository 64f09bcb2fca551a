// Bundles page/app.js (mediasoup-client + protoo-client) into dist/app.js and
// copies page/index.html to dist/. Usage: node build.mjs  (npm run build)
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
const result = await build({
	entryPoints: [join(here, 'page', 'app.js')],
	outfile: join(dist, 'app.js'),
	bundle: true,
	platform: 'browser',
	format: 'iife',
	target: ['chrome100'],
	sourcemap: 'linked',
	define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
	logLevel: 'warning',
	metafile: true,
});
await copyFile(join(here, 'page', 'index.html'), join(dist, 'index.html'));
const bytes = result.metafile.outputs['dist/app.js']?.bytes
	?? Object.values(result.metafile.outputs).find((o) => o.entryPoint)?.bytes;
console.log(`built ${join(dist, 'app.js')} (${bytes} bytes) and ${join(dist, 'index.html')}`);
