// The viewer: pick a scene, load it, choose a backend (self-checked), orbit and render.
//
// For tests and scripts it exposes window.viewer (see README.md):
//   ready: Promise (resolves after the first frame, rejects with the error message),
//   backend, pose(), view(), lastFrameMs, frames, setView(az, el, r) -> Promise,
//   selfCheck {psnr, backend, ok, threshold, history, preview}, crossOriginIsolated,
//   numThreads, scene (name), error (message or null), quality ('full' | 'preview', of
//   the image on the canvas), previewFrames, benchmark({frames, warmup, quality}) ->
//   Promise<{page_ms, run_ms, ...}> (see bench/viewer.py);
// and sets document.body.dataset.state to 'loading' | 'ready' | 'error'.

import { attachOrbitControls, OrbitCamera, RegionCamera } from './camera.js';
import { Renderer, loadOrt, psnrRgba, webgpuAvailable } from './render.js';
import { ViewerError, fetchModel, loadImageRgba, loadIndex, loadScene, pickScene } from './scene.js';

window.viewerStarted = true;

/** Self-check threshold: a backend whose output for the reference pose is worse is not trusted. */
const SELF_CHECK_MIN_PSNR_DB = 30;
/** Least time between URL hash updates while dragging (browsers throttle replaceState). */
const HASH_UPDATE_MS = 250;
/** Longest wait for coi-serviceworker's worker to become active (a busy machine installs it slowly). */
const ISOLATION_WAIT_MS = 5000;
/** Adaptive quality: while the user drags, full frames slower than this switch to the preview model. */
const FRAME_BUDGET_MS = 40;
/** After a preview frame, the camera counts as resting (and is refined) after this long without input. */
const REST_MS = 150;

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
  previewFrames: 0,
  quality: null,
  weights: null,
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
  const active = await Promise.race([sw.ready.then(() => true), sleep(ISOLATION_WAIT_MS).then(() => false)]);
  await sleep(100); // let coi-serviceworker's own registration callback decide to reload
  if (active && window.coiReloading) await sleep(ISOLATION_WAIT_MS); // the reload is under way
  window.coiGaveUp = true; // still here: run single-threaded, and no reload later (boot.js)
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

/** Render `model` ({url, width, height}) at the reference pose and compare with its reference image. */
async function selfCheck(renderer, scene, reference) {
  const rgba = await renderer.run(scene.referencePose);
  const psnr = psnrRgba(rgba, reference.data);
  return { backend: renderer.backend, psnr, ok: psnr >= SELF_CHECK_MIN_PSNR_DB };
}

/**
 * Create an onnxruntime InferenceSession on the first backend that works and passes the self-check (the
 * reference pose rendered here vs reference.png from onnxruntime-python), and the
 * preview model's session on the same backend (dropped, with a warning, if its own
 * self-check fails). A forced backend is kept even if its self-check fails (with a warning).
 */
async function chooseRenderers(models, scene, references) {
  const { order, forced } = await backendOrder();
  const threads = Number(params.get('threads')) || 0;
  const history = [];
  for (let i = 0; i < order.length; i++) {
    const backend = order[i];
    const last = i === order.length - 1;
    setLoading(`creating ${backend} session…`, NaN);
    let ort, renderer;
    try {
      ort = await loadOrt(backend, threads);
      renderer = await Renderer.create(ort, models.full, backend, scene, models.fullModel);
    } catch (err) {
      if (last) throw err;
      showWarning(`${backend} unavailable (${err.message}); falling back to ${order[i + 1]}.`);
      continue;
    }
    viewer.numThreads = backend === 'wasm' ? ort.env.wasm.numThreads : 1;
    setLoading(`self-check on ${backend}…`, NaN);
    const check = await selfCheck(renderer, scene, references.full);
    history.push(check);
    if (check.ok || last || forced) {
      viewer.selfCheck = { ...check, threshold: SELF_CHECK_MIN_PSNR_DB, history, preview: null };
      if (!check.ok) {
        showWarning(
          `Self-check failed on ${backend}: PSNR ${check.psnr.toFixed(1)} dB vs the reference image ` +
          `(threshold ${SELF_CHECK_MIN_PSNR_DB} dB). The images shown may be wrong.`);
      }
      const preview = models.preview ? await previewRenderer(ort, models.preview, backend, scene, references) : null;
      return { renderer, preview };
    }
    showWarning(
      `Self-check failed on ${backend}: PSNR ${check.psnr.toFixed(1)} dB < ${SELF_CHECK_MIN_PSNR_DB} dB; ` +
      `falling back to ${order[i + 1]}.`);
    await renderer.release();
  }
  throw new ViewerError('No backend could be used.'); // unreachable: the last one returns or throws
}

