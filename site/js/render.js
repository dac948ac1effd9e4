// onnxruntime-web session and one frame: pose (4, 4) -> rgb (1, 3, H, W) -> canvas.

import { ViewerError } from './scene.js';

/** URL of the folder with the vendored runtime (filled by `npm ci`, see tools/vendor.mjs). */
export const VENDOR_URL = new URL('../vendor/', import.meta.url).href;

/**
 * Import onnxruntime-web (WebGPU + WASM build) from vendor/ and configure it.
 * Threads need SharedArrayBuffer, i.e. a cross-origin isolated page.
 */
export async function loadOrt() {
  let ort;
  try {
    ort = await import(`${VENDOR_URL}ort.webgpu.min.mjs`);
  } catch (err) {
    throw new ViewerError(
      `Could not load onnxruntime-web from ${VENDOR_URL} (${err.message}). ` +
      'Run `npm ci --prefix site` to fill site/vendor/.');
  }
  ort.env.wasm.wasmPaths = VENDOR_URL;
  ort.env.wasm.numThreads = window.crossOriginIsolated ? (navigator.hardwareConcurrency || 1) : 1;
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

/** One InferenceSession on one backend ('webgpu' or 'wasm') for one scene. */
export class Renderer {
  static async create(ort, modelBytes, backend, scene) {
    let session;
    try {
      session = await ort.InferenceSession.create(modelBytes, {
        executionProviders: [backend],
        graphOptimizationLevel: 'all',
      });
    } catch (err) {
      throw new ViewerError(`Could not create an onnxruntime-web session on ${backend} for ${scene.modelUrl}: ${err.message ?? err}`);
    }
    const renderer = new Renderer(ort, session, backend, scene);
    if (!session.inputNames.includes(scene.input) || !session.outputNames.includes(scene.output)) {
      await renderer.release();
      throw new ViewerError(
        `The model (${scene.modelUrl}) has inputs [${session.inputNames}] and outputs [${session.outputNames}], ` +
        `but scene.json names input "${scene.input}" and output "${scene.output}".`);
    }
    return renderer;
  }

  constructor(ort, session, backend, scene) {
    this.ort = ort;
    this.session = session;
    this.backend = backend;
    this.scene = scene;
    this.rgba = new Uint8ClampedArray(4 * scene.width * scene.height);
  }

  /** pose: Float32Array(16), row-major camera-to-world. Returns the RGBA bytes (reused buffer). */
  async run(pose) {
    const { width, height, input, output } = this.scene;
    const feeds = { [input]: new this.ort.Tensor('float32', pose, [4, 4]) };
    const results = await this.session.run(feeds, [output]);
    const tensor = results[output];
    try {
      const d = tensor.dims;
      if (d.length !== 4 || d[0] !== 1 || d[1] !== 3 || d[2] !== height || d[3] !== width) {
        throw new ViewerError(
          `The model's output "${output}" has shape [${d}], but scene.json says [1, 3, ${height}, ${width}].`);
      }
      return planarToRgba(await tensor.getData(), width, height, this.rgba);
    } finally {
      tensor.dispose();
    }
  }

  async release() {
    await this.session.release();
  }
}
