// avmon's console: plain JavaScript over the HTTP API, live through /api/events (SSE).
// No framework and no build step: the wall updates tiles in place, so hundreds of streams stay
// cheap, and thumbnails refresh only for tiles on screen. On a cluster node (`GET /api/cluster`
// answers) it also shows which node monitors each stream, and a Cluster view.
'use strict';

const THUMB_REFRESH_MS = 5000;
const PICTURE_REFRESH_MS = 2000;
/// In a cluster, how often the stream list (and the Cluster view, while shown) is read again:
/// live events tell only this node's streams, the others change through the database.
const CLUSTER_REFRESH_MS = 3000;
const SEVERITY_RANK = { info: 0, minor: 1, major: 2, critical: 3 };
const TOKEN_KEY = 'avmon.token';

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

const state = {
  streams: new Map(), // id -> StreamStatus
  levels: {},         // id -> [[rms, peak], ...]
  tiles: new Map(),   // id -> tile element
  view: 'wall',
  detailId: null,
  events: null,
  cluster: null,      // the last `GET /api/cluster` (null: a standalone host, or not known yet)
};

// --- API -------------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

/// A URL for what cannot send headers (img, EventSource): the token as `access_token`.
function authUrl(path) {
  const t = token();
  if (!t) return path;
  return path + (path.includes('?') ? '&' : '?') + 'access_token=' + encodeURIComponent(t);
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token()) headers.Authorization = 'Bearer ' + token();
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method: opts.method || 'GET',
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (r.status === 401) {
    openSignin('This server needs a token.');
  }
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!r.ok) {
    const msg = (body && body.error) || (r.status + ' ' + r.statusText);
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return body;
}

// --- status ----------------------------------------------------------------------------

const UNWATCHED = 'unwatched — no node monitors it';

/// ok / warning / alarm / down / unwatched / degraded / starting, from what the API says of a
/// stream. Unwatched (in a cluster, no node monitors it) comes first: whatever else is known of
/// the stream is from before that.
function statusOf(s) {
  if (s.status === 'unwatched') return 'unwatched';
  if (s.status === 'down') return 'down';
  const worst = Math.max(-1, ...(s.active_alerts || []).map(a => SEVERITY_RANK[a.severity] ?? 0));
  if (worst >= SEVERITY_RANK.major) return 'alarm';
  if (worst >= 0) return 'warning';
  const configured = s.configured_tier || s.tier_configured;
  if (s.degraded === true || (configured && s.tier && configured !== s.tier)) return 'degraded';
  if (s.status === 'starting') return 'starting';
  return 'ok';
}

function isAcked(a) { return !!(a.ack || a.acked_at || a.acknowledged || a.acked); }

// --- the wall --------------------------------------------------------------------------

const thumbObserver = 'IntersectionObserver' in window ? new IntersectionObserver(entries => {
  for (const e of entries) {
    e.target.dataset.visible = e.isIntersecting ? '1' : '';
    if (e.isIntersecting) refreshThumb(e.target, false);
  }
}, { rootMargin: '200px' }) : null;

function refreshThumb(tile, force) {
  const img = $('img', tile);
  const now = Date.now();
  if (!force && now - (+img.dataset.at || 0) < THUMB_REFRESH_MS) return;
  img.dataset.at = now;
  img.src = authUrl('/api/streams/' + encodeURIComponent(tile.dataset.id) + '/thumbnail.jpg?t=' + now);
}

function makeTile(id) {
  const tile = el('div', { class: 'tile st-starting', 'data-id': id },
    el('div', { class: 'thumb' },
      el('img', { alt: '', loading: 'lazy' }),
      el('div', { class: 'levels' })),
    el('div', { class: 'meta' },
      el('div', { class: 'name', text: id }),
      el('div', { class: 'node', hidden: '' }),
      el('div', { class: 'alerts' })));
  // No picture (yet): an empty black thumbnail, not a broken-image icon.
  $('img', tile).addEventListener('error', e => { e.target.style.visibility = 'hidden'; e.target.removeAttribute('src'); });
  $('img', tile).addEventListener('load', e => { e.target.style.visibility = ''; });
  tile.addEventListener('click', () => { location.hash = '#/stream/' + encodeURIComponent(id); });
  if (thumbObserver) thumbObserver.observe(tile); else refreshThumb(tile, true);
  return tile;
}