async function previewRenderer(ort, bytes, backend, scene, references) {
  let preview;
  try {
    preview = await Renderer.create(ort, bytes, backend, scene, scene.preview);
  } catch (err) {
    showWarning(`No preview while moving: ${err.message}`);
    return null;
  }
  const check = await selfCheck(preview, scene, references.preview);
  viewer.selfCheck.preview = check;
  if (check.ok) return preview;
  showWarning(`Self-check of the preview model failed on ${backend} (PSNR ${check.psnr.toFixed(1)} dB); ` +
    'rendering full size while moving.');
  await preview.release();
  return null;
}

/** Fetch the full (and preview) model with one progress bar over both. */
async function fetchModels(scene) {
  // float16 weights (half the download; the arithmetic stays float32, so every backend
  // runs them) unless ?weights=fp32; the self-check vouches for them like for any model
  const fp16 = scene.full.fp16Url && params.get('weights') !== 'fp32';
  viewer.weights = fp16 ? 'fp16' : 'fp32';
  const full = fp16 ? { ...scene.full, url: scene.full.fp16Url } : scene.full;
  const parts = scene.preview ? [full, scene.preview] : [full];
  const got = parts.map(() => ({ fraction: 0, bytes: 0 }));
  const report = () => {
    const bytes = got.reduce((a, g) => a + g.bytes, 0);
    const fraction = got.reduce((a, g) => a + g.fraction, 0) / got.length;
    setLoading(`loading model… ${(bytes / 1e6).toFixed(1)} MB`, fraction);
  };
  const bytes = await Promise.all(parts.map((m, i) => fetchModel(m.url, (fraction, n) => {
    got[i] = { fraction, bytes: n };
    report();
  })));
  return { full: bytes[0], preview: bytes[1] ?? null, fullModel: full };
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };

/** Refuse file:// (fetch() is blocked there) and let coi-serviceworker settle. */
async function checkEnvironment() {
  if (window.location.protocol === 'file:') {
    throw new ViewerError('The viewer must be served over HTTP (browsers block fetch() from file://), ' +
      'e.g. `python -m http.server -d site 8000`, then open http://localhost:8000/.');
  }
  await settleIsolation();
  viewer.crossOriginIsolated = window.crossOriginIsolated === true;
}

/** The scene named by ?scene= (default: the index's first), validated; fills the scene picker. */
async function loadSceneFromUrl() {
  setLoading('loading scene index…', NaN);
  const index = await loadIndex();
  const entry = pickScene(index, params.get('scene'), $('scene-select'), (name) => {
    const next = new URLSearchParams(params);
    next.set('scene', name);
    window.location.assign(`?${next}`); // new scene, default view: no hash
  });
  $('results-link').href = `compare.html?scene=${encodeURIComponent(entry.name)}`;
  setLoading(`loading ${entry.path}…`, NaN);
  const scene = await loadScene(entry.path);
  viewer.scene = scene.name;
  return scene;
}

/** Model bytes and reference images (decoded RGBA), checked to be the sizes scene.json says. */
async function loadModelsAndReferences(scene) {
  const [models, refFull, refPreview] = await Promise.all([
    fetchModels(scene),
    loadImageRgba(scene.full.referenceUrl, 'the reference image'),
    scene.preview ? loadImageRgba(scene.preview.referenceUrl, 'the preview reference image') : null,
  ]);
  for (const [model, ref] of [[scene.full, refFull], [scene.preview, refPreview]]) {
    if (ref && (ref.width !== model.width || ref.height !== model.height)) {
      throw new ViewerError(
        `The reference image (${model.referenceUrl}) is ${ref.width}x${ref.height}, ` +
        `but scene.json says ${model.width}x${model.height}.`);
    }
  }
  return { models, references: { full: refFull, preview: refPreview } };
}

/** The view canvas and paint(which, pose): pose -> pixels on it, with the full model or the preview. */
function createCanvas(scene, renderer, preview) {
  const canvas = $('view');
  canvas.width = scene.width;
  canvas.height = scene.height;
  // scaled up to fit 90% of the window's width and 70% of its height, whatever the frame's shape
  canvas.style.width = `min(90vw, ${(70 * scene.width / scene.height).toFixed(3)}vh)`;
  const ctx = canvas.getContext('2d', { alpha: false });
  ctx.imageSmoothingQuality = 'high';
  const image = new ImageData(scene.width, scene.height);
  // The preview is drawn at its own size on a small canvas, then scaled up onto the view.
  const small = preview && Object.assign(document.createElement('canvas'), { width: preview.width, height: preview.height });
  const smallCtx = small && small.getContext('2d', { alpha: false });
  const smallImage = preview && new ImageData(preview.width, preview.height);

  async function paint(which, pose) {
    if (which === 'preview') {
      smallImage.data.set(await preview.run(pose));
      smallCtx.putImageData(smallImage, 0, 0);
      ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
    } else {
      image.data.set(await renderer.run(pose));
      ctx.putImageData(image, 0, 0);
    }
  }
  return { canvas, paint };
}

