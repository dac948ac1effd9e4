// The results page: for one exported scene, its report (written by the pipeline's report
// stage; scene.json's "report" field says where): turntables, model card, training curves,
// and every test view as ground truth | teacher | student, worst first.
//
// For tests: window.compare = {ready: Promise, scene, rows: [{view, psnr}] as displayed,
// error}; document.body.dataset.state is 'loading' | 'ready' | 'error'.

import { ViewerError, checkDocument, fetchOk, loadIndex, loadScene, pickScene } from './scene.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const SVG = 'http://www.w3.org/2000/svg';
const FLICKER_MS = 500;

let resolveReady, rejectReady;
const compare = {
  ready: new Promise((resolve, reject) => { resolveReady = resolve; rejectReady = reject; }),
  scene: null,
  rows: [],
  error: null,
};
compare.ready.catch(() => {});
window.compare = compare;

function showError(err) {
  const message = err instanceof ViewerError ? err.message : `Unexpected error: ${err?.stack ?? err}`;
  console.error(message);
  compare.error = message;
  $('error').textContent = message;
  $('error').hidden = false;
  document.body.dataset.state = 'error';
  rejectReady(new Error(message));
}

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
};
const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '–');

/**
 * Fetch the report that scene.json names and check it against schema/report.schema.json;
 * returns it and the URL its paths are relative to.
 */
async function loadReport(scene) {
  const url = scene.reportUrl;
  const rerun = 'Run `python -m pipeline stage report <config>` to write it.';
  if (!url) throw new ViewerError(`${scene.url}: no "report" field, so this scene has no results page. ${rerun}`);
  let response;
  try {
    response = await fetchOk(url, `the report of scene "${scene.name}"`);
  } catch (err) {
    throw new ViewerError(`${err.message}. ${rerun}`);
  }
  let report;
  try {
    report = JSON.parse(await response.text());
  } catch (err) {
    throw new ViewerError(`${url} is not valid JSON: ${err.message}`);
  }
  await checkDocument('report', report, url, 're-run the report stage (`python -m pipeline stage report <config>`)');
  return { report, base: new URL('.', url) };
}

function card(report) {
  const m = report.model_card ?? {}, s = report.summary ?? {}, t = report.teacher_stage ?? {};
  const rows = [
    ['student PSNR / SSIM (test views)', `${fmt(s.psnr)} dB / ${fmt(s.ssim, 3)}`],
    ['teacher PSNR, same views', `${fmt(s.teacher_psnr)} dB`],
    ['student vs teacher', `${fmt(s.psnr_vs_teacher)} dB`],
    ['teacher training', `${t.steps ?? '–'} steps, ${fmt(t.train_seconds, 0)} s`],
    ['parameters', m.params?.toLocaleString() ?? '–'],
    ['ONNX file', m.onnx_bytes ? `${(m.onnx_bytes / 1e6).toFixed(2)} MB` : '–'],
    ['ONNX fp16 weights', m.fp16_bytes ? `${(m.fp16_bytes / 1e6).toFixed(2)} MB, ${fmt(m.fp16_psnr_vs_fp32, 1)} dB vs fp32` : '–'],
    ['FLOPs per frame', m.flops_per_frame ? `${(m.flops_per_frame / 1e9).toFixed(3)} G` : '–'],
    ['onnxruntime-python, 1 thread', m.ort_python_ms_1thread ? `${fmt(m.ort_python_ms_1thread, 1)} ms/frame` : '–'],
    ['output', `${report.width}×${report.height}`],
  ];
  $('card').replaceChildren(...rows.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v))));
}

function turntables(report, base) {
  const t = report.turntable ?? {};
  const figs = [];
  for (const [key, label] of [['student_mp4', 'student'], ['teacher_mp4', `teacher (${t.teacher_size} px)`]]) {
    if (!t[key]) continue;
    const video = el('video', { src: new URL(t[key], base).href, autoplay: '', loop: '', muted: '', playsinline: '' });
    video.muted = true; // the attribute alone does not allow autoplay everywhere
    figs.push(el('figure', {}, video, el('figcaption', {}, label)));
  }
  $('turntables').replaceChildren(...figs);
}