function renderLevels(box, levels) {
  levels = levels || [];
  while (box.children.length > levels.length) box.lastChild.remove();
  while (box.children.length < levels.length) box.append(el('div', { class: 'ch' }, el('i'), el('b')));
  levels.forEach(([rms, peak], i) => {
    const pct = db => Math.max(0, Math.min(100, (db + 60) / 60 * 100));
    const ch = box.children[i];
    ch.firstChild.style.height = pct(rms) + '%';
    ch.lastChild.style.bottom = pct(peak) + '%';
    ch.title = `ch ${i + 1}: ${rms.toFixed(1)} dBFS RMS, ${peak.toFixed(1)} dBFS peak`;
  });
}

function updateTile(s) {
  let tile = state.tiles.get(s.id);
  if (!tile) {
    tile = makeTile(s.id);
    state.tiles.set(s.id, tile);
    // Keep the wall in id order.
    const after = [...state.tiles.keys()].sort().find(k => k > s.id);
    const wall = $('#wall');
    wall.insertBefore(tile, after ? state.tiles.get(after) : null);
  }
  const st = statusOf(s);
  tile.className = 'tile st-' + st;
  tile.dataset.status = st;
  tile.title = `${s.id} (${st}) ${s.url}` + (s.node ? ` on node ${s.node}` : '');
  tile.dataset.node = s.node || '';
  const node = $('.node', tile);
  node.textContent = st === 'unwatched' ? UNWATCHED : s.node ? 'node ' + s.node : '';
  node.hidden = !node.textContent;
  const alerts = $('.alerts', tile);
  alerts.replaceChildren(...(s.active_alerts || []).map(a =>
    el('span', { class: a.severity + (isAcked(a) ? ' acked' : ''), 'data-kind': a.kind, text: a.kind })));
  applyFilter(tile, s);
}

function removeTile(id) {
  const tile = state.tiles.get(id);
  if (tile) { if (thumbObserver) thumbObserver.unobserve(tile); tile.remove(); }
  state.tiles.delete(id);
  state.streams.delete(id);
}

function applyFilter(tile, s) {
  const q = $('#search').value.trim().toLowerCase();
  const want = $('#status-filter').value;
  const st = tile.dataset.status;
  const text = [s.id, s.url, s.name || '', s.node || '', ...(s.active_alerts || []).map(a => a.kind)].join(' ').toLowerCase();
  const statusOk = !want || want === st || (want === 'problem' && st !== 'ok');
  tile.hidden = !(statusOk && (!q || text.includes(q)));
}

/// The count of tiles shown: O(tiles) but no layout work.
function updateCount() {
  let shown = 0;
  for (const tile of state.tiles.values()) if (!tile.hidden) shown++;
  $('#wall-count').textContent = `${shown} of ${state.tiles.size} streams`;
}

function refilter() {
  for (const [id, tile] of state.tiles) {
    applyFilter(tile, state.streams.get(id) || { id });
  }
  updateCount();
}

async function loadStreams() {
  const list = await api('/api/streams');
  const seen = new Set();
  for (const s of list) { seen.add(s.id); state.streams.set(s.id, s); updateTile(s); }
  for (const id of [...state.tiles.keys()]) if (!seen.has(id)) removeTile(id);
  refilter();
  fillStreamSelect();
  if (state.view === 'stream') renderDetailStatus();
}

setInterval(() => {
  if (state.view !== 'wall') return;
  for (const tile of state.tiles.values()) {
    if (!tile.hidden && (!thumbObserver || tile.dataset.visible)) refreshThumb(tile, false);
  }
}, 1000);

// --- live events -----------------------------------------------------------------------