/**
 * The render loop: only when the view changed, at most one call of session.run in flight, and at
 * most one frame pending (the latest view wins). While the user drags and full frames
 * are slower than the budget, frames come from the preview model; once the camera
 * rests for REST_MS, one full frame refines the image.
 * Returns {requestRender(byUser), whenRendered() -> Promise, exclusive(fn): run fn with the loop held off}.
 */
function createRenderLoop({ scene, renderer, preview, camera, paint }) {
  const quality = params.get('quality') ?? 'auto'; // auto | full: ?quality=full never shows the preview
  const budgetMs = Number(params.get('budget')) || FRAME_BUDGET_MS;
  let dirty = false;
  let moving = false; // the pending change came from the user's pointer/wheel
  let running = false;
  let rafId = 0;
  let refineTimer = 0;
  let waiters = []; // resolved when the view they asked for is on the canvas at full quality
  let fullMsAvg = NaN;
  let lastFrameEnd = 0;
  let intervalAvg = NaN;
  const ema = (avg, x) => (Number.isFinite(avg) ? 0.8 * avg + 0.2 * x : x);

  const status = () => {
    const threads = renderer.backend === 'wasm' ? ` ×${viewer.numThreads} thread${viewer.numThreads > 1 ? 's' : ''}` : '';
    const fps = Number.isFinite(intervalAvg) ? 1000 / intervalAvg : 1000 / viewer.lastFrameMs;
    const { psnr, ok } = viewer.selfCheck;
    const db = Number.isFinite(psnr) ? `${psnr.toFixed(1)} dB` : 'exact';
    const check = ok ? `self-check ${db}` : `self-check FAILED (${db})`;
    const size = viewer.quality === 'preview' ? `preview ${preview.width}×${preview.height}` : `${scene.width}×${scene.height}`;
    // the horizontal field of view of the camera baked into the model (scene.json's camera)
    const c = scene.camera;
    const fov = (Math.atan(c.cx / c.fx) + Math.atan((scene.width - c.cx) / c.fx)) * 180 / Math.PI;
    // where the captured views end, the camera stops: say so while it is held there
    const edge = camera.edge ? ` · ${camera.edge}` : '';
    $('status').textContent =
      `${renderer.backend}${threads} · ${size}, ${fov.toFixed(0)}° wide · ${viewer.lastFrameMs.toFixed(1)} ms/frame · ${fps.toFixed(0)} fps · ${check}${edge}`;
  };

  const requestRender = (byUser = false) => {
    dirty = true;
    moving = byUser;
    if (byUser) { clearTimeout(refineTimer); refineTimer = 0; }
    if (!rafId && !running) rafId = requestAnimationFrame(frame);
  };

  async function frame() {
    rafId = 0;
    if (!dirty || running) return;
    const which = preview && moving && quality !== 'full' && fullMsAvg > budgetMs ? 'preview' : 'full';
    dirty = false;
    running = true;
    const t0 = performance.now();
    try {
      await paint(which, camera.pose());
    } catch (err) {
      showError(err instanceof ViewerError ? err : new ViewerError(`Rendering failed: ${err.message ?? err}`));
      waiters.forEach((w) => w.reject(err));
      waiters = [];
      return; // stays 'running': no further frames
    }
    const t1 = performance.now();
    viewer.lastFrameMs = t1 - t0;
    viewer.quality = which;
    if (which === 'full') {
      viewer.frames += 1;
      fullMsAvg = ema(fullMsAvg, viewer.lastFrameMs);
    } else {
      viewer.previewFrames += 1;
    }
    // Frame rate while frames follow each other; after a pause, the rate one frame allows.
    intervalAvg = lastFrameEnd && t1 - lastFrameEnd < 500 ? ema(intervalAvg, t1 - lastFrameEnd) : NaN;
    lastFrameEnd = t1;
    running = false;
    status();
    if (dirty) {
      rafId = requestAnimationFrame(frame);
    } else if (which === 'preview') {
      refineTimer = setTimeout(() => { refineTimer = 0; if (!dirty) requestRender(false); }, REST_MS);
    } else {
      waiters.forEach((w) => w.resolve());
      waiters = [];
    }
  }

  const whenRendered = () => (!dirty && !running && !refineTimer
    ? Promise.resolve()
    : new Promise((resolve, reject) => waiters.push({ resolve, reject })));

  /** Run fn() with the render loop kept out (for the benchmark's own frames). */
  async function exclusive(fn) {
    running = true;
    try {
      return await fn();
    } finally {
      running = false;
    }
  }
  return { requestRender, whenRendered, exclusive };
}

