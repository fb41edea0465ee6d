// The nanofaas dashboard. Hand-written, no dependencies, no build step; served by the control
// plane under a Content-Security-Policy that allows this file and nothing inline.
//
// It reads GET /v1/ui/stream (server-sent events read with fetch, so that the API token can go
// in an Authorization header) and draws each function's pool, rates, latency and starts, and the
// recent executions; a row opens the execution's logs and trace.
'use strict';
(() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const KEY = 'nanofaas.token';
  const MAX_BUFFER = 8 * 1024 * 1024;
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(KEY) || '';
  let abort = null;
  let backoff = 500;
  let retryTimer = null;
  let opened = null; // { id, row } of the execution shown in the panel
  const state = { now: 0, points: 300, functions: new Map(), recent: [] };

  // ---- small DOM helpers (text only: nothing from the server is parsed as HTML) ----------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return '–';
    if (ms < 1) return ms.toFixed(2) + ' ms';
    if (ms < 1000) return (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + ' ms';
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }
  function fmtTime(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }
  function authHeaders() {
    return token ? { Authorization: 'Bearer ' + token } : {};
  }
  function setConn(text, cls) {
    const c = $('conn');
    c.textContent = text;
    c.className = 'conn ' + cls;
    document.body.dataset.conn = cls;
  }

  // ---- sign-in ----------------------------------------------------------------------------
  function showLogin(message) {
    setConn('signed out', 'bad');
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('token').focus();
  }
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('token').value.trim();
    $('token').value = '';
    sessionStorage.setItem(KEY, token);
    connect();
  });
  $('signout').addEventListener('click', () => {
    token = '';
    sessionStorage.removeItem(KEY);
    if (abort) abort.abort();
    showLogin('');
  });

  // ---- the event stream -------------------------------------------------------------------
  function retry(why) {
    setConn(why ? 'reconnecting (' + why + ')' : 'reconnecting…', 'wait');
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (abort) abort.abort();
    const ctl = new AbortController();
    abort = ctl;
    setConn('connecting…', 'wait');
    let res;
    try {
      res = await fetch('/v1/ui/stream', { headers: authHeaders(), cache: 'no-store', signal: ctl.signal });
    } catch (e) {
      if (ctl.signal.aborted) return;
      retry('no connection');
      return;
    }
    if (res.status === 401) {
      showLogin(token ? 'That token is not valid here.' : '');
      return;
    }
    if (res.status === 403) {
      showLogin('This token may not read the dashboard: it needs the viewer, deployer or admin role.');
      return;
    }
    if (!res.ok || !res.body) {
      retry('the server answered ' + res.status);
      return;
    }
    $('login').hidden = true;
    $('signout').hidden = !token;
    backoff = 500;
    state.functions.clear(); // a new stream starts with the whole series
    setConn('live', 'ok');
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const raw = buf.slice(0, i);
          buf = buf.slice(i + 2);
          onEvent(raw);
        }
        if (buf.length > MAX_BUFFER) break;
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    if (!ctl.signal.aborted) retry('stream ended');
  }

  function onEvent(raw) {
    let name = 'message';
    const data = [];
    for (const line of raw.split('\n')) {
      if (line.startsWith('event:')) name = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (name !== 'snapshot' || data.length === 0) return;
    let s;
    try {
      s = JSON.parse(data.join('\n'));
    } catch (e) {
      return;
    }
    apply(s);
  }

  const COLUMNS = ['t', 'done', 'errors', 'rejected', 'cold', 'warm', 'p50', 'p99', 'inflight', 'queued'];
  function emptySeries() {
    const s = {};
    for (const c of COLUMNS) s[c] = [];
    return s;
  }
  // Appends the new points and drops those older than the window.
  function merge(old, add, cutoff) {
    const last = old.t.length ? old.t[old.t.length - 1] : -1;
    for (let i = 0; i < add.t.length; i++) {
      if (add.t[i] <= last) continue;
      for (const c of COLUMNS) old[c].push(add[c][i]);
    }
    let drop = 0;
    while (drop < old.t.length && old.t[drop] <= cutoff) drop++;
    if (drop) for (const c of COLUMNS) old[c].splice(0, drop);
    return old;
  }

  function apply(s) {
    state.now = s.now;
    state.points = s.points;
    const seen = new Set();
    for (const f of s.functions) {
      seen.add(f.name);
      let cur = state.functions.get(f.name);
      if (!cur) {
        cur = { series: emptySeries() };
        state.functions.set(f.name, cur);
      }
      const series = merge(cur.series, f.series, s.now - s.points);
      Object.assign(cur, f);
      cur.series = series;
    }
    for (const k of [...state.functions.keys()]) if (!seen.has(k)) state.functions.delete(k);
    state.recent = s.recent;
    $('window').textContent = '· last ' + Math.round((s.points * s.resolutionSeconds) / 60) + ' min, ' + s.resolutionSeconds + ' s steps';
    const un = $('untracked');
    un.hidden = !s.untracked;
    un.textContent = s.untracked ? s.untracked + ' more functions have no charts (the dashboard tracks a bounded number).' : '';
    renderFunctions();
    renderRecent();
  }

  // ---- charts -----------------------------------------------------------------------------
  // The column `c` of `f` as one value per second of the window (null where no point).
  function windowed(f, c) {
    const n = state.points;
    const out = new Array(n).fill(null);
    const start = state.now - n + 1;
    const t = f.series.t;
    for (let i = 0; i < t.length; i++) {
      const x = t[i] - start;
      if (x >= 0 && x < n) out[x] = f.series[c][i];
    }
    return out;
  }

  const H = 60;
  function chart(title, lines, bars, unit) {
    const n = state.points;
    let max = 0;
    for (const l of lines) for (const v of l.values) if (v !== null && v > max) max = v;
    if (bars) {
      for (let i = 0; i < n; i++) {
        const v = (bars[0].values[i] || 0) + (bars[1].values[i] || 0);
        if (v > max) max = v;
      }
    }
    const top = max > 0 ? max * 1.1 : 1;
    const y = (v) => H - (v / top) * (H - 2);
    const s = svg('svg', { viewBox: '0 0 ' + n + ' ' + H, preserveAspectRatio: 'none', role: 'img', class: 'chart' });
    const t = svg('title', {});
    t.textContent = title + ', last ' + n + ' s, max ' + (unit === 'ms' ? fmtMs(max) : round(max));
    s.append(t);
    s.append(svg('line', { x1: 0, x2: n, y1: H - 0.5, y2: H - 0.5, class: 'axis' }));
    if (bars) {
      for (let i = 0; i < n; i++) {
        let base = H;
        for (const b of bars) {
          const v = b.values[i] || 0;
          if (v <= 0) continue;
          const h = (v / top) * (H - 2);
          s.append(svg('rect', { x: i, y: base - h, width: 1, height: h, class: b.cls }));
          base -= h;
        }
      }
    }
    for (const l of lines) {
      let d = '';
      let pen = false;
      for (let i = 0; i < n; i++) {
        const v = l.values[i];
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        const next = i + 1 < n ? l.values[i + 1] : null;
        // A point alone (no neighbour either side) is drawn as a short dash.
        d += (pen ? 'L' : 'M') + i + ' ' + y(v).toFixed(2) + (!pen && (next === null || next === undefined) ? 'h1' : '');
        pen = true;
      }
      if (d) s.append(svg('path', { d, class: l.cls, 'vector-effect': 'non-scaling-stroke' }));
    }
    const legend = el('div', { class: 'legend' });
    for (const l of [...lines, ...(bars || [])]) legend.append(el('span', { class: 'key ' + l.cls }, l.label));
    legend.append(el('span', { class: 'max' }, 'max ' + (unit === 'ms' ? fmtMs(max) : round(max) + (unit ? ' ' + unit : ''))));
    return el('figure', { class: 'fig' }, el('figcaption', {}, title), s, legend);
  }
  function round(v) {
    return v >= 10 ? Math.round(v) : Math.round(v * 10) / 10;
  }
  function sum(a) {
    let s = 0;
    for (const v of a) if (v) s += v;
    return s;
  }

  // ---- functions ----------------------------------------------------------------------------
  const STATES = ['starting', 'ready', 'busy', 'draining', 'failed'];
  function renderFunctions() {
    const box = $('functions');
    const names = [...state.functions.keys()].sort();
    $('no-functions').hidden = names.length > 0;
    const have = new Map();
    for (const c of box.querySelectorAll('.card')) have.set(c.dataset.function, c);
    for (const [name, c] of have) if (!state.functions.has(name)) c.remove();
    let prev = null;
    for (const name of names) {
      const f = state.functions.get(name);
      let card = have.get(name);
      if (!card) {
        card = el('article', { class: 'card', 'data-function': name, tabindex: 0, 'aria-label': 'function ' + name + ': show its executions' });
        card.addEventListener('click', () => filterBy(name));
        card.addEventListener('keydown', (ev) => {
          if (ev.key === 'Enter' || ev.key === ' ') {
            ev.preventDefault();
            filterBy(name);
          }
        });
      }
      fillCard(card, f);
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== card) box.insertBefore(card, want);
      prev = card;
    }
    const sel = $('filter');
    const cur = sel.value;
    const opts = ['', ...names];
    if (sel.options.length !== opts.length || opts.some((o, i) => sel.options[i].value !== o)) {
      sel.replaceChildren(...opts.map((o) => el('option', { value: o }, o || 'all')));
      sel.value = opts.includes(cur) ? cur : '';
    }
  }

  function fillCard(card, f) {
    const done = windowed(f, 'done');
    const errors = windowed(f, 'errors');
    const cold = windowed(f, 'cold');
    const warm = windowed(f, 'warm');
    const p50 = windowed(f, 'p50');
    const p99 = windowed(f, 'p99');
    const last10 = done.slice(-10);
    const rate = sum(last10) / 10;
    const recent = (a) => {
      for (let i = a.length - 1; i >= Math.max(0, a.length - 10); i--) if (a[i] !== null) return a[i];
      return null;
    };
    const chips = el('ul', { class: 'pool', 'aria-label': 'instances by state' });
    for (const s of STATES) {
      const n = f.pool[s] || 0;
      chips.append(el('li', { class: 'chip ' + s + (n ? '' : ' zero'), 'data-state': s, 'data-count': n }, s + ' ', el('b', {}, n)));
    }
    chips.append(el('li', { class: 'chip prewarmed' + (f.prewarmed ? '' : ' zero'), 'data-state': 'prewarmed', 'data-count': f.prewarmed }, 'prewarmed ', el('b', {}, f.prewarmed)));
    const stat = (label, value, cls) => el('div', { class: 'stat ' + (cls || '') }, el('span', {}, label), el('b', {}, value));
    const errs = sum(errors);
    const stats = el(
      'div',
      { class: 'stats' },
      stat('req/s', round(rate), 'rate'),
      stat('p50', fmtMs(recent(p50)), 'p50'),
      stat('p99', fmtMs(recent(p99)), 'p99'),
      stat('errors', errs, errs ? 'bad' : ''),
      stat('cold / warm', sum(cold) + ' / ' + sum(warm), 'starts'),
      stat('in flight', f.inflight + (f.queued ? ' (+' + f.queued + ' queued)' : ''), 'inflight'),
    );
    const charts = f.tracked
      ? el(
          'div',
          { class: 'charts' },
          chart('Requests / s', [
            { label: 'done', cls: 'l-done', values: done },
            { label: 'errors', cls: 'l-err', values: errors },
          ]),
          chart('Latency', [
            { label: 'p50', cls: 'l-p50', values: p50 },
            { label: 'p99', cls: 'l-p99', values: p99 },
          ], null, 'ms'),
          chart('Starts / s', [], [
            { label: 'warm', cls: 'b-warm', values: warm },
            { label: 'cold', cls: 'b-cold', values: cold },
          ]),
        )
      : el('p', { class: 'muted' }, 'not tracked');
    card.replaceChildren(
      el('h3', {}, f.name, ' ', el('span', { class: 'badge' }, f.mode), ' ', el('span', { class: 'muted small' }, f.instances + ' of max ' + f.maxInstances + ' instances')),
      chips,
      stats,
      charts,
    );
  }

  function filterBy(name) {
    $('filter').value = name;
    renderRecent();
  }
  $('filter').addEventListener('change', renderRecent);

  // ---- recent executions ----------------------------------------------------------------------
  function renderRecent() {
    const tbody = $('recent').tBodies[0];
    const only = $('filter').value;
    const rows = state.recent.filter((e) => !only || e.function === only);
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.id : null;
    const out = [];
    for (const e of rows) {
      const start = e.start || (e.coldStart ? 'cold' : '–');
      const tr = el(
        'tr',
        { tabindex: 0, 'data-id': e.executionId, 'aria-label': 'execution ' + e.executionId + ' of ' + e.function + ', ' + e.status + ': open its logs and trace', class: opened && opened.id === e.executionId ? 'selected' : null },
        el('td', {}, fmtTime(e.createdAt)),
        el('td', {}, e.function),
        el('td', {}, el('span', { class: 'status s-' + e.status.toLowerCase() }, e.status)),
        el('td', { class: 'num' }, fmtMs(e.durationMs)),
        el('td', {}, el('span', { class: 'start st-' + start }, start)),
        el('td', { class: 'num wide' }, e.attempts),
        el('td', { class: 'mono wide' }, e.executionId),
      );
      tr.addEventListener('click', () => openDetail(e, tr));
      tr.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          openDetail(e, tr);
        } else if (ev.key === 'ArrowDown' && tr.nextElementSibling) {
          ev.preventDefault();
          tr.nextElementSibling.focus();
        } else if (ev.key === 'ArrowUp' && tr.previousElementSibling) {
          ev.preventDefault();
          tr.previousElementSibling.focus();
        }
      });
      out.push(tr);
    }
    tbody.replaceChildren(...out);
    $('no-recent').hidden = out.length > 0;
    if (focused) {
      const again = out.find((r) => r.dataset.id === focused);
      if (again) again.focus({ preventScroll: true });
    }
  }

  // ---- one execution: logs and trace ------------------------------------------------------
  async function getJson(path) {
    try {
      const res = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
      let body = null;
      try {
        body = await res.json();
      } catch (e) {
        body = null;
      }
      return { status: res.status, body };
    } catch (e) {
      return { status: 0, body: null };
    }
  }

  function notAvailable(box, what, r) {
    box.dataset.state = 'unavailable';
    const msg = r.body && r.body.error && r.body.error.message ? r.body.error.message : '';
    const text = r.status === 404
      ? what + ' not available: ' + (msg.startsWith('no route') ? 'this control plane does not keep them.' : msg || 'not found.')
      : what + ' could not be read (' + (r.status || 'no connection') + (msg ? ': ' + msg : '') + ').';
    box.replaceChildren(el('p', { class: 'muted unavailable' }, text));
  }

  // Lines reach the control plane a moment after the answer: an execution that just finished
  // and shows none is asked again, a few times.
  async function loadLogs(id, again) {
    const box = $('logs');
    if (!again) {
      box.dataset.state = 'loading';
      box.replaceChildren(el('p', { class: 'muted' }, 'loading…'));
    }
    const r = await getJson('/v1/executions/' + encodeURIComponent(id) + '/logs');
    if (!opened || opened.id !== id) return;
    if (r.status !== 200 || !r.body || !Array.isArray(r.body.lines)) return notAvailable(box, 'Logs', r);
    box.dataset.state = 'loaded';
    if (r.body.lines.length === 0) {
      box.replaceChildren(el('p', { class: 'muted' }, 'The function printed nothing.'));
      const n = again || 0;
      if (n < 3) setTimeout(() => loadLogs(id, n + 1), 1000);
      return;
    }
    const pre = el('pre', { class: 'loglines', tabindex: 0, 'aria-label': 'log lines' });
    for (const l of r.body.lines) {
      pre.append(el('span', { class: 'line ' + (l.stream === 'stderr' ? 'stderr' : 'stdout') }, (l.ts ? fmtTs(l.ts) + ' ' : '') + l.text), '\n');
    }
    const parts = [pre];
    if (r.body.truncated) parts.push(el('p', { class: 'muted' }, 'Truncated: the execution printed more than is kept.'));
    box.replaceChildren(...parts);
  }
  function fmtTs(ts) {
    const d = typeof ts === 'number' ? new Date(ts) : new Date(String(ts));
    return isNaN(d) ? String(ts) : fmtTime(d.getTime()) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  }

  async function loadTrace(id) {
    const box = $('trace');
    box.dataset.state = 'loading';
    box.replaceChildren(el('p', { class: 'muted' }, 'loading…'));
    const r = await getJson('/v1/executions/' + encodeURIComponent(id) + '/trace');
    if (!opened || opened.id !== id) return;
    if (r.status !== 200 || !r.body || !Array.isArray(r.body.spans)) return notAvailable(box, 'Trace', r);
    box.dataset.state = 'loaded';
    const spans = r.body.spans.map((s) => ({ ...s, s: Number(s.startUnixNano), e: Number(s.endUnixNano) })).filter((s) => isFinite(s.s) && isFinite(s.e));
    if (spans.length === 0) {
      box.replaceChildren(el('p', { class: 'muted' }, 'No spans.'));
      return;
    }
    spans.sort((a, b) => a.s - b.s);
    const t0 = Math.min(...spans.map((s) => s.s));
    const t1 = Math.max(...spans.map((s) => s.e));
    const total = Math.max(t1 - t0, 1);
    const depth = new Map();
    for (const s of spans) depth.set(s.spanId, s.parentSpanId && depth.has(s.parentSpanId) ? depth.get(s.parentSpanId) + 1 : 0);
    const list = el('ol', { class: 'spans', 'aria-label': 'spans of trace ' + (r.body.traceId || '') });
    for (const s of spans) {
      const bar = svg('svg', { viewBox: '0 0 1000 10', preserveAspectRatio: 'none', class: 'spanbar', 'aria-hidden': 'true' });
      const x = ((s.s - t0) / total) * 1000;
      const w = Math.max(((s.e - s.s) / total) * 1000, 2);
      bar.append(svg('rect', { x: x.toFixed(1), y: 1, width: w.toFixed(1), height: 8, class: 'span' }));
      list.append(el('li', { class: 'd' + Math.min(depth.get(s.spanId) || 0, 4) }, el('span', { class: 'sname' }, s.name), el('span', { class: 'num' }, fmtMs((s.e - s.s) / 1e6)), bar));
    }
    box.replaceChildren(el('p', { class: 'muted mono' }, 'trace ' + (r.body.traceId || '')), list);
  }

  function openDetail(e, row) {
    opened = { id: e.executionId, row };
    for (const r of document.querySelectorAll('#recent tr.selected')) r.classList.remove('selected');
    row.classList.add('selected');
    const d = $('detail');
    d.hidden = false;
    $('detail-h').textContent = 'Execution ' + e.executionId;
    const meta = $('detail-meta');
    const item = (k, v) => [el('dt', {}, k), el('dd', {}, v)];
    meta.replaceChildren(
      ...item('function', e.function),
      ...item('status', e.status),
      ...item('duration', fmtMs(e.durationMs)),
      ...item('start', e.start || (e.coldStart ? 'cold' : '–')),
      ...item('attempts', e.attempts),
      ...item('mode', e.mode),
      ...item('trace id', e.traceId),
    );
    d.focus();
    loadLogs(e.executionId);
    loadTrace(e.executionId);
  }
  function closeDetail() {
    const d = $('detail');
    if (d.hidden) return;
    d.hidden = true;
    const back = opened && document.querySelector('#recent tr[data-id="' + CSS.escape(opened.id) + '"]');
    opened = null;
    for (const r of document.querySelectorAll('#recent tr.selected')) r.classList.remove('selected');
    if (back) back.focus();
  }
  $('close').addEventListener('click', closeDetail);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') closeDetail();
  });

  connect();
})();
