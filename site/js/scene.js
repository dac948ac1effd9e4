// Loading and validating scenes/index.json and scene.json (export/SCENE_FORMAT.md).
// Every failure is a ViewerError with a message that names the file and the field.

export class ViewerError extends Error {}

/** fetch() that turns network errors and HTTP errors into ViewerErrors naming `what`. */
export async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new ViewerError(`Could not fetch ${what} (${url}): ${err.message}`);
  }
  if (!response.ok) {
    throw new ViewerError(`Could not fetch ${what} (${url}): HTTP ${response.status} ${response.statusText}`.trim());
  }
  return response;
}

async function fetchJson(url, what) {
  const response = await fetchOk(url, what);
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ViewerError(`${what} (${url}) is not valid JSON: ${err.message}`);
  }
}

const formatVersions = new Map();

/**
 * The format version this viewer reads for `kind` ('scene' | 'report'): `properties.format.const`
 * of schema/<kind>.schema.json, the single definition of the format (export/site_format.py
 * checks every file it writes against the same schema).
 */
export function formatVersion(kind) {
  if (!formatVersions.has(kind)) {
    const url = new URL(`../schema/${kind}.schema.json`, import.meta.url).href;
    formatVersions.set(kind, fetchJson(url, `the ${kind} format`).then((schema) => {
      const version = schema?.properties?.format?.const;
      if (!Number.isInteger(version)) {
        throw new ViewerError(`${url}: "properties.format.const" must be an integer (got ${JSON.stringify(version)})`);
      }
      return version;
    }));
  }
  return formatVersions.get(kind);
}

// Small checkers: each throws a ViewerError "<file>: <field> must be ... (got ...)".
function checker(file) {
  const fail = (field, want, got) => {
    let shown;
    try { shown = JSON.stringify(got); } catch { shown = String(got); }
    if (shown === undefined) shown = 'nothing';
    if (shown.length > 80) shown = `${shown.slice(0, 77)}...`;
    throw new ViewerError(`${file}: "${field}" must be ${want} (got ${shown})`);
  };
  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
  return {
    object(obj, field) {
      const v = obj?.[field];
      if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(field, 'an object', v);
      return v;
    },
    string(obj, field, path = field) {
      const v = obj?.[field];
      if (typeof v !== 'string' || v.length === 0) fail(path, 'a non-empty string', v);
      return v;
    },
    number(obj, field, path = field, lo = -Infinity, hi = Infinity) {
      const v = obj?.[field];
      if (!isNum(v) || v < lo || v > hi) {
        fail(path, lo === -Infinity && hi === Infinity ? 'a finite number' : `a number in [${lo}, ${hi}]`, v);
      }
      return v;
    },
    integer(obj, field, lo, hi) {
      const v = obj?.[field];
      if (!Number.isInteger(v) || v < lo || v > hi) fail(field, `an integer in [${lo}, ${hi}]`, v);
      return v;
    },
    vec(obj, field, n, path = field, lo = -Infinity, hi = Infinity) {
      const v = obj?.[field];
      if (!Array.isArray(v) || v.length !== n || !v.every((x) => isNum(x) && x >= lo && x <= hi)) {
        fail(path, `a list of ${n} ${lo === -Infinity ? 'finite numbers' : `numbers in [${lo}, ${hi}]`}`, v);
      }
      return v;
    },
    fail,
  };
}

/** Fetch scenes/index.json; returns [{name, path}] with at least one entry. */
export async function loadIndex(url = 'scenes/index.json') {
  const index = await fetchJson(url, 'the scene index');
  const c = checker(url);
  if (!Array.isArray(index?.scenes) || index.scenes.length === 0) {
    c.fail('scenes', 'a non-empty list of {name, path}', index?.scenes);
  }
  return index.scenes.map((s, i) => ({
    name: c.string(s, 'name', `scenes[${i}].name`),
    path: c.string(s, 'path', `scenes[${i}].path`),
  }));
}

/**
 * The index entry named `wanted` (default: the first); fills `select` with every scene and
 * calls go(name) when the user picks another.
 */
export function pickScene(index, wanted, select, go) {
  const entry = wanted ? index.find((s) => s.name === wanted) : index[0];
  if (!entry) {
    throw new ViewerError(`Scene "${wanted}" is not in scenes/index.json (it has: ${index.map((s) => s.name).join(', ')}).`);
  }
  for (const s of index) select.add(new Option(s.name, s.name, false, s === entry));
  select.disabled = index.length < 2;
  select.addEventListener('change', () => go(select.value));
  return entry;
}

/**
 * Fetch and validate one scene.json. Returns the parsed scene plus absolute URLs:
 * `modelUrl`, `referenceUrl`, `reportUrl` (null without a report), and `referencePose`
 * as a Float32Array(16), row-major.
 */
