// The viewer: pick a scene, load it, choose a backend (self-checked), orbit and render.
//
// For tests and scripts it exposes window.viewer (see README.md):
//   ready: Promise (resolves after the first frame, rejects with the error message),
//   backend, pose(), view(), lastFrameMs, frames, setView(az, el, r) -> Promise,
//   selfCheck {psnr, backend, ok, threshold, history}, crossOriginIsolated, numThreads,
//   scene (name), error (message or null);
// and sets document.body.dataset.state to 'loading' | 'ready' | 'error'.

import { attachOrbitControls, OrbitCamera } from './camera.js';
import { Renderer, loadOrt, psnrRgba, webgpuAvailable } from './render.js';
import { ViewerError, fetchModel, loadImageRgba, loadIndex, loadScene } from './scene.js';

window.viewerStarted = true;

/** Self-check threshold: a backend whose output for the reference pose is worse is not trusted. */
const SELF_CHECK_MIN_PSNR_DB = 30;
/** Least time between URL hash updates while dragging (browsers throttle replaceState). */
const HASH_UPDATE_MS = 250;
/** Longest wait for coi-serviceworker to install and reload the page. */
const ISOLATION_WAIT_MS = 3000;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let resolveReady, rejectReady;
const viewer = {
  ready: new Promise((resolve, reject) => { resolveReady = resolve; rejectReady = reject; }),
  backend: null,
  scene: null,
  selfCheck: null,
  lastFrameMs: NaN,
  frames: 0,
  error: null,
  crossOriginIsolated: window.crossOriginIsolated === true,
  numThreads: 1,
  pose: () => { throw new Error('viewer is not ready'); },
  view: () => { throw new Error('viewer is not ready'); },
  setView: () => Promise.reject(new Error('viewer is not ready')),
};
viewer.ready.catch(() => {}); // a failed start is shown in #error; don't also log it as unhandled
window.viewer = viewer;

function setState(state) {
  document.body.dataset.state = state;
}

function showError(err) {
  const message = err instanceof ViewerError ? err.message : `Unexpected error: ${err?.stack ?? err}`;
  console.error(message);
  viewer.error = message;
  $('error').textContent = message;
  $('error').hidden = false;
  $('loading').hidden = true;
  $('status').textContent = 'error (see above)';
  setState('error');
  rejectReady(new Error(message));
}

function showWarning(message) {
  console.warn(message);
  const el = $('warning');
  el.textContent = el.hidden ? message : `${el.textContent}\n${message}`;
  el.hidden = false;
}

function setLoading(text, fraction) {
  $('loading-text').textContent = text;
  const bar = $('progress');
  if (Number.isFinite(fraction)) bar.value = fraction;
  else bar.removeAttribute('value'); // indeterminate
}

/**
 * coi-serviceworker makes the page cross-origin isolated by installing a service worker
 * and reloading once. Wait for that reload rather than load the model twice; give up
 * (and run single-threaded) if it does not come.
 */
async function settleIsolation() {
  const sw = navigator.serviceWorker;
  if (window.crossOriginIsolated || !window.isSecureContext || !sw || sw.controller) return;
  await Promise.race([sw.ready, sleep(ISOLATION_WAIT_MS)]);
  await sleep(100); // let coi-serviceworker's own registration callback decide to reload
  if (window.coiReloading) await sleep(ISOLATION_WAIT_MS);
}

/** Backends to try, in order: `?backend=` forces one; otherwise WebGPU (if offered), then WASM. */
async function backendOrder() {
  const forced = params.get('backend');
  if (forced) {
    if (forced !== 'wasm' && forced !== 'webgpu') {
      throw new ViewerError(`Unknown backend "${forced}" in the URL; use ?backend=wasm or ?backend=webgpu.`);
    }
    return { order: [forced], forced: true };
  }
  return { order: (await webgpuAvailable()) ? ['webgpu', 'wasm'] : ['wasm'], forced: false };
}

/**
 * Create a session on the first backend that works and passes the self-check (the
 * reference pose rendered here vs reference.png from onnxruntime-python).
 * A forced backend is kept even if its self-check fails (with a warning).
 */