/**
 * Orbit controls, the URL hash (written at most every HASH_UPDATE_MS while dragging; read
 * on hashchange) and the reset / save buttons. Returns writeHash() (write it now).
 */
function bindControls({ canvas, camera, loop, scene }) {
  let hashTimer = 0;
  const writeHash = () => {
    clearTimeout(hashTimer);
    hashTimer = 0;
    const hash = `#${camera.toHash()}`;
    if (window.location.hash !== hash) history.replaceState(null, '', hash);
  };
  const onChange = (byUser = false) => {
    loop.requestRender(byUser);
    if (!hashTimer) hashTimer = setTimeout(writeHash, HASH_UPDATE_MS);
  };
  attachOrbitControls(canvas, camera, { onChange: () => onChange(true), onEnd: writeHash });
  window.addEventListener('hashchange', () => {
    if (camera.fromHash(window.location.hash)) loop.requestRender();
  });

  const resetButton = $('reset-view');
  resetButton.disabled = false;
  resetButton.addEventListener('click', () => { camera.reset(); onChange(false); writeHash(); });
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
  return writeHash;
}

/** window.viewer's pose(), view(), setView() and benchmark(), now that the scene renders. */
function exposeApi({ camera, loop, writeHash, renderer, preview, paint }) {
  /**
   * Time `frames` renders of the current view two ways, interleaved: the page's own path
   * (pose in, pixels on the canvas) and the bare session.run. Medians in ms.
   */
  viewer.benchmark = async ({ frames = 20, warmup = 3, quality: which = 'full' } = {}) => {
    if (which === 'preview' && !preview) throw new Error('this scene has no preview model');
    await loop.whenRendered();
    const r = which === 'preview' ? preview : renderer;
    const pose = camera.pose();
    const page = [], bare = [];
    await loop.exclusive(async () => {
      for (let i = 0; i < warmup + frames; i++) {
        let t0 = performance.now();
        await paint(which, pose);
        const tPage = performance.now() - t0;
        t0 = performance.now();
        (await r.infer(pose)).dispose();
        const tBare = performance.now() - t0;
        if (i >= warmup) { page.push(tPage); bare.push(tBare); }
      }
    });
    loop.requestRender(false); // repaint the full-quality view
    await loop.whenRendered();
    return {
      page_ms: median(page), run_ms: median(bare), frames, quality: which, backend: renderer.backend,
      threads: viewer.numThreads, width: r.width, height: r.height, crossOriginIsolated: window.crossOriginIsolated,
    };
  };
  viewer.pose = () => Array.from(camera.pose());
  // the orbit's (az, el, r), or a forward-facing region's position (x, y, z) in its mean camera's frame
  viewer.view = () => (camera.position ? { x: camera.position[0], y: camera.position[1], z: camera.position[2] }
    : { az: camera.azimuthDeg, el: camera.elevationDeg, r: camera.radius });
  viewer.edge = () => camera.edge;
  viewer.setView = (a, b, c) => {
    const edge = camera.edge;
    const changed = camera.set(a, b, c);
    if (changed) writeHash();
    if (changed || camera.edge !== edge) loop.requestRender(); // the status line says where it stopped
    return loop.whenRendered();
  };
}

async function start() {
  setState('loading');
  await checkEnvironment();
  const scene = await loadSceneFromUrl();
  const { models, references } = await loadModelsAndReferences(scene);
  const { renderer, preview } = await chooseRenderers(models, scene, references);
  viewer.backend = renderer.backend;

  const { canvas, paint } = createCanvas(scene, renderer, preview);
  const camera = scene.region ? new RegionCamera(scene.region) : new OrbitCamera(scene.orbit, scene.up);
  camera.fromHash(window.location.hash);
  const loop = createRenderLoop({ scene, renderer, preview, camera, paint });
  const writeHash = bindControls({ canvas, camera, loop, scene });
  exposeApi({ camera, loop, writeHash, renderer, preview, paint });

  $('loading').hidden = true;
  canvas.hidden = false;
  loop.requestRender();
  await loop.whenRendered();
  setState('ready');
  resolveReady(viewer);
}

start().catch(showError);
