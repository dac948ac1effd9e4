// Copies the runtime files the viewer loads from node_modules into vendor/, and bundles
// the JSON Schema validator. Runs as the npm `postinstall` hook, so `npm ci --prefix site`
// rebuilds vendor/.
//
// onnxruntime-web: `ort.webgpu.min.mjs` is the ESM build with both the WebGPU and
// the WASM (CPU) execution providers; it loads its WebAssembly companion
// (`ort-wasm-simd-threaded.asyncify.{mjs,wasm}`) at run time from
// `ort.env.wasm.wasmPaths`, which the page points at this folder.
// coi-serviceworker: makes the page cross-origin isolated on plain static hosts
// (needed for SharedArrayBuffer, i.e. multi-threaded WASM). It goes to the site
// root, not vendor/: a service worker only controls pages at or below its own
// folder, so one served from /vendor/ could never control /index.html.
// ajv: validates scene.json and report.json against schema/*.schema.json (JSON Schema
// draft 2020-12, hence its Ajv2020 class). Ajv ships CommonJS only, so esbuild (a
// devDependency) bundles it here into one minified ES module, `ajv2020.min.mjs`, whose
// default export is the class; the page imports it like onnxruntime-web.
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const siteDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const modules = join(siteDir, 'node_modules');
const vendor = join(siteDir, 'vendor');

// The WASM-only build (`ort.wasm.min.mjs` + `ort-wasm-simd-threaded.{mjs,wasm}`) runs
// our students about 1.8x faster on the CPU than the WASM provider inside the WebGPU
// build (measured in Chromium here, 2 threads), so the viewer loads it for 'wasm'.
const files = [
  ['onnxruntime-web/dist/ort.wasm.min.mjs', 'ort.wasm.min.mjs'],
  ['onnxruntime-web/dist/ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.mjs'],
  ['onnxruntime-web/dist/ort-wasm-simd-threaded.wasm', 'ort-wasm-simd-threaded.wasm'],
  ['onnxruntime-web/dist/ort.webgpu.min.mjs', 'ort.webgpu.min.mjs'],
  ['onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.mjs'],
  ['onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm', 'ort-wasm-simd-threaded.asyncify.wasm'],
];
const rootFiles = [['coi-serviceworker/coi-serviceworker.min.js', 'coi-serviceworker.js']];

rmSync(vendor, { recursive: true, force: true });
mkdirSync(vendor, { recursive: true });
function copy(from, to) {
  const src = join(modules, from);
  if (!existsSync(src)) {
    console.error(`vendor.mjs: missing ${src}; is the dependency installed?`);
    process.exit(1);
  }
  copyFileSync(src, to);
}
for (const [from, to] of files) copy(from, join(vendor, to));
for (const [from, to] of rootFiles) copy(from, join(siteDir, to));
const version = (name) => JSON.parse(readFileSync(join(modules, name, 'package.json'), 'utf8')).version;

let esbuild;
try {
  esbuild = await import('esbuild');
} catch (err) {
  console.error(`vendor.mjs: cannot load esbuild (${err.message}); it is a devDependency: run \`npm ci --prefix site\` without --omit=dev`);
  process.exit(1);
}
esbuild.buildSync({
  stdin: { contents: "export { default } from 'ajv/dist/2020.js';", resolveDir: siteDir, sourcefile: 'ajv2020-entry.mjs' },
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  banner: { js: `/* ajv ${version('ajv')} (Ajv2020, MIT License, https://ajv.js.org), bundled by site/tools/vendor.mjs */` },
  outfile: join(vendor, 'ajv2020.min.mjs'),
  logLevel: 'warning',
});
copy('ajv/LICENSE', join(vendor, 'ajv.LICENSE'));

const versions = {
  'onnxruntime-web': version('onnxruntime-web'),
  'coi-serviceworker': version('coi-serviceworker'),
  ajv: version('ajv'),
  esbuild: version('esbuild'),
};
writeFileSync(join(vendor, 'versions.json'), JSON.stringify(versions, null, 2) + '\n');
console.log(`vendor.mjs: copied ${files.length} files to vendor/ and ${rootFiles.length} to the site root, ` +
  `bundled ajv2020.min.mjs (${JSON.stringify(versions)})`);