function connectEvents() {
  if (state.events) state.events.close();
  const es = new EventSource(authUrl('/api/events'));
  state.events = es;
  const live = $('#live');
  es.addEventListener('hello', () => {
    live.textContent = 'live'; live.className = 'live';
    loadStreams().catch(showError);
    probeCluster();
  });
  es.onerror = () => { live.textContent = 'reconnecting'; live.className = 'live off'; };
  es.addEventListener('resync', () => loadStreams().catch(showError));
  es.addEventListener('stream', e => {
    const s = JSON.parse(e.data);
    if (s.removed) {
      // In a cluster a stream leaves this node's feed when another node takes it: whether it
      // is gone from the cluster, the list says.
      if (state.cluster) loadStreams().catch(showError);
      else { removeTile(s.id); refilter(); }
      return;
    }
    const isNew = !state.tiles.has(s.id);
    state.streams.set(s.id, s);
    updateTile(s);
    if (isNew) { refilter(); fillStreamSelect(); } else updateCount();
    if (state.view === 'stream' && state.detailId === s.id) renderDetailStatus();
  });
  es.addEventListener('alert', e => {
    const { transition, alert, ack } = JSON.parse(e.data);
    if (transition === 'acked') {
      // Acknowledged by someone (maybe elsewhere): the alert's row says so; the tile is unchanged.
      if (state.view === 'alerts') upsertAlertRow(Object.assign({}, alert, { ack }));
      return;
    }
    const s = state.streams.get(alert.stream_id);
    if (s) {
      const rest = (s.active_alerts || []).filter(a => a.id !== alert.id);
      s.active_alerts = transition === 'cleared' ? rest : [...rest, alert];
      updateTile(s);
      updateCount();
      // Show the picture that goes with the news at once.
      const tile = state.tiles.get(alert.stream_id);
      if (tile && !tile.hidden) refreshThumb(tile, true);
    }
    if (state.view === 'alerts') upsertAlertRow(alert);
    if (state.view === 'stream' && state.detailId === alert.stream_id) { renderDetailStatus(); loadTimeline(); }
  });
  es.addEventListener('levels', e => {
    state.levels = JSON.parse(e.data);
    for (const [id, lv] of Object.entries(state.levels)) {
      const tile = state.tiles.get(id);
      if (tile && !tile.hidden) renderLevels($('.levels', tile), lv);
    }
    if (state.view === 'stream') renderLevels($('#d-levels'), state.levels[state.detailId]);
  });
}

// --- stream detail ---------------------------------------------------------------------

let pictureTimer = null;

function showDetail(id) {
  state.detailId = id;
  $('#d-name').textContent = id;
  $('#d-picture').src = authUrl('/api/streams/' + encodeURIComponent(id) + '/thumbnail.jpg?t=' + Date.now());
  clearInterval(pictureTimer);
  let ticks = 0;
  pictureTimer = setInterval(async () => {
    if (state.view !== 'stream' || state.detailId !== id) return clearInterval(pictureTimer);
    $('#d-picture').src = authUrl('/api/streams/' + encodeURIComponent(id) + '/thumbnail.jpg?t=' + Date.now());
    // Live events carry status changes, not the running counters: fetch those with the picture,
    // and the plots now and then.
    try {
      const s = await api('/api/streams/' + encodeURIComponent(id));
      state.streams.set(s.id, s);
      renderDetailStatus();
    } catch (e) { /* the next tick tries again */ }
    if (++ticks % 5 === 0) loadPlots();
  }, PICTURE_REFRESH_MS);
  renderDetailStatus();
  loadTimeline();
  loadPlots();
}

function renderDetailStatus() {
  const s = state.streams.get(state.detailId);
  if (!s) return;
  const st = statusOf(s);
  const badge = $('#d-status');
  badge.textContent = st;
  badge.className = 'badge st-' + st;
  const v = s.info && s.info.video, a = s.info && s.info.audio;
  const rows = [
    ['url', s.url], ['status', st === 'unwatched' ? UNWATCHED : st],
    ...(s.node ? [['node', nodeLink(s.node)]] : []),
    ['tier', s.tier + (s.configured_tier && s.configured_tier !== s.tier ? ` (configured ${s.configured_tier})` : '')],
    ['video', v ? `${v.codec} ${v.width}×${v.height} ${v.fps} fps` : '—'],
    ['audio', a ? `${a.codec} ${a.channels} ch ${a.sample_rate} Hz` : '—'],
    ['media time', (s.media_t || 0).toFixed(1) + ' s'], ['frames', `${s.frames_video} video, ${s.frames_audio} audio`],
    ['decode errors', s.decode_errors], ['reconnects', s.reconnects],
    ['active alerts', (s.active_alerts || []).map(x => `${x.kind} (${x.severity})`).join(', ') || 'none'],
  ];
  $('#d-info').replaceChildren(...rows.map(([k, v]) =>
    el('tr', { 'data-key': k }, el('td', { text: k }), el('td', {}, v instanceof Node ? v : String(v)))));
  const sel = $('#d-tier');
  if (document.activeElement !== sel) sel.value = s.configured_tier || s.tier;
  $('#d-config').textContent = JSON.stringify(s.config || { id: s.id, url: s.url, tier: s.tier }, null, 2);
}

