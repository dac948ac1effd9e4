// Loading and validating scenes/index.json and scene.json (export/SCENE_FORMAT.md).
// Every failure is a ViewerError with a one-line message that names the file and the field.

import { AJV_URL, compileSchema, loadAjv } from './schema.js';

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

const checks = new Map();

/**
 * The check of a `kind` document ('scene' | 'report'): schema/<kind>.schema.json, the one
 * definition of the format and its version (export/site_format.py checks every file it
 * writes against the same schema), fetched once and compiled by Ajv. Resolves to a
 * function doc -> null or the first violation {field, message} (see schema.js).
 */
export function schemaCheck(kind) {
  if (!checks.has(kind)) {
    const url = new URL(`../schema/${kind}.schema.json`, import.meta.url).href;
    checks.set(kind, fetchJson(url, `the ${kind} format`).then(async (schema) => {
      try {
        await loadAjv();
      } catch (err) {
        throw new ViewerError(`Could not load the JSON Schema validator (${AJV_URL}): ${err.message}. ` +
          'Run `npm ci --prefix site` to fill site/vendor/.');
      }
      try {
        return await compileSchema(schema);
      } catch (err) {
        throw new ViewerError(`${url} is not a schema this viewer can use: ${err.message}`);
      }
    }));
  }
  return checks.get(kind);
}

/**
 * A ViewerError "<url>: "<field>" <text> (format: schema/<kind>.schema.json)[; <redo>]", worded
 * as export/site_format.py words the same violation.
 */
function formatError(url, kind, message, redo = '') {
  return new ViewerError(`${url}: ${message} (format: schema/${kind}.schema.json)${redo ? `; ${redo}` : ''}`);
}

/**
 * Throw a one-line ViewerError naming `url` and the field (and ending in `redo`, what to do
 * about it) unless `doc` is a valid `kind` document.
 */
export async function checkDocument(kind, doc, url, redo = '') {
  const found = (await schemaCheck(kind))(doc);
  if (found) throw formatError(url, kind, found.message, redo);
}

/** Fetch scenes/index.json; returns [{name, path}] with at least one entry. */
export async function loadIndex(url = 'scenes/index.json') {
  const index = await fetchJson(url, 'the scene index');
  const fail = (field, want, got) => {
    throw new ViewerError(`${url}: "${field}" must be ${want} (got ${JSON.stringify(got) ?? 'nothing'})`);
  };
  if (!Array.isArray(index?.scenes) || index.scenes.length === 0) {
    fail('scenes', 'a non-empty list of {name, path}', index?.scenes);
  }
  return index.scenes.map((s, i) => {
    for (const k of ['name', 'path']) {
      if (typeof s?.[k] !== 'string' || s[k].length === 0) fail(`scenes[${i}].${k}`, 'a non-empty string', s?.[k]);
    }
    return { name: s.name, path: s.path };
  });
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
 * The checks across fields that JSON Schema cannot express; export/site_format.py's
 * _scene_relations makes the same ones.
 */
function checkRelations(scene, url) {
  const fail = (field, text) => { throw formatError(url, 'scene', `"${field}" ${text}`); };
  if (Math.hypot(...scene.up) < 1e-6) fail('up', `must not be the zero vector (got ${JSON.stringify(scene.up)})`);
  const o = scene.orbit;
  if (!(o.radius_min <= o.radius && o.radius <= o.radius_max)) {
    fail('orbit.radius', `must be in [radius_min, radius_max] = [${o.radius_min}, ${o.radius_max}] (got ${o.radius})`);
  }
  if (!(o.elevation_min_deg <= o.elevation_deg && o.elevation_deg <= o.elevation_max_deg)) {
    fail('orbit.elevation_deg', 'must be in [elevation_min_deg, elevation_max_deg] = ' +
      `[${o.elevation_min_deg}, ${o.elevation_max_deg}] (got ${o.elevation_deg})`);
  }
  if (scene.region) {
    const [lo, hi] = scene.region.extent;
    if (lo.some((a, i) => a > hi[i])) {
      fail('region.extent', `must have lowest <= highest on every axis (got ${JSON.stringify(lo)}, ${JSON.stringify(hi)})`);
    }
    if (scene.region.start.some((v, i) => !(lo[i] <= v && v <= hi[i]))) {
      fail('region.start', `must be inside region.extent (got ${JSON.stringify(scene.region.start)})`);
    }
  }
  for (const k of ['width', 'height']) {
    if (scene.preview && scene.preview[k] > scene[k]) {
      fail(`preview.${k}`, `must be at most the full ${k} ${scene[k]} (got ${scene.preview[k]})`);
    }
  }
}

/**
 * Fetch and validate one scene.json. Returns the parsed scene plus absolute URLs:
 * `modelUrl`, `referenceUrl`, `reportUrl` (null without a report), and `referencePose`
 * as a Float32Array(16), row-major.
 */
export async function loadScene(url) {
  const [scene] = await Promise.all([fetchJson(url, 'the scene description'), schemaCheck('scene')]); // both at once
  await checkDocument('scene', scene, url);
  checkRelations(scene, url);

  const base = new URL(url, document.baseURI);
  const href = (path) => new URL(path, base).href;
  const p = scene.preview;
  const preview = p === undefined ? null : {
    url: href(p.model), width: p.width, height: p.height, referenceUrl: href(p.reference_image),
  };
  return {
    ...scene,
    url: base.href,
    reportUrl: scene.report === undefined ? null : href(scene.report),
    outputLayout: scene.output_layout ?? 'rgb',
    modelUrl: href(scene.model),
    referenceUrl: href(scene.reference.image),
    referencePose: new Float32Array(scene.reference.pose.flat()),
    full: {
      url: href(scene.model), width: scene.width, height: scene.height,
      referenceUrl: href(scene.reference.image),
      fp16Url: scene.model_fp16 === undefined ? null : href(scene.model_fp16),
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
