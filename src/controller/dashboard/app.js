// SPDX-License-Identifier: MIT
// The dashboard's script (served at /dashboard/app.js). It reads the
// controller's /dashboard/events stream: a `snapshot` of every drone and of
// the backends worth showing, then `update`s with only the rows that
// changed. Rows are kept by id; changed ones are redrawn a batch per
// animation frame, so a burst of updates never blocks the page. Terminate
// and drain call the /ctrl API. Text from the controller only ever goes
// into the page as text (textContent), never as markup.
'use strict';

(function () {
  const base = new URL('.', location.href); // the controller's root, as this page sees it
  const ORDER = { scheduled: 10, loading: 20, starting: 30, waiting: 40, ready: 50,
    terminating: 60, 'hard-terminating': 65, terminated: 70 };
  const FAILED_REASONS = new Set(['startuptimeout', 'internalerror', 'lost', 'keyexpired']);
  const RENDER_BATCH = 200;  // rows redrawn per animation frame
  const CONFIRM_MS = 4000;   // a second click within this confirms an action
  const RETRY_MS = 3000;     // reconnect delay once the stream is closed for good

  const backends = new Map(); // id -> {data, tr, cells}
  const drones = new Map();   // id -> {data, tr, cells}
  const pending = { backends: new Set(), drones: new Set(), removed: new Set() };
  const onScreen = new Set(); // backend rows in or near the viewport: only these tick
  const visibility = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) onScreen.add(e.target.dataset.id);
      else onScreen.delete(e.target.dataset.id);
    }
  }, { rootMargin: '200px' });
  let control = false;
  let skew = 0;               // the controller's clock minus ours, ms
  let frameQueued = false;
  let source = null;

  const $ = (id) => document.getElementById(id);
  const filters = { cluster: $('f-cluster'), state: $('f-state'), key: $('f-key') };
  const now = () => Date.now() + skew;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function duration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return '';
    if (ms < 0) ms = 0;
    if (ms < 1000) return ms + ' ms';
    const s = Math.floor(ms / 1000);
    if (s < 60) return (ms / 1000).toFixed(s < 10 ? 1 : 0) + ' s';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  function notice(text, isError) {
    const n = $('notice');
    n.textContent = text;
    n.className = 'notice' + (isError ? ' error' : '');
    n.hidden = !text;
  }

  // ---- backends ----

  // What a backend row shows, from the store's row.
  function derive(b) {
    const hist = (b.history || []).slice().sort((x, y) =>
      (x[1] - y[1]) || ((ORDER[x[0].status] || 0) - (ORDER[y[0].status] || 0)));
    const st = b.state || {};
    const created = hist.length ? hist[0][1] : b.last_status_time;
    const live = st.status !== 'terminated';
    // Why it is ending: its own reason, else the one it gave when termination began.
    let reason = st.reason || null;
    for (const h of hist) if (!reason && h[0].reason) reason = h[0].reason;
    let failed = false;
    if (st.status === 'terminated') {
      failed = (typeof st.exit_code === 'number' && st.exit_code !== 0) ||
        FAILED_REASONS.has(reason) || (!reason && (ORDER[st.last_status] || 0) < ORDER.ready);
    }
    return { hist, st, created, live, failed, reason };
  }

  function keyText(k) {
    if (!k) return '';
    return (k.namespace ? k.namespace + '/' : '') + k.name;
  }

  function historyText(hist) {
    if (!hist.length) return '';
    const t0 = hist[0][1];
    return hist.map((h, i) => {
      const s = h[0].status + (h[0].reason ? ' (' + h[0].reason + ')' : '');
      return i === 0 ? s : s + ' +' + duration(h[1] - t0);
    }).join(' → ');
  }

  // A row: a grid of cells (not a <table>: an off-screen row costs no layout or paint).
  function gridRow(id, names) {
    const tr = el('div', 'row');
    tr.setAttribute('role', 'row');
    tr.dataset.id = id;
    const cells = {};
    for (const name of names) {
      cells[name] = el('span', 'col-' + name);
      cells[name].setAttribute('role', 'cell');
      tr.appendChild(cells[name]);
    }
    return { tr, cells };
  }

  function backendRow(id) {
    const { tr, cells } = gridRow(id, ['key', 'id', 'drone', 'state', 'history', 'age', 'idle', 'exit', 'actions']);
    cells.id.classList.add('mono');
    cells.exit.classList.add('mono');
    visibility.observe(tr);
    return { tr, cells, data: null };
  }

  function drawBackend(row) {
    const b = row.data;
    const d = derive(b);
    const c = row.cells;
    row.d = d;
    row.tr.dataset.status = d.st.status || '';
    row.tr.dataset.cluster = b.cluster || '';
    row.tr.classList.toggle('gone', !d.live);
    c.key.textContent = keyText(b.key);
    if (b.key && b.key.tag) c.key.appendChild(el('span', 'reason', b.key.tag));
    c.id.textContent = b.id;
    c.drone.textContent = b.drone || '';
    c.state.textContent = '';
    c.state.appendChild(el('span', 'state ' + (d.failed ? 'failed' : d.st.status), d.st.status));
    const why = [];
    if (d.reason) why.push(d.reason);
    if (d.st.status === 'terminated' && d.st.last_status) why.push('after ' + d.st.last_status);
    if (why.length) c.state.appendChild(el('span', 'reason' + (d.failed ? ' bad' : ''), why.join(', ')));
    c.history.textContent = historyText(d.hist);
    c.history.title = c.history.textContent;
    c.exit.textContent = typeof d.st.exit_code === 'number' ? String(d.st.exit_code) : '';
    drawBackendActions(row);
    tickBackend(row);
  }

  function drawBackendActions(row) {
    const c = row.cells.actions;
    const st = row.d.st.status;
    c.textContent = '';
    if (!control || !row.d.live) return;
    const hard = st === 'terminating' || st === 'hard-terminating';
    c.appendChild(actionButton(hard ? 'Hard terminate' : 'Terminate', 'terminate',
      'ctrl/b/' + encodeURIComponent(row.data.id) + (hard ? '/hard-terminate' : '/soft-terminate'),
      'terminate ' + row.data.id));
  }

  // Sets a cell's text only when it differs: an unchanged cell costs no layout.
  function setText(cell, text) {
    if (cell.textContent !== text) cell.textContent = text;
  }

  function tickBackend(row) {
    const b = row.data;
    const t = now();
    setText(row.cells.age, duration(t - row.d.created));
    let idle = '';
    if (row.d.live && b.last_keepalive) {
      idle = duration(t - b.last_keepalive);
      if (typeof b.allowed_idle_ms === 'number') idle += ' / ' + duration(b.allowed_idle_ms);
    }
    setText(row.cells.idle, idle);
  }

  function backendVisible(row) {
    const b = row.data;
    const cluster = filters.cluster.value;
    const state = filters.state.value;
    const key = filters.key.value.trim().toLowerCase();
    if (cluster && b.cluster !== cluster) return false;
    if (state === 'live' && !row.d.live) return false;
    if (state && state !== 'live' && row.d.st.status !== state) return false;
    if (key && !keyText(b.key).toLowerCase().includes(key) && !b.id.toLowerCase().includes(key)) return false;
    return true;
  }

  // ---- drones ----

  function droneRow(id) {
    const { tr, cells } = gridRow(id, ['name', 'cluster', 'pool', 'state', 'backends', 'heartbeat', 'actions']);
    cells.name.classList.add('mono');
    return { tr, cells, data: null };
  }

  function drawDrone(row) {
    const dr = row.data;
    const c = row.cells;
    row.tr.dataset.cluster = dr.cluster || '';
    row.tr.dataset.draining = dr.draining ? 'true' : 'false';
    row.tr.dataset.connected = dr.connected ? 'true' : 'false';
    c.name.textContent = dr.name;
    c.cluster.textContent = dr.cluster || '';
    c.pool.textContent = dr.pool || '';
    c.state.textContent = '';
    c.state.appendChild(el('span', 'state ' + (dr.connected ? 'up' : 'down'), dr.connected ? 'connected' : 'disconnected'));
    if (dr.draining) c.state.appendChild(el('span', 'state draining', 'draining'));
    c.actions.textContent = '';
    if (control && !dr.draining && dr.cluster) {
      c.actions.appendChild(actionButton('Drain', 'drain',
        'ctrl/c/' + encodeURIComponent(dr.cluster) + '/d/' + encodeURIComponent(dr.name) + '/drain',
        'drain ' + dr.name));
    }
    tickDrone(row);
  }

  function tickDrone(row) {
    const dr = row.data;
    let live = 0;
    for (const b of backends.values()) {
      if (b.data.drone_id === dr.id && b.data.state && b.data.state.status !== 'terminated') live++;
    }
    setText(row.cells.backends, String(live));
    setText(row.cells.heartbeat, dr.last_heartbeat ? duration(now() - dr.last_heartbeat) + ' ago' : 'never');
  }

  // ---- actions ----

  // A button that asks for a second click, then POSTs to path (relative to the controller's root).
  function actionButton(label, action, path, what) {
    const btn = el('button', '', label);
    btn.type = 'button';
    btn.dataset.action = action;
    let armed = null;
    btn.addEventListener('click', () => {
      if (!armed) {
        btn.textContent = 'Confirm ' + label.toLowerCase() + '?';
        btn.classList.add('confirm');
        armed = setTimeout(() => { armed = null; btn.textContent = label; btn.classList.remove('confirm'); }, CONFIRM_MS);
        return;
      }
      clearTimeout(armed);
      armed = null;
      btn.disabled = true;
      btn.textContent = label + '…';
      fetch(new URL(path, base), { method: 'POST', credentials: 'same-origin' }).then((r) => {
        if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
        notice('');
      }).catch((e) => {
        notice(what + ': ' + e.message, true);
        btn.disabled = false;
        btn.textContent = label;
        btn.classList.remove('confirm');
      });
    });
    return btn;
  }

  // ---- rendering ----

  function schedule() {
    if (!frameQueued) {
      frameQueued = true;
      requestAnimationFrame(render);
    }
  }

  function take(set, n) {
    const out = [];
    for (const v of set) {
      if (out.length >= n) break;
      out.push(v);
    }
    for (const v of out) set.delete(v);
    return out;
  }

  function render() {
    frameQueued = false;
    let budget = RENDER_BATCH;
    const dbody = $('drones').querySelector('.body');
    const bbody = $('backends').querySelector('.body');
    for (const id of take(pending.removed, budget)) {
      const row = backends.get(id);
      if (row) {
        visibility.unobserve(row.tr);
        onScreen.delete(id);
        row.tr.remove();
        backends.delete(id);
      }
    }
    for (const id of take(pending.drones, budget)) {
      const row = drones.get(id);
      if (!row) continue;
      if (!row.tr.parentNode) dbody.appendChild(row.tr);
      drawDrone(row);
      row.tr.hidden = !!filters.cluster.value && row.data.cluster !== filters.cluster.value;
      budget--;
    }
    for (const id of take(pending.backends, Math.max(budget, 0))) {
      const row = backends.get(id);
      if (!row) continue;
      if (!row.tr.parentNode) bbody.insertBefore(row.tr, bbody.firstChild);
      drawBackend(row);
      row.tr.hidden = !backendVisible(row);
    }
    summary();
    if (pending.backends.size || pending.drones.size || pending.removed.size) schedule();
  }

  function summary() {
    const byState = {};
    let shown = 0;
    for (const row of backends.values()) {
      if (!row.d) continue;
      byState[row.d.st.status] = (byState[row.d.st.status] || 0) + 1;
      if (!row.tr.hidden) shown++;
    }
    $('counts').textContent = Object.keys(byState).sort((a, b) => ORDER[a] - ORDER[b])
      .map((s) => byState[s] + ' ' + s).join(' · ');
    $('backends-count').textContent = shown + ' shown of ' + backends.size;
    $('drones-count').textContent = String(drones.size);
    syncClusters();
  }

  function syncClusters() {
    const seen = new Set();
    for (const r of drones.values()) if (r.data.cluster) seen.add(r.data.cluster);
    for (const r of backends.values()) if (r.data.cluster) seen.add(r.data.cluster);
    const sel = filters.cluster;
    const have = new Set(Array.from(sel.options).map((o) => o.value));
    for (const c of Array.from(seen).sort()) {
      if (!have.has(c)) sel.appendChild(el('option', '', c)).value = c;
    }
  }

  function refilter() {
    for (const row of backends.values()) if (row.d) row.tr.hidden = !backendVisible(row);
    for (const row of drones.values()) row.tr.hidden = !!filters.cluster.value && row.data.cluster !== filters.cluster.value;
    summary();
  }

  function tick() {
    for (const id of onScreen) {
      const row = backends.get(id);
      if (row && row.d && !row.tr.hidden) tickBackend(row);
    }
    for (const row of drones.values()) if (row.tr.parentNode) tickDrone(row);
  }

  // ---- the stream ----

  function put(map, set, make, data) {
    const id = String(data.id);
    let row = map.get(id);
    if (!row) {
      row = make(id);
      map.set(id, row);
    }
    row.data = data;
    set.add(id);
  }

  function snapshot(msg) {
    skew = msg.now - Date.now();
    control = !!msg.control;
    $('mode').hidden = control;
    for (const row of backends.values()) {
      visibility.unobserve(row.tr);
      row.tr.remove();
    }
    onScreen.clear();
    for (const row of drones.values()) row.tr.remove();
    backends.clear();
    drones.clear();
    pending.backends.clear();
    pending.drones.clear();
    pending.removed.clear();
    // Oldest first: each new row goes on top, so the newest ends up first.
    const rows = msg.backends.slice().sort((a, b) => derive(a).created - derive(b).created);
    for (const b of rows) put(backends, pending.backends, backendRow, b);
    for (const d of msg.drones) put(drones, pending.drones, droneRow, d);
    schedule();
  }

  function update(msg) {
    skew = msg.now - Date.now();
    for (const b of msg.backends || []) put(backends, pending.backends, backendRow, b);
    for (const d of msg.drones || []) put(drones, pending.drones, droneRow, d);
    for (const id of msg.removed || []) {
      pending.backends.delete(id);
      pending.removed.add(id);
    }
    // A drone's live count follows its backends.
    if ((msg.backends || []).length) for (const id of drones.keys()) pending.drones.add(id);
    schedule();
  }

  function setConn(state, text) {
    const c = $('conn');
    c.className = 'conn ' + state;
    c.textContent = text;
  }

  function connect() {
    source = new EventSource(new URL('dashboard/events', base));
    source.addEventListener('snapshot', (e) => { setConn('live', 'live'); snapshot(JSON.parse(e.data)); });
    source.addEventListener('update', (e) => update(JSON.parse(e.data)));
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        setConn('down', 'disconnected');
        source.close();
        setTimeout(connect, RETRY_MS);
      } else {
        setConn('connecting', 'reconnecting…');
      }
    };
  }

  filters.cluster.addEventListener('change', refilter);
  filters.state.addEventListener('change', refilter);
  filters.key.addEventListener('input', refilter);
  setInterval(tick, 1000);
  connect();
})();