const svgNS = 'http://www.w3.org/2000/svg';
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};
const hhmm = ms => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

async function loadTimeline() {
  const id = state.detailId;
  const range = +$('#d-range').value * 1000;
  const since = new Date(Date.now() - range).toISOString();
  let alerts = [];
  try {
    alerts = await api(`/api/alerts?stream=${encodeURIComponent(id)}&since=${encodeURIComponent(since)}&limit=1000`);
  } catch (e) { $('#d-timeline').textContent = e.message; return; }
  const W = 1000, row = 18, kinds = [...new Set(alerts.map(a => a.kind))].sort();
  const H = 20 + row * Math.max(1, kinds.length);
  const t1 = Date.now(), t0 = t1 - range;
  const x = t => 120 + (W - 130) * (Math.max(t0, Math.min(t1, t)) - t0) / range;
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const t = t0 + range * i / 4;
    s.append(svg('line', { x1: x(t), x2: x(t), y1: 0, y2: H - 14, stroke: '#2c3038' }));
    const lbl = svg('text', { x: x(t), y: H - 2, fill: '#8b919c', 'font-size': 11, 'text-anchor': 'middle' });
    lbl.textContent = hhmm(t); s.append(lbl);
  }
  kinds.forEach((k, i) => {
    const lbl = svg('text', { x: 4, y: 14 + row * i, fill: '#e6e8eb', 'font-size': 12 });
    lbl.textContent = k; s.append(lbl);
  });
  for (const a of alerts) {
    const i = kinds.indexOf(a.kind);
    const start = Date.parse(a.raised_at), end = a.cleared_at ? Date.parse(a.cleared_at) : t1;
    const colour = SEVERITY_RANK[a.severity] >= 2 ? '#d93b3b' : '#d9a21b';
    const r = svg('rect', { x: x(start), y: 4 + row * i, width: Math.max(2, x(end) - x(start)), height: row - 6, fill: colour });
    const title = svg('title');
    title.textContent = `${a.kind} ${a.severity} ${a.raised_at}${a.cleared_at ? ' – ' + a.cleared_at : ' (active)'}`;
    r.append(title); s.append(r);
  }
  $('#d-timeline').replaceChildren(s);
}

/// The metrics endpoint's answer as {name: [[ms, value], ...]}, whichever of the natural shapes
/// it has: samples `[{at, values: {...}}]` (or under `samples`), or `{series: {name: [...]}}`.
function toSeries(body) {
  const out = {};
  const push = (name, at, v) => { if (typeof v === 'number') (out[name] = out[name] || []).push([Date.parse(at) || +at * 1000, v]); };
  const samples = Array.isArray(body) ? body : body && Array.isArray(body.samples) ? body.samples : null;
  if (samples) {
    for (const s of samples) for (const [k, v] of Object.entries(s.values || {})) push(k, s.at, v);
    return out;
  }
  const series = body && (body.series || body.metrics);
  if (series && typeof series === 'object') {
    for (const [k, pts] of Object.entries(series)) {
      for (const p of pts || []) Array.isArray(p) ? push(k, p[0], p[1]) : push(k, p.at || p.t, p.value ?? p.v);
    }
  }
  return out;
}

