// Classic script, runs before everything else.
//
// 1. Options for coi-serviceworker (it reads window.coi). After registering its service
//    worker it reloads the page once; main.js sees window.coiReloading and does not
//    start downloading the model into a page that is about to go away. The reload waits
//    until the worker is active: a navigation that starts while it still installs bypasses
//    it, and that page would be neither isolated nor reloaded again. Once main.js has
//    given up waiting (window.coiGaveUp), the viewer runs single-threaded and is never
//    reloaded under the user; the next visit is isolated.
// 2. A last-resort error display: if main.js cannot even load (a missing or broken
//    file), say so instead of showing "loading..." forever.
window.coi = {
  quiet: true,
  doReload: () => {
    window.coiReloading = true;
    navigator.serviceWorker.ready.then(() => { if (!window.coiGaveUp) window.location.reload(); });
  },
};

window.addEventListener('error', (ev) => {
  // Resource errors (a <script> that 404s) arrive here with no message; module syntax
  // errors arrive with one. main.js reports its own errors through #error itself.
  if (window.viewerStarted) return;
  const target = ev.target && ev.target !== window ? (ev.target.src || ev.target.href) : '';
  // Without the service worker the viewer still works, single-threaded.
  if (target && target.endsWith('/coi-serviceworker.js')) return;
  const message = target ? `Could not load ${target}` : `Script error: ${ev.message || 'unknown'}`;
  const show = () => {
    const el = document.getElementById('error');
    if (!el) return;
    el.textContent = `${message}. The viewer cannot start.`;
    el.hidden = false;
    document.body.dataset.state = 'error';
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', show);
  else show();
}, true);