async function chooseRenderer(ort, modelBytes, scene, reference) {
  const { order, forced } = await backendOrder();
  const history = [];
  for (let i = 0; i < order.length; i++) {
    const backend = order[i];
    const last = i === order.length - 1;
    setLoading(`creating ${backend} session…`, NaN);
    let renderer;
    try {
      renderer = await Renderer.create(ort, modelBytes, backend, scene);
    } catch (err) {
      if (last) throw err;
      showWarning(`${backend} unavailable (${err.message}); falling back to ${order[i + 1]}.`);
      continue;
    }
    setLoading(`self-check on ${backend}…`, NaN);
    const rgba = await renderer.run(scene.referencePose);
    const psnr = psnrRgba(rgba, reference.data);
    const ok = psnr >= SELF_CHECK_MIN_PSNR_DB;
    history.push({ backend, psnr, ok });
    if (ok || last || forced) {
      viewer.selfCheck = { psnr, backend, ok, threshold: SELF_CHECK_MIN_PSNR_DB, history };
      if (!ok) {
        showWarning(
          `Self-check failed on ${backend}: PSNR ${psnr.toFixed(1)} dB vs the reference image ` +
          `(threshold ${SELF_CHECK_MIN_PSNR_DB} dB). The images shown may be wrong.`);
      }
      return renderer;
    }
    showWarning(
      `Self-check failed on ${backend}: PSNR ${psnr.toFixed(1)} dB < ${SELF_CHECK_MIN_PSNR_DB} dB; ` +
      `falling back to ${order[i + 1]}.`);
    await renderer.release();
  }
  throw new ViewerError('No backend could be used.'); // unreachable: the last one returns or throws
}