const PLOTS = [
  { name: 'loudness_short_term_lufs', title: 'Short-term loudness (LUFS)' },
  { name: 'blockiness_mean', title: 'Blockiness (% of flat blocks)' },
  { name: 'bitrate', title: 'Bitrate (kbit/s)', from: 'bytes' },
  { name: 'decode_errors', title: 'Decode errors (per period)' },
  // UDP and RTP inputs only (RFC 4445's Media Delivery Index): shown where measured.
  { name: 'mdi_df_ms', title: 'Delay factor, MDI (ms)', optional: true },
  { name: 'mdi_mlr', title: 'Media loss rate, MDI (TS packets/s)', optional: true },
];

async function loadPlots() {
  const id = state.detailId;
  const box = $('#d-plots');
  const range = +$('#d-range').value * 1000;
  const since = new Date(Date.now() - range).toISOString();
  const names = 'loudness_short_term_lufs,blockiness_mean,bytes,decode_errors,mdi_df_ms,mdi_mlr';
  let series;
  try {
    series = toSeries(await api(`/api/streams/${encodeURIComponent(id)}/metrics?since=${encodeURIComponent(since)}&names=${names}`));
  } catch (e) {
    box.replaceChildren(el('p', { class: 'muted', text: e.status === 404 ? 'No stored measurements (' + e.message + ').' : e.message }));
    return;
  }
  // Bitrate from the bytes of each period and the time between samples.
  const bytes = series.bytes || [];
  series.bitrate = bytes.slice(1).map(([t, b], i) => [t, b * 8 / 1000 / Math.max(0.001, (t - bytes[i][0]) / 1000)]);
  box.replaceChildren(...PLOTS.filter(p => !p.optional || (series[p.name] || []).length)
    .map(p => plot(p.title, series[p.name] || [], range)));
}

function plot(title, pts, range) {
  const W = 420, H = 140, L = 44, B = 18;
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  const fig = el('figure', {}, s, el('figcaption', { text: title + (pts.length ? '' : ' — no data') }));
  if (!pts.length) return fig;
  const t1 = Date.now(), t0 = t1 - range;
  const vs = pts.map(p => p[1]);
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const x = t => L + (W - L - 6) * (t - t0) / range;
  const y = v => 6 + (H - B - 12) * (1 - (v - lo) / (hi - lo));
  for (const v of [lo, hi]) {
    const lbl = svg('text', { x: L - 4, y: y(v) + 4, fill: '#8b919c', 'font-size': 10, 'text-anchor': 'end' });
    lbl.textContent = Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1); s.append(lbl);
    s.append(svg('line', { x1: L, x2: W - 6, y1: y(v), y2: y(v), stroke: '#2c3038' }));
  }
  for (const t of [t0, t1]) {
    const lbl = svg('text', { x: x(t), y: H - 4, fill: '#8b919c', 'font-size': 10, 'text-anchor': t === t0 ? 'start' : 'end' });
    lbl.textContent = hhmm(t); s.append(lbl);
  }
  s.append(svg('polyline', {
    points: pts.filter(p => p[0] >= t0).map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' '),
    fill: 'none', stroke: '#8fb8ff', 'stroke-width': 1.5,
  }));
  return fig;
}

$('#d-range').addEventListener('change', () => { loadTimeline(); loadPlots(); });
$('#d-tier').addEventListener('change', async e => {
  const msg = $('#d-tier-msg');
  try {
    const s = await api('/api/streams/' + encodeURIComponent(state.detailId), { method: 'PATCH', body: { tier: e.target.value } });
    state.streams.set(s.id, s);
    renderDetailStatus();
    msg.textContent = 'tier set to ' + s.tier;
  } catch (err) { msg.textContent = err.message; }
});

// --- alerts view -----------------------------------------------------------------------

function fillStreamSelect() {
  const sel = $('#alert-filters select[name=stream]');
  const cur = sel.value;
  sel.replaceChildren(el('option', { value: '', text: 'every stream' }),
    ...[...state.streams.keys()].sort().map(id => el('option', { value: id, text: id })));
  sel.value = cur;
}

function alertFilters() {
  const f = new FormData($('#alert-filters'));
  return {
    stream: f.get('stream') || '', kind: (f.get('kind') || '').trim(), severity: f.get('severity') || '',
    since: f.get('since') ? new Date(f.get('since')).toISOString() : '', active: !!f.get('active'),
  };
}

