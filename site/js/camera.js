// Orbit camera: the view state (azimuth, elevation, radius) and its pose.
// The pose formula is the one in export/SCENE_FORMAT.md (and pipeline/cameras.py).

const DEG = Math.PI / 180;
const MAX_ELEVATION_DEG = 89.9;

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const normalize = (a) => { const n = Math.hypot(a[0], a[1], a[2]); return [a[0] / n, a[1] / n, a[2] / n]; };

/** Orthonormal basis (e1, e2, u) for the world up axis `up` (3 numbers, any length). */
export function orbitBasis(up) {
  const u = normalize(up);
  // Reference axis +x, or +y when up is (nearly) parallel to +x: the same test as
  // pipeline/cameras.py, so both sides agree on azimuth 0 for every `up`.
  const a = Math.abs(u[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0];
  const d = dot(a, u);
  const e1 = normalize([a[0] - d * u[0], a[1] - d * u[1], a[2] - d * u[2]]);
  const e2 = cross(u, e1);
  return { e1, e2, u };
}

/**
 * Camera-to-world pose of the orbit camera, OpenGL convention (looks down -z, +y up).
 * Returns a Float32Array(16): the 4x4 matrix, row-major (what the model's input wants).
 */
export function orbitPose(azimuthDeg, elevationDeg, radius, target, up) {
  const { e1, e2, u } = orbitBasis(up);
  const az = azimuthDeg * DEG, el = elevationDeg * DEG;
  const ce = Math.cos(el), ca = Math.cos(az), sa = Math.sin(az), se = Math.sin(el);
  const eye = [0, 1, 2].map((k) => target[k] + radius * (ce * ca * e1[k] + ce * sa * e2[k] + se * u[k]));
  const zc = normalize(sub(eye, target));
  const xc = normalize(cross(u, zc));
  const yc = cross(zc, xc);
  return new Float32Array([
    xc[0], yc[0], zc[0], eye[0],
    xc[1], yc[1], zc[1], eye[1],
    xc[2], yc[2], zc[2], eye[2],
    0, 0, 0, 1,
  ]);
}

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

/** The orbit view within the limits of scene.json's `orbit` block. */
export class OrbitCamera {
  constructor(orbit, up) {
    this.orbit = orbit;
    this.up = up;
    this.reset();
  }

  reset() {
    this.set(this.orbit.azimuth_deg, this.orbit.elevation_deg, this.orbit.radius);
  }

  /** Set the view; elevation and radius are clamped, azimuth wrapped to (-180, 180]. Returns true if it changed. */
  set(azimuthDeg, elevationDeg, radius) {
    const o = this.orbit;
    let az = ((azimuthDeg + 180) % 360 + 360) % 360 - 180;
    if (az === -180) az = 180;
    // The pose is undefined looking straight along `up`; stay a hair away from the poles.
    const el = clamp(elevationDeg, Math.max(o.elevation_min_deg, -MAX_ELEVATION_DEG),
      Math.min(o.elevation_max_deg, MAX_ELEVATION_DEG));
    const r = clamp(radius, o.radius_min, o.radius_max);
    const changed = az !== this.azimuthDeg || el !== this.elevationDeg || r !== this.radius;
    this.azimuthDeg = az;
    this.elevationDeg = el;
    this.radius = r;
    return changed;
  }

  rotate(dAzimuthDeg, dElevationDeg) {
    return this.set(this.azimuthDeg + dAzimuthDeg, this.elevationDeg + dElevationDeg, this.radius);
  }

  zoom(factor) {
    return this.set(this.azimuthDeg, this.elevationDeg, this.radius * factor);
  }

  /** Float32Array(16), row-major camera-to-world. */
  pose() {
    return orbitPose(this.azimuthDeg, this.elevationDeg, this.radius, this.orbit.target, this.up);
  }

  /** URL hash form, e.g. "az=30.00&el=30.00&r=4.000". */
  toHash() {
    return `az=${this.azimuthDeg.toFixed(2)}&el=${this.elevationDeg.toFixed(2)}&r=${this.radius.toFixed(3)}`;
  }

  /** Restore from a URL hash ("#az=..&el=..&r=.."); missing or malformed values keep the current ones. */
  fromHash(hash) {
    const p = new URLSearchParams(hash.replace(/^#/, ''));
    const num = (key, fallback) => {
      const v = Number.parseFloat(p.get(key));
      return Number.isFinite(v) ? v : fallback;
    };
    return this.set(num('az', this.azimuthDeg), num('el', this.elevationDeg), num('r', this.radius));
  }
}

/**
 * Pointer (mouse, touch, pen) and wheel controls on `element`. Calls onChange() when the
 * view changed, onEnd() when a gesture ends (for the URL hash). One pointer drags; two
 * pointers pinch-zoom.
 */
export function attachOrbitControls(element, camera, { onChange, onEnd }) {
  const pointers = new Map(); // pointerId -> {x, y}
  let pinchDistance = 0;
  const pinch = () => {
    const [a, b] = [...pointers.values()];
    return Math.hypot(a.x - b.x, a.y - b.y);
  };

  element.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0) return;
    element.setPointerCapture(ev.pointerId);
    pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
    if (pointers.size === 2) pinchDistance = pinch();
    ev.preventDefault();
  });
  element.addEventListener('pointermove', (ev) => {
    const p = pointers.get(ev.pointerId);
    if (!p) return;
    const dx = ev.clientX - p.x, dy = ev.clientY - p.y;
    p.x = ev.clientX;
    p.y = ev.clientY;
    let changed;
    if (pointers.size === 1) {
      // Half a turn of azimuth per element width; drag right turns the object right.
      const degPerPx = 180 / Math.max(1, element.clientWidth);
      changed = camera.rotate(-dx * degPerPx, dy * degPerPx);
    } else if (pointers.size === 2) {
      const d = pinch();
      changed = pinchDistance > 0 && d > 0 && camera.zoom(pinchDistance / d);
      pinchDistance = d;
    }
    if (changed) onChange();
  });
  const end = (ev) => {
    if (!pointers.delete(ev.pointerId)) return;
    if (pointers.size < 2) pinchDistance = 0;
    onEnd();
  };
  element.addEventListener('pointerup', end);
  element.addEventListener('pointercancel', end);
  element.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const lines = ev.deltaMode === WheelEvent.DOM_DELTA_LINE ? 16 : ev.deltaMode === WheelEvent.DOM_DELTA_PAGE ? 400 : 1;
    if (camera.zoom(Math.exp(ev.deltaY * lines * 0.001))) { onChange(); onEnd(); }
  }, { passive: false });
  element.addEventListener('dblclick', (ev) => {
    ev.preventDefault();
    camera.reset();
    onChange();
    onEnd();
  });
}