async function start() {
  setState('loading');
  if (window.location.protocol === 'file:') {
    throw new ViewerError('The viewer must be served over HTTP (browsers block fetch() from file://), ' +
      'e.g. `python -m http.server -d site 8000`, then open http://localhost:8000/.');
  }
  await settleIsolation();
  viewer.crossOriginIsolated = window.crossOriginIsolated === true;

  setLoading('loading scene index…', NaN);
  const index = await loadIndex();
  const wanted = params.get('scene');
  const entry = wanted ? index.find((s) => s.name === wanted) : index[0];
  if (!entry) {
    throw new ViewerError(`Scene "${wanted}" is not in scenes/index.json (it has: ${index.map((s) => s.name).join(', ')}).`);
  }
  const select = $('scene-select');
  for (const s of index) select.add(new Option(s.name, s.name, false, s === entry));
  select.disabled = index.length < 2;
  select.addEventListener('change', () => {
    const next = new URLSearchParams(params);
    next.set('scene', select.value);
    window.location.assign(`?${next}`); // new scene, default view: no hash
  });

  setLoading(`loading ${entry.path}…`, NaN);
  const scene = await loadScene(entry.path);
  viewer.scene = scene.name;

  const [ort, modelBytes, reference] = await Promise.all([
    loadOrt(),
    fetchModel(scene.modelUrl, (fraction, bytes) =>
      setLoading(`loading model… ${(bytes / 1e6).toFixed(1)} MB`, fraction)),
    loadImageRgba(scene.referenceUrl, 'the reference image'),
  ]);
  viewer.numThreads = ort.env.wasm.numThreads;
  if (reference.width !== scene.width || reference.height !== scene.height) {
    throw new ViewerError(
      `The reference image (${scene.referenceUrl}) is ${reference.width}x${reference.height}, ` +
      `but scene.json says ${scene.width}x${scene.height}.`);
  }

  const renderer = await chooseRenderer(ort, modelBytes, scene, reference);
  viewer.backend = renderer.backend;

  const canvas = $('view');
  canvas.width = scene.width;
  canvas.height = scene.height;
  const ctx = canvas.getContext('2d', { alpha: false });
  const image = new ImageData(scene.width, scene.height);

  const camera = new OrbitCamera(scene.orbit, scene.up);
  camera.fromHash(window.location.hash);

  // Render loop: only when the view changed, at most one session.run in flight, and at
  // most one frame pending (the latest view wins).
  let dirty = false;
  let running = false;
  let rafId = 0;
  let waiters = []; // resolved when the view they asked for is on the canvas
  let frameMsAvg = NaN;
  let lastFrameEnd = 0;
  let intervalAvg = NaN;
  const ema = (avg, x) => (Number.isFinite(avg) ? 0.8 * avg + 0.2 * x : x);

  const status = () => {
    const threads = renderer.backend === 'wasm' ? ` ×${viewer.numThreads} thread${viewer.numThreads > 1 ? 's' : ''}` : '';
    const fps = Number.isFinite(intervalAvg) ? 1000 / intervalAvg : 1000 / frameMsAvg;
    const { psnr, ok } = viewer.selfCheck;
    const db = Number.isFinite(psnr) ? `${psnr.toFixed(1)} dB` : 'exact';
    const check = ok ? `self-check ${db}` : `self-check FAILED (${db})`;
    $('status').textContent =
      `${renderer.backend}${threads} · ${viewer.lastFrameMs.toFixed(1)} ms/frame · ${fps.toFixed(0)} fps · ${check}`;
  };

  const requestRender = () => {
    dirty = true;
    if (!rafId && !running) rafId = requestAnimationFrame(frame);
  };

  async function frame() {
    rafId = 0;
    if (!dirty || running) return;
    dirty = false;
    running = true;
    const t0 = performance.now();
    try {
      image.data.set(await renderer.run(camera.pose()));
      ctx.putImageData(image, 0, 0);
    } catch (err) {
      showError(err instanceof ViewerError ? err : new ViewerError(`Rendering failed: ${err.message ?? err}`));
      waiters.forEach((w) => w.reject(err));
      waiters = [];
      return; // stays 'running': no further frames
    }
    const t1 = performance.now();
    viewer.lastFrameMs = t1 - t0;
    viewer.frames += 1;
    frameMsAvg = ema(frameMsAvg, viewer.lastFrameMs);
    // Frame rate while frames follow each other; after a pause, the rate one frame allows.
    intervalAvg = lastFrameEnd && t1 - lastFrameEnd < 500 ? ema(intervalAvg, t1 - lastFrameEnd) : NaN;
    lastFrameEnd = t1;
    running = false;
    status();
    if (dirty) {
      rafId = requestAnimationFrame(frame);
    } else {
      waiters.forEach((w) => w.resolve());
      waiters = [];
    }
  }

  const whenRendered = () => (!dirty && !running
    ? Promise.resolve()
    : new Promise((resolve, reject) => waiters.push({ resolve, reject })));

  let hashTimer = 0;
  const writeHash = () => {
    clearTimeout(hashTimer);
    hashTimer = 0;
    const hash = `#${camera.toHash()}`;
    if (window.location.hash !== hash) history.replaceState(null, '', hash);
  };
  const onChange = () => {
    requestRender();
    if (!hashTimer) hashTimer = setTimeout(writeHash, HASH_UPDATE_MS);
  };
  attachOrbitControls(canvas, camera, { onChange, onEnd: writeHash });
  window.addEventListener('hashchange', () => {
    if (camera.fromHash(window.location.hash)) requestRender();
  });

  const resetButton = $('reset-view');
  resetButton.disabled = false;
  resetButton.addEventListener('click', () => { camera.reset(); onChange(); writeHash(); });
  const saveButton = $('save-png');
  saveButton.disabled = false;
  saveButton.addEventListener('click', () => {
    canvas.toBlob((blob) => {
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = `${scene.name}_${camera.toHash().replace(/[&=]/g, '_')}.png`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    }, 'image/png');
  });

  viewer.pose = () => Array.from(camera.pose());
  viewer.view = () => ({ az: camera.azimuthDeg, el: camera.elevationDeg, r: camera.radius });
  viewer.setView = (az, el, r) => {
    if (camera.set(az, el, r)) {
      requestRender();
      writeHash();
    }
    return whenRendered();
  };

  $('loading').hidden = true;
  canvas.hidden = false;
  requestRender();
  await whenRendered();
  setState('ready');
  resolveReady(viewer);
}

start().catch(showError);