function alertMatches(a, f) {
  if (f.stream && a.stream_id !== f.stream) return false;
  if (f.kind && !a.kind.includes(f.kind)) return false;
  if (f.severity && (SEVERITY_RANK[a.severity] ?? 0) < SEVERITY_RANK[f.severity]) return false;
  if (f.active && a.state !== 'raised') return false;
  if (f.since && Date.parse(a.raised_at) < Date.parse(f.since) && (!a.cleared_at || Date.parse(a.cleared_at) < Date.parse(f.since))) return false;
  return true;
}

async function loadAlerts() {
  const f = alertFilters();
  const q = new URLSearchParams({ limit: '500' });
  if (f.stream) q.set('stream', f.stream);
  if (f.since) q.set('since', f.since);
  if (f.active) q.set('active', 'true');
  const msg = $('#alerts-msg');
  try {
    const alerts = (await api('/api/alerts?' + q)).filter(a => alertMatches(a, f));
    $('#alerts tbody').replaceChildren(...alerts.map(alertRow));
    msg.textContent = `${alerts.length} alerts`;
  } catch (e) { msg.textContent = e.message; }
}

function alertRow(a) {
  const id = encodeURIComponent(a.id);
  const active = a.state === 'raised';
  const ev = el('td');
  const snap = el('a', { href: authUrl(`/api/alerts/${id}/snapshot.jpg`), target: '_blank', class: 'snapshot' },
    el('img', { src: authUrl(`/api/alerts/${id}/snapshot.jpg`), alt: 'snapshot', loading: 'lazy' }));
  $('img', snap).addEventListener('error', () => snap.remove());
  ev.append(snap);
  if (a.kind.startsWith('video.') || a.kind.startsWith('transport.')) {
    ev.append(' ', el('a', { href: authUrl(`/api/alerts/${id}/clip.ts`), class: 'clip', text: 'clip.ts' }));
  }
  const ack = el('td');
  if (isAcked(a)) {
    const k = a.ack || {};
    ack.textContent = 'acked' + (k.by ? ' by ' + k.by : '') + (k.comment ? ': ' + k.comment : '');
  } else {
    const b = el('button', { type: 'button', class: 'ack', text: 'Acknowledge' });
    b.addEventListener('click', () => openAck(a));
    ack.append(b);
  }
  const end = a.end_s == null ? '' : ` – ${a.end_s.toFixed(2)} s`;
  return el('tr', { class: active ? 'active' : '', 'data-id': a.id, 'data-kind': a.kind },
    el('td', { text: new Date(a.raised_at).toLocaleString() }),
    el('td', {}, el('a', { href: '#/stream/' + encodeURIComponent(a.stream_id), text: a.stream_id })),
    el('td', { text: a.kind }), el('td', { text: a.severity }),
    el('td', { class: 'state', text: isAcked(a) ? a.state + ', acked' : a.state }),
    el('td', { text: `${a.start_s.toFixed(2)} s${end}` }), ev, ack);
}

function upsertAlertRow(a) {
  if (!alertMatches(a, alertFilters())) return;
  const row = alertRow(a);
  const old = $(`#alerts tbody tr[data-id="${CSS.escape(a.id)}"]`);
  if (old) old.replaceWith(row); else $('#alerts tbody').prepend(row);
}

let ackTarget = null;
function openAck(a) {
  ackTarget = a;
  $('#ack-what').textContent = `${a.kind} on ${a.stream_id}`;
  $('#ack-comment').value = '';
  $('#ack').showModal();
}

$('#ack').addEventListener('close', async () => {
  if ($('#ack').returnValue !== 'ok' || !ackTarget) return;
  const a = ackTarget;
  ackTarget = null;
  const msg = $('#alerts-msg');
  try {
    const res = await api(`/api/alerts/${encodeURIComponent(a.id)}/ack`, { method: 'POST', body: { comment: $('#ack-comment').value } });
    msg.textContent = `acknowledged ${a.kind} on ${a.stream_id}`;
    const updated = res && res.id ? res : Object.assign({}, a, { ack: { comment: $('#ack-comment').value } });
    upsertAlertRow(updated);
  } catch (e) {
    msg.textContent = `acknowledging failed: ${e.message}`;
  }
});

