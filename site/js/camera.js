// The viewer's cameras: the orbit (azimuth, elevation, radius) of an object or a 360 scene, and
// the region camera of a forward-facing one (scene.json's `region`), each with its pose.
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

  /**
   * Set the view; elevation and radius are clamped, azimuth wrapped to (-180, 180]. Returns true
   * if it changed. `edge` says which limit of the captured band stopped the last move ('' if none).
   */
  set(azimuthDeg, elevationDeg, radius) {
    const o = this.orbit;
    // a value that is not a number changes nothing (the current view, or the default one)
    const num = (v, current, fallback) => (Number.isFinite(v) ? v : current ?? fallback);
    azimuthDeg = num(azimuthDeg, this.azimuthDeg, o.azimuth_deg);
    elevationDeg = num(elevationDeg, this.elevationDeg, o.elevation_deg);
    radius = num(radius, this.radius, o.radius);
    let az = ((azimuthDeg + 180) % 360 + 360) % 360 - 180;
    if (az === -180) az = 180;
    // The pose is undefined looking straight along `up`; stay a hair away from the poles.
    const el = clamp(elevationDeg, Math.max(o.elevation_min_deg, -MAX_ELEVATION_DEG),
      Math.min(o.elevation_max_deg, MAX_ELEVATION_DEG));
    const r = clamp(radius, o.radius_min, o.radius_max);
    this.edge = edgeText([
      [el > elevationDeg, 'lowest'], [el < elevationDeg, 'highest'],
      [r > radius, 'closest'], [r < radius, 'farthest'],
    ]);
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

/** The status line's words for the limits that stopped a move: [[hit, word], ...] -> '' or a phrase. */
function edgeText(limits) {
  const hit = limits.filter(([h]) => h).map(([, w]) => w);
  return hit.length ? `stopped at the ${hit.join(' and ')} view the photos cover` : '';
}

/**
 * A forward-facing scene's camera (scene.json's `region`): it keeps the photos' mean orientation
 * and moves inside the box their centres span, in that camera's frame (x right, y up, z back);
 * a drag pans (x, y), the wheel or a pinch moves along z. Outside that box the model has seen
 * nothing, so the camera stops at its faces and says so (`edge`).
 */
export class RegionCamera {
  constructor(region) {
    this.region = region;
    const [lo, hi] = region.extent;
    // a drag across the canvas pans the box's larger side; a zoom step is a tenth of that
    this.span = Math.max(hi[0] - lo[0], hi[1] - lo[1], 1e-6);
    this.reset();
  }

  reset() {
    this.set(...this.region.start);
  }

  /** Set the position (mean-camera frame); each axis clamped to the box. True if it changed. */
  set(x, y, z) {
    const [lo, hi] = this.region.extent;
    const keep = this.position ?? this.region.start; // a value that is not a number changes nothing
    const want = [x, y, z].map((v, k) => (Number.isFinite(v) ? v : keep[k]));
    [x, y, z] = want;
    const p = want.map((v, k) => clamp(v, lo[k], hi[k]));
    this.edge = edgeText([
      [p[0] !== x, p[0] > x ? 'leftmost' : 'rightmost'], [p[1] !== y, p[1] > y ? 'lowest' : 'highest'],
      [p[2] !== z, p[2] > z ? 'closest' : 'farthest'],
    ]);
    const changed = !this.position || p.some((v, k) => v !== this.position[k]);
    this.position = p;
    return changed;
  }

  /** Pointer drag (the orbit's degrees: half a turn per canvas width) -> pan. */
  rotate(dAzimuthDeg, dElevationDeg) {
    const [x, y, z] = this.position;
    return this.set(x - dAzimuthDeg / 180 * this.span, y - dElevationDeg / 180 * this.span, z);
  }

  /** Wheel or pinch (factor > 1: out) -> along the view axis. */
  zoom(factor) {
    const [x, y, z] = this.position;
    return this.set(x, y, z + Math.log(factor) * this.span);
  }

  /** Float32Array(16), row-major camera-to-world: the mean rotation at centre + R p. */
  pose() {
    const { rotation: r, centre: c } = this.region;
    const p = this.position;
    const eye = [0, 1, 2].map((i) => c[i] + r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2]);
    return new Float32Array([
      r[0][0], r[0][1], r[0][2], eye[0],
      r[1][0], r[1][1], r[1][2], eye[1],
      r[2][0], r[2][1], r[2][2], eye[2],
      0, 0, 0, 1,
    ]);
  }

  toHash() {
    return `x=${this.position.map((v) => v.toFixed(4)).join(',')}`;
  }

  fromHash(hash) {
    const v = (new URLSearchParams(hash.replace(/^#/, '')).get('x') ?? '').split(',').map(Number.parseFloat);
    return v.length === 3 && v.every(Number.isFinite) ? this.set(...v) : false;
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