export async function loadScene(url) {
  const [scene, version] = await Promise.all([fetchJson(url, 'the scene description'), formatVersion('scene')]);
  const c = checker(url);
  if (scene === null || typeof scene !== 'object' || Array.isArray(scene)) c.fail('(top level)', 'an object', scene);
  if (scene.format !== version) {
    c.fail('format', `${version} (the format this viewer reads: schema/scene.schema.json)`, scene.format);
  }
  c.string(scene, 'name');
  c.string(scene, 'model');
  c.string(scene, 'input');
  c.string(scene, 'output');
  c.integer(scene, 'width', 1, 4096);
  c.integer(scene, 'height', 1, 4096);
  if (scene.camera_convention !== 'opengl') {
    c.fail('camera_convention', '"opengl" (the only convention this viewer supports)', scene.camera_convention);
  }
  const up = c.vec(scene, 'up', 3);
  if (Math.hypot(...up) < 1e-6) c.fail('up', 'a non-zero vector', up);
  c.vec(scene, 'background', 3, 'background', 0, 1);

  const o = c.object(scene, 'orbit');
  c.vec(o, 'target', 3, 'orbit.target');
  const rMin = c.number(o, 'radius_min', 'orbit.radius_min', 1e-6);
  const rMax = c.number(o, 'radius_max', 'orbit.radius_max', rMin);
  c.number(o, 'radius', 'orbit.radius', rMin, rMax);
  c.number(o, 'azimuth_deg', 'orbit.azimuth_deg');
  const elMin = c.number(o, 'elevation_min_deg', 'orbit.elevation_min_deg', -90, 90);
  const elMax = c.number(o, 'elevation_max_deg', 'orbit.elevation_max_deg', elMin, 90);
  c.number(o, 'elevation_deg', 'orbit.elevation_deg', elMin, elMax);

  const ref = c.object(scene, 'reference');
  c.string(ref, 'image', 'reference.image');
  const pose = ref.pose;
  const okRow = (row) => Array.isArray(row) && row.length === 4 && row.every((x) => typeof x === 'number' && Number.isFinite(x));
  if (!Array.isArray(pose) || pose.length !== 4 || !pose.every(okRow)) {
    c.fail('reference.pose', 'a 4x4 list of finite numbers (camera-to-world, row-major)', pose);
  }

  const layout = scene.output_layout ?? 'rgb';
  if (layout !== 'rgb' && layout !== 'rgba255') {
    c.fail('output_layout', '"rgba255" or "rgb" (or absent: "rgb")', layout);
  }

  const base = new URL(url, document.baseURI);
  let preview = null;
  if (scene.preview !== undefined) {
    const p = c.object(scene, 'preview');
    c.string(p, 'model', 'preview.model');
    c.string(p, 'reference_image', 'preview.reference_image');
    for (const k of ['width', 'height']) {
      const v = p[k];
      if (!Number.isInteger(v) || v < 1 || v > scene[k]) c.fail(`preview.${k}`, `an integer in [1, ${scene[k]}]`, v);
    }
    preview = {
      url: new URL(p.model, base).href, width: p.width, height: p.height,
      referenceUrl: new URL(p.reference_image, base).href,
    };
  }
  if (scene.report !== undefined) c.string(scene, 'report');
  return {
    ...scene,
    url: base.href,
    reportUrl: scene.report === undefined ? null : new URL(scene.report, base).href,
    outputLayout: layout,
    modelUrl: new URL(scene.model, base).href,
    referenceUrl: new URL(ref.image, base).href,
    referencePose: new Float32Array(pose.flat()),
    full: {
      url: new URL(scene.model, base).href, width: scene.width, height: scene.height,
      referenceUrl: new URL(ref.image, base).href,
      fp16Url: scene.model_fp16 === undefined ? null : new URL(c.string(scene, 'model_fp16'), base).href,
    },
    preview,
  };
}

/**
 * Fetch the model bytes, reporting progress(fraction in [0, 1] or NaN when the size is
 * unknown, bytes so far). Returns a Uint8Array.
 */
export async function fetchModel(url, progress) {
  const response = await fetchOk(url, 'the model');
  const total = Number(response.headers.get('content-length')) || 0;
  if (!response.body) {
    const bytes = new Uint8Array(await response.arrayBuffer());
    progress(1, bytes.length);
    return bytes;
  }
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    progress(total ? received / total : NaN, received);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  if (bytes.length === 0) throw new ViewerError(`The model (${url}) is empty.`);
  progress(1, received);
  return bytes;
}

/** Decode a PNG URL into RGBA bytes exactly as stored (no colour management). */
export async function loadImageRgba(url, what) {
  const blob = await (await fetchOk(url, what)).blob();
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (err) {
    throw new ViewerError(`Could not decode ${what} (${url}): ${err.message}`);
  }
  const canvas = typeof OffscreenCanvas !== 'undefined'
    ? new OffscreenCanvas(bitmap.width, bitmap.height)
    : Object.assign(document.createElement('canvas'), { width: bitmap.width, height: bitmap.height });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const { data, width, height } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  bitmap.close();
  return { data, width, height };
}