$('#alert-filters').addEventListener('submit', e => { e.preventDefault(); loadAlerts(); });

// --- cluster ---------------------------------------------------------------------------

/// Whether this host is a cluster node, and the cluster as it answers: `GET /api/cluster` is
/// 200 on a node and 404 on a standalone host, where the Cluster tab stays hidden. Anything
/// else (not signed in yet, a database hiccup) leaves what was known.
async function probeCluster() {
  try {
    setCluster(await api('/api/cluster'));
  } catch (e) {
    if (e.status === 404) setCluster(null);
    else if (state.view === 'cluster') $('#cluster-msg').textContent = e.message;
  }
}

function setCluster(view) {
  state.cluster = view;
  $('#nav-cluster').hidden = !view;
  const name = $('#node-name');
  name.hidden = !view;
  name.textContent = view ? 'node ' + view.node : '';
  if (state.view !== 'cluster') return;
  if (view) renderCluster(); else location.replace('#/');
}

/// A node's name, linking to its own console where the cluster says where that is.
function nodeLink(name) {
  const n = state.cluster && state.cluster.nodes.find(x => x.name === name);
  if (!n || !n.api_addr || name === state.cluster.node) {
    return el('span', { text: name + (state.cluster && name === state.cluster.node ? ' (this node)' : '') });
  }
  return el('a', { href: n.api_addr.replace(/\/*$/, '/'), title: 'its console', text: name });
}

function streamLink(id) {
  const s = state.streams.get(id);
  return el('a', { href: '#/stream/' + encodeURIComponent(id), class: 'chip' + (s ? ' st-' + statusOf(s) : ''), text: id });
}

function fmtSecs(s) {
  if (s < 60) return (s < 10 ? s.toFixed(1) : String(Math.round(s))) + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const when = t => new Date(t).toLocaleString();

/// Load against capacity (cores of measured CPU), as a bar and in numbers; greyed where it is
/// what a node that is no longer alive last reported.
function loadBar(load, capacity, alive) {
  const pct = capacity > 0 ? load / capacity * 100 : 0;
  const bar = el('span', { class: 'bar' + (pct > 100 ? ' over' : pct >= 80 ? ' high' : '') }, el('i'));
  bar.firstChild.style.width = Math.min(100, pct).toFixed(1) + '%';
  const title = `${load.toFixed(3)} of ${capacity.toFixed(2)} cores` + (alive ? '' : ', as last reported');
  return el('span', { class: 'load' + (alive ? '' : ' stale'), title },
    bar, el('span', { text: ` ${Math.round(pct)}% (${load.toFixed(2)} / ${capacity.toFixed(2)} cores)` }));
}

/// `rows`, or one row saying there are none.
function fillRows(tbody, rows, none) {
  const cols = tbody.parentElement.querySelectorAll('thead th').length;
  tbody.replaceChildren(...(rows.length ? rows : [el('tr', { class: 'none' }, el('td', { colspan: cols, class: 'muted', text: none }))]));
}

function renderCluster() {
  const c = state.cluster;
  if (!c) return;
  const alive = c.nodes.filter(n => n.alive).length;
  $('#cluster-msg').textContent = `Answered by node ${c.node}. ${alive} of ${c.nodes.length} nodes alive; ` +
    `a node that has not renewed its leases for ${fmtSecs(c.lease_ttl_s)} is down, and its streams move to the others.`;
  const held = new Map();
  for (const id of [...state.streams.keys()].sort()) {
    const node = state.streams.get(id).node;
    if (node) held.set(node, [...(held.get(node) || []), id]);
  }
  fillRows($('#cluster-nodes tbody'), c.nodes.map(n => {
    const st = n.alive ? 'alive' : n.left ? 'left' : 'down';
    return el('tr', { 'data-node': n.name, 'data-state': st, 'data-streams': n.streams, 'data-seen-ago': n.seen_ago_s },
      el('td', { class: 'name' }, nodeLink(n.name)),
      el('td', {}, el('span', { class: 'badge node-' + st, text: st })),
      el('td', { class: 'streams', text: String(n.streams) }),
      el('td', {}, loadBar(n.load, n.capacity, n.alive)),
      el('td', { title: n.last_seen, text: fmtSecs(n.seen_ago_s) + ' ago' }),
      el('td', { text: when(n.started_at) }),
      el('td', { class: 'holds' }, ...(held.get(n.name) || []).map(streamLink)));
  }), 'No nodes registered.');
  const count = $('#cluster-unwatched-count');
  count.textContent = `(${c.unwatched.length})`;
  count.className = c.unwatched.length ? 'unwatched-count' : 'muted';
  fillRows($('#cluster-unwatched tbody'), c.unwatched.map(u =>
    el('tr', { 'data-stream': u.stream },
      el('td', {}, streamLink(u.stream)),
      el('td', { text: u.since ? when(u.since) : 'never monitored' }),
      el('td', { text: u.prev_node || '—' }),
      el('td', { text: u.pinned_node || '—' }))), 'None: every stream is monitored.');
  $('#cluster-gaps-count').textContent = `(${c.gaps.length})`;
  fillRows($('#cluster-gaps tbody'), c.gaps.map(g =>
    el('tr', { 'data-stream': g.stream, 'data-reason': g.reason },
      el('td', {}, streamLink(g.stream)),
      el('td', { text: `${when(g.from)} – ${new Date(g.to).toLocaleTimeString()}` }),
      el('td', { class: 'duration', text: fmtSecs(g.duration_s) }),
      el('td', { class: 'nodes', text: `${g.prev_node || '—'} → ${g.next_node}` }),
      el('td', {}, el('span', { class: 'reason ' + g.reason, text: g.reason === 'node_lost' ? 'node lost' : g.reason })))),
    'None in the last 24 hours.');
}

/// Read the stream list again, and the cluster too while its view is shown; one at a time.
let clusterBusy = false;
function refreshCluster() {
  if (!state.cluster || clusterBusy) return;
  clusterBusy = true;
  const work = state.view === 'cluster'
    ? Promise.all([loadStreams(), probeCluster()]).then(renderCluster)
    : loadStreams();
  work.catch(showError).finally(() => { clusterBusy = false; });
}
setInterval(refreshCluster, CLUSTER_REFRESH_MS);

// --- sign-in ---------------------------------------------------------------------------

function openSignin(message) {
  const d = $('#signin');
  if (d.open) return;
  $('#signin-msg').textContent = message || '';
  $('#signin-token').value = '';
  d.showModal();
}

$('#signin-open').addEventListener('click', () => openSignin(''));
$('#signin').addEventListener('close', () => {
  const v = $('#signin').returnValue;
  if (v === 'ok') sessionStorage.setItem(TOKEN_KEY, $('#signin-token').value.trim());
  else if (v === 'signout') sessionStorage.removeItem(TOKEN_KEY);
  else return;
  updateSigninButton();
  connectEvents();
  route();
});

function updateSigninButton() { $('#signin-open').textContent = token() ? 'Signed in' : 'Sign in'; }

// --- routing ---------------------------------------------------------------------------

function showError(e) { console.error(e); }

function route() {
  const h = location.hash || '#/';
  let view = 'wall';
  if (h.startsWith('#/stream/')) view = 'stream';
  else if (h.startsWith('#/alerts')) view = 'alerts';
  else if (h.startsWith('#/cluster')) view = 'cluster';
  if (view === 'cluster' && !state.cluster) { location.replace('#/'); return; }
  state.view = view;
  for (const v of ['wall', 'stream', 'alerts', 'cluster']) $('#view-' + v).hidden = v !== view;
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.nav === view);
  if (view === 'stream') showDetail(decodeURIComponent(h.slice('#/stream/'.length)));
  if (view === 'alerts') loadAlerts();
  if (view === 'wall') refilter();
  if (view === 'cluster') { renderCluster(); refreshCluster(); }
}

$('#search').addEventListener('input', refilter);
$('#status-filter').addEventListener('change', refilter);
window.addEventListener('hashchange', route);

updateSigninButton();
Promise.all([loadStreams().catch(showError), probeCluster()]).finally(route);
connectEvents();
