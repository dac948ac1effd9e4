// onnxruntime-web session and one frame: pose (4, 4) -> rgb (1, 3, H, W) -> canvas.

import { ViewerError } from './scene.js';

/** URL of the folder with the vendored runtime (filled by `npm ci`, see tools/vendor.mjs). */
export const VENDOR_URL = new URL('../vendor/', import.meta.url).href;

/** The onnxruntime-web build for each backend: the WASM-only build is the faster CPU path. */
const BUILDS = { wasm: 'ort.wasm.min.mjs', webgpu: 'ort.webgpu.min.mjs' };

/**
 * Import the onnxruntime-web build for `backend` from vendor/ and configure it.
 * Threads need SharedArrayBuffer, i.e. a cross-origin isolated page; `threads` (from
 * ?threads=N) overrides the default of one per core. onnxruntime-web's own default
 * on a 2-core machine is 1, so we always set it.
 */
export async function loadOrt(backend, threads = 0) {
  const file = BUILDS[backend];
  let ort;
  try {
    ort = await import(`${VENDOR_URL}${file}`);
  } catch (err) {
    throw new ViewerError(
      `Could not load onnxruntime-web (${VENDOR_URL}${file}): ${err.message}. ` +
      'Run `npm ci --prefix site` to fill site/vendor/.');
  }
  ort.env.wasm.wasmPaths = VENDOR_URL;
  const cores = navigator.hardwareConcurrency || 1;
  ort.env.wasm.numThreads = window.crossOriginIsolated ? (threads > 0 ? threads : cores) : 1;
  ort.env.logLevel = 'error';
  return ort;
}

/** True when the browser offers a WebGPU adapter at all. */
export async function webgpuAvailable() {
  if (!navigator.gpu) return false;
  try {
    return (await navigator.gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

/**
 * Model output -> canvas bytes. 'rgba255' (our exports: (1, H, W, 4) floats in [0, 255])
 * is one typed-array copy, rounded and clamped by Uint8ClampedArray; 'rgb' (planar
 * (1, 3, H, W) in [0, 1], older exports) needs a per-pixel loop.
 */
export const LAYOUTS = {
  rgba255: { dims: (w, h) => [1, h, w, 4], toRgba: (data, w, h, rgba) => { rgba.set(data); return rgba; } },
  rgb: { dims: (w, h) => [1, 3, h, w], toRgba: (data, w, h, rgba) => planarToRgba(data, w, h, rgba) },
};

/** rgb (3 * H * W floats, planar, in [0, 1]) -> rgba (4 * H * W bytes, interleaved, opaque). */
export function planarToRgba(rgb, width, height, rgba) {
  const n = width * height, g = n, b = 2 * n;
  // Uint8ClampedArray stores round-to-nearest and clamps to [0, 255].
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    rgba[j] = rgb[i] * 255;
    rgba[j + 1] = rgb[g + i] * 255;
    rgba[j + 2] = rgb[b + i] * 255;
    rgba[j + 3] = 255;
  }
  return rgba;
}

/** PSNR in dB over the RGB channels of two same-sized RGBA byte arrays (Infinity if equal). */
export function psnrRgba(a, b) {
  if (a.length !== b.length) throw new Error(`psnrRgba: sizes differ (${a.length} vs ${b.length})`);
  let sum = 0;
  for (let j = 0; j < a.length; j += 4) {
    const dr = a[j] - b[j], dg = a[j + 1] - b[j + 1], db = a[j + 2] - b[j + 2];
    sum += dr * dr + dg * dg + db * db;
  }
  const mse = sum / (3 * (a.length / 4));
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

/**
 * One InferenceSession on one backend ('webgpu' or 'wasm') for one model of a scene.
 * `model`: {url, width, height} (the full model or the preview); input, output and
 * layout come from the scene.
 */
export class Renderer {
  static async create(ort, modelBytes, backend, scene, model) {
    let session;
    try {
      session = await ort.InferenceSession.create(modelBytes, {
        executionProviders: [backend],
        graphOptimizationLevel: 'all',
      });
    } catch (err) {
      throw new ViewerError(`Could not create an onnxruntime-web session on ${backend} for ${model.url}: ${err.message ?? err}`);
    }
    const renderer = new Renderer(ort, session, backend, scene, model);
    if (!session.inputNames.includes(scene.input) || !session.outputNames.includes(scene.output)) {
      await renderer.release();
      throw new ViewerError(
        `The model (${model.url}) has inputs [${session.inputNames}] and outputs [${session.outputNames}], ` +
        `but scene.json names input "${scene.input}" and output "${scene.output}".`);
    }
    return renderer;
  }

  constructor(ort, session, backend, scene, model) {
    this.ort = ort;
    this.session = session;
    this.backend = backend;
    this.scene = scene;
    this.width = model.width;
    this.height = model.height;
    this.url = model.url;
    this.layout = LAYOUTS[scene.outputLayout];
    this.rgba = new Uint8ClampedArray(4 * model.width * model.height);
  }

  /** The bare inference: pose (Float32Array(16), row-major camera-to-world) -> output tensor. */
  async infer(pose) {
    const { input, output } = this.scene;
    const feeds = { [input]: new this.ort.Tensor('float32', pose, [4, 4]) };
    return (await this.session.run(feeds, [output]))[output];
  }

  /** pose -> the RGBA bytes of the image (a reused buffer). */
  async run(pose) {
    const { width, height } = this;
    const tensor = await this.infer(pose);
    try {
      const d = tensor.dims, want = this.layout.dims(width, height);
      if (d.length !== want.length || d.some((x, i) => x !== want[i])) {
        throw new ViewerError(
          `The model's output "${this.scene.output}" (${this.url}) has shape [${d}], but scene.json says [${want}].`);
      }
      return this.layout.toRgba(await tensor.getData(), width, height, this.rgba);
    } finally {
      tensor.dispose();
    }
  }

  async release() {
    await this.session.release();
  }
}