/** One SVG line chart of PSNR against `x` ('step' or 'seconds'). */
function chart(title, points, x, colour) {
  const W = 360, H = 200, L = 44, R = 10, T = 22, B = 30;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('width', W);
  svg.setAttribute('height', H);
  svg.setAttribute('data-points', points.length);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  add('text', { x: L, y: 14 }, title);
  const pts = points.filter((p) => Number.isFinite(p[x]) && Number.isFinite(p.psnr));
  if (pts.length < 2) {
    add('text', { x: L, y: H / 2 }, 'no curve recorded');
    return svg;
  }
  const xs = pts.map((p) => p[x]), ys = pts.map((p) => p.psnr);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.floor(Math.min(...ys)), y1 = Math.ceil(Math.max(...ys));
  const sx = (v) => L + ((v - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (v) => H - B - ((v - y0) / (y1 - y0 || 1)) * (H - T - B);
  add('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B });
  add('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B });
  add('text', { x: 2, y: sy(y1) + 4 }, `${y1} dB`);
  add('text', { x: 2, y: sy(y0) + 4 }, `${y0} dB`);
  add('text', { x: L, y: H - 8 }, x === 'step' ? `${x0}` : `${x0.toFixed(0)} s`);
  add('text', { x: W - R - 60, y: H - 8 }, x === 'step' ? `step ${x1}` : `${x1.toFixed(0)} s`);
  add('polyline', {
    class: 'line', stroke: colour,
    points: pts.map((p) => `${sx(p[x]).toFixed(1)},${sy(p.psnr).toFixed(1)}`).join(' '),
  });
  return svg;
}

function curves(report) {
  const x = $('curve-x').value;
  const c = report.curves ?? {};
  $('curves').replaceChildren(
    chart('teacher: training PSNR (batch)', c.teacher ?? [], x, '#d95f02'),
    chart('student: training PSNR (batch)', c.student ?? [], x, '#1b9e77'));
}

function slider(a, b) {
  const top = el('img', { class: 'top', src: a, alt: 'student' });
  const bottom = el('img', { src: b, alt: 'reference' });
  const range = el('input', { type: 'range', min: '0', max: '100', value: '50', 'aria-label': 'reveal' });
  const update = () => { top.style.clipPath = `inset(0 ${100 - range.value}% 0 0)`; };
  range.addEventListener('input', update);
  update();
  const box = el('div', { class: 'slider' }, bottom, top, range);
  box.top = top;
  return box;
}

function viewsTable(report, base) {
  const pair = $('pair').value;
  const rows = [...report.views].sort((a, b) => a.psnr - b.psnr);
  compare.rows = rows.map((v) => ({ view: v.view, psnr: fmt(v.psnr) }));
  const url = (p) => new URL(p, base).href;
  const sliders = [];
  $('views').tBodies[0].replaceChildren(...rows.map((v) => {
    const s = slider(url(v.student), url(pair === 'gt' ? v.gt : v.teacher));
    sliders.push(s);
    return el('tr', { 'data-view': v.view },
      el('td', {}, v.view),
      el('td', { class: 'psnr' }, fmt(v.psnr)),
      el('td', {}, fmt(v.teacher_psnr)),
      el('td', {}, el('img', { src: url(v.gt), alt: 'ground truth', loading: 'lazy' })),
      el('td', {}, el('img', { src: url(v.teacher), alt: 'teacher', loading: 'lazy' })),
      el('td', {}, el('img', { src: url(v.student), alt: 'student', loading: 'lazy' })),
      el('td', {}, s));
  }));
  return sliders;
}

async function start() {
  const index = await loadIndex();
  const entry = pickScene(index, params.get('scene'), $('scene-select'),
    (name) => window.location.assign(`?scene=${encodeURIComponent(name)}`));
  $('viewer-link').href = `index.html?scene=${encodeURIComponent(entry.name)}`;
  compare.scene = entry.name;

  const { report, base } = await loadReport(await loadScene(entry.path));
  card(report);
  turntables(report, base);
  curves(report);
  $('curve-x').addEventListener('change', () => curves(report));
  let sliders = viewsTable(report, base);
  $('pair').addEventListener('change', () => { sliders = viewsTable(report, base); });

  // Flicker: the student and the chosen reference alternate in the compare column.
  let flickerTimer = 0, shown = true;
  $('flicker').addEventListener('change', (ev) => {
    clearInterval(flickerTimer);
    sliders.forEach((s) => { s.top.style.visibility = 'visible'; });
    if (!ev.target.checked) {
      sliders.forEach((s) => s.querySelector('input').dispatchEvent(new Event('input'))); // back to the slider
      return;
    }
    sliders.forEach((s) => { s.top.style.clipPath = 'none'; }); // whole images alternate
    flickerTimer = setInterval(() => {
      shown = !shown;
      sliders.forEach((s) => { s.top.style.visibility = shown ? 'visible' : 'hidden'; });
    }, FLICKER_MS);
  });

  $('report').hidden = false;
  document.body.dataset.state = 'ready';
  resolveReady(compare);
}

start().catch(showError);
