// Chouquette operator console: polls the admin API every second with the key
// the operator typed (kept in sessionStorage, for this tab only), computes
// rates from counter differences and latency quantiles from histogram bucket
// differences, and draws the charts on <canvas> by hand. No library, nothing
// loaded from the network but this origin's admin API.
'use strict';

const KEY_STORE = 'chouquette.admin.key';
const POLL_MS = 1000;
/** Samples kept for the charts: two minutes at one per second. */
const HISTORY = 120;
/** Samples between the two ends of a "now" rate or quantile. */
const WINDOW = 5;
const LATENCY_WINDOW = 10;

const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_STORE) || '',
  samples: [], // {stats, at} newest last
  series: [], // {connections, published, delivered, written, p50, p99} per sample
  status: null,
  timer: null,
  busy: false,
  ticks: 0,
};
window.__console = state; // for tests and curious operators

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'the gateway cannot be reached');
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    // not JSON: the message below says the status
  }
  if (!res.ok) throw new ApiError(res.status, (data && data.message) || `HTTP ${res.status}`);
  return data;
}

// ---------- formatting ----------

const intFmt = new Intl.NumberFormat('en-US');
function fmtInt(v) {
  return v === null || v === undefined || !Number.isFinite(v) ? '–' : intFmt.format(Math.round(v));
}
function fmtRate(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (v === 0) return '0';
  if (v < 10) return v.toFixed(1);
  return intFmt.format(Math.round(v));
}
function fmtMs(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (v < 1) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return intFmt.format(Math.round(v));
}
function fmtDuration(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** Sets an element's text, and its raw number in data-value (tests read it). */
function show(id, text, raw) {
  const el = $(id);
  el.textContent = text;
  if (raw !== undefined) el.dataset.value = String(raw);
}

// ---------- rates and quantiles ----------

/** The sample `back` samples before the newest (or the oldest there is). */
function sampleBack(back) {
  const s = state.samples;
  return s[Math.max(0, s.length - 1 - back)];
}

/** Per second, between two samples, of the number `pick` reads from stats. */
function rate(older, newer, pick) {
  if (!older || !newer || older === newer) return null;
  const dt = (newer.stats.uptime_ms - older.stats.uptime_ms) / 1000;
  const dv = pick(newer.stats) - pick(older.stats);
  if (dt <= 0 || dv < 0) return null; // restarted
  return dv / dt;
}

/** The histogram observed between two snapshots (bucket differences). */
function histDelta(older, newer) {
  if (!older) return newer;
  const counts = newer.counts.map((c, i) => c - (older.counts[i] || 0));
  if (counts.some((c) => c < 0)) return newer; // restarted
  return { bounds: newer.bounds, counts, count: counts.reduce((a, b) => a + b, 0) };
}

/**
 * Quantile `q` of a histogram, interpolated linearly inside its bucket (as
 * Prometheus' histogram_quantile does); null with no observation.
 */
function quantile(hist, q) {
  if (!hist || hist.count === 0) return null;
  const rank = q * hist.count;
  let before = 0;
  for (let i = 0; i < hist.counts.length; i += 1) {
    const n = hist.counts[i];
    if (n > 0 && before + n >= rank) {
      if (i >= hist.bounds.length) return hist.bounds[hist.bounds.length - 1]; // +Inf bucket
      const lower = i === 0 ? 0 : hist.bounds[i - 1];
      const upper = hist.bounds[i];
      return lower + ((upper - lower) * (rank - before)) / n;
    }
    before += n;
  }
  return hist.bounds[hist.bounds.length - 1];
}

const totalDrops = (s) => Object.values(s.drops).reduce((a, b) => a + b, 0);

// ---------- charts ----------

const COLORS = ['#2f6fde', '#1f9d55', '#d98a00', '#d64541'];

/** The top of a 4-step axis holding `v`, each step 1, 2, 2.5 or 5 times a power of ten. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const step = v / 4;
  const p = 10 ** Math.floor(Math.log10(step));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= step) return 4 * m * p;
  return 40 * p;
}

/** An axis label: whole numbers as such, others with what decimals they need. */
function fmtAxis(v) {
  if (Number.isInteger(v)) return intFmt.format(v);
  if (v >= 10) return intFmt.format(Math.round(v));
  return String(Number(v.toPrecision(2)));
}

/** Samples the x axis spans: what there is, at least 30 s, at most HISTORY. */
function span() {
  return Math.min(HISTORY, Math.max(30, state.series.length));
}

/**
 * Draws `series` ([{label, values}], values aligned right, newest last,
 * null for a gap) on `canvas`, sized to its CSS box at the device's pixel ratio.
 */
function drawChart(canvas, series, format) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (w === 0 || h === 0) return;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { left: 56, right: 10, top: 22, bottom: 18 };
  const plotW = w - pad.left - pad.right;
  const plotH = h - pad.top - pad.bottom;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && Number.isFinite(v)) max = Math.max(max, v);
  max = niceMax(max);
  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + (plotH * i) / 4;
    ctx.strokeStyle = i === 4 ? '#b9bfcb' : '#e8ebf0';
    ctx.beginPath();
    ctx.moveTo(pad.left, Math.round(y) + 0.5);
    ctx.lineTo(w - pad.right, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillStyle = '#6b7383';
    ctx.textAlign = 'right';
    ctx.fillText(fmtAxis(max * (1 - i / 4)), pad.left - 6, y);
  }
  const slots = span();
  const seconds = Math.round((slots * POLL_MS) / 1000);
  ctx.textAlign = 'left';
  ctx.fillText(seconds >= 120 ? `-${seconds / 60} min` : `-${seconds} s`, pad.left, h - 7);
  ctx.textAlign = 'right';
  ctx.fillText('now', w - pad.right, h - 7);
  const x = (i) => pad.left + (plotW * i) / (slots - 1);
  const y = (v) => pad.top + plotH * (1 - v / max);
  let legendX = pad.left;
  series.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.8;
    ctx.beginPath();
    let drawing = false;
    const values = s.values.slice(-slots);
    const offset = slots - values.length;
    values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) {
        drawing = false;
        return;
      }
      if (drawing) ctx.lineTo(x(offset + i), y(v));
      else ctx.moveTo(x(offset + i), y(v));
      drawing = true;
    });
    ctx.stroke();
    const last = s.values.length ? s.values[s.values.length - 1] : null;
    const text = `${s.label} ${last === null ? '–' : format(last)}`;
    ctx.fillStyle = color;
    ctx.fillRect(legendX, 6, 10, 10);
    ctx.fillStyle = '#1d2330';
    ctx.textAlign = 'left';
    ctx.fillText(text, legendX + 14, 11);
    legendX += ctx.measureText(text).width + 30;
  });
}

function drawCharts() {
  const s = state.series;
  drawChart($('chart-connections'), [
    { label: 'connections', values: s.map((p) => p.connections) },
    { label: 'subscriptions', values: s.map((p) => p.subscriptions) },
  ], fmtInt);
  drawChart($('chart-rates'), [
    { label: 'published', values: s.map((p) => p.published) },
    { label: 'delivered', values: s.map((p) => p.delivered) },
    { label: 'written', values: s.map((p) => p.written) },
  ], fmtRate);
  drawChart($('chart-latency'), [
    { label: 'p50', values: s.map((p) => p.p50) },
    { label: 'p99', values: s.map((p) => p.p99) },
  ], fmtMs);
}

// ---------- tables ----------

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

/** Replaces `table`'s body with one row per item, or a single "empty" row. */
function fillTable(table, items, row, empty) {
  const body = table.tBodies[0];
  const rows = items.map((item) => {
    const tr = document.createElement('tr');
    for (const td of row(item)) tr.append(td);
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(empty, 'empty');
    td.colSpan = table.tHead.rows[0].cells.length;
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function renderTables(older, newer) {
  const stats = newer.stats;
  const apps = Object.entries(stats.apps).sort((a, b) => a[0].localeCompare(b[0]));
  fillTable($('apps'), apps, ([id, a]) => [
    cell(id),
    cell(fmtInt(a.connections), 'num'),
    cell(fmtInt(a.subscriptions), 'num'),
    cell(fmtRate(rate(older, newer, (s) => s.apps[id]?.published ?? 0)), 'num'),
    cell(fmtRate(rate(older, newer, (s) => s.apps[id]?.delivered ?? 0)), 'num'),
    cell(fmtInt(a.published), 'num'),
    cell(fmtInt(a.delivered), 'num'),
  ], 'no app configured');
  const list = $('app-list');
  if (list.options.length !== apps.length) {
    list.replaceChildren(...apps.map(([id]) => Object.assign(document.createElement('option'), { value: id })));
  }

  const find = (s, c) => s.channels.find((x) => x.app === c.app && x.channel === c.channel);
  const channels = stats.channels.map((c) => ({
    ...c,
    publishedRate: rate(older, newer, (s) => find(s, c)?.published ?? 0),
    deliveredRate: rate(older, newer, (s) => find(s, c)?.delivered ?? 0),
  }));
  channels.sort((a, b) => (b.publishedRate ?? 0) - (a.publishedRate ?? 0) || b.published - a.published
    || a.app.localeCompare(b.app) || a.channel.localeCompare(b.channel));
  fillTable($('channels'), channels, (c) => [
    cell(c.app),
    cell(c.channel),
    cell(fmtRate(c.publishedRate), 'num'),
    cell(fmtRate(c.deliveredRate), 'num'),
    cell(fmtInt(c.published), 'num'),
    cell(fmtInt(c.delivered), 'num'),
  ], 'nothing published yet');

  const latencyOlder = sampleBack(LATENCY_WINDOW);
  const ops = Object.keys(stats.broker_roundtrip_seconds).sort();
  fillTable($('broker'), ops, (op) => {
    const h = histDelta(latencyOlder === newer ? null : latencyOlder.stats.broker_roundtrip_seconds[op],
      stats.broker_roundtrip_seconds[op]);
    const ms = (q) => {
      const v = quantile(h, q);
      return v === null ? null : v * 1000;
    };
    return [
      cell(op),
      cell(fmtRate(rate(older, newer, (s) => s.broker_roundtrip_seconds[op].count)), 'num'),
      cell(fmtMs(ms(0.5)), 'num'),
      cell(fmtMs(ms(0.99)), 'num'),
      cell(fmtInt(stats.broker_roundtrip_seconds[op].count), 'num'),
    ];
  }, 'no broker calls');
  const depth = histDelta(latencyOlder === newer ? null : latencyOlder.stats.outbox_depth, stats.outbox_depth);
  const depthP99 = quantile(depth, 0.99);
  show('v-depth-p99', depthP99 === null ? '–' : fmtRate(depthP99), depthP99 ?? '');

  const reasons = Object.keys(stats.drops).sort();
  fillTable($('drops'), reasons, (r) => [
    cell(r),
    cell(fmtRate(rate(older, newer, (s) => s.drops[r] ?? 0)), 'num'),
    cell(fmtInt(stats.drops[r]), 'num'),
  ], 'no drop reasons');
}

// ---------- kill switches ----------

function describeSwitch(sw) {
  const parts = [sw.scope];
  for (const k of ['app', 'channel', 'group', 'user']) if (sw[k]) parts.push(`${k} ${sw[k]}`);
  return parts.join(', ');
}

function renderSwitches(list) {
  fillTable($('switches'), list, (sw) => {
    const lift = document.createElement('button');
    lift.type = 'button';
    lift.className = 'small';
    lift.textContent = 'Lift';
    lift.addEventListener('click', () => changeSwitch(sw, true));
    const action = document.createElement('td');
    action.append(lift);
    return [cell(sw.scope), cell(sw.app ?? ''), cell(sw.channel ?? ''), cell(sw.group ?? ''), cell(sw.user ?? ''), action];
  }, 'none in force');
}

/** The fields each scope takes (admin.md). */
const SCOPE_FIELDS = {
  global: [],
  app: ['app'],
  channel: ['app', 'channel'],
  group: ['app', 'group'],
  user: ['app', 'user'],
  notifications: ['app'],
};

function scopeChanged() {
  const fields = SCOPE_FIELDS[$('sw-scope').value];
  for (const label of document.querySelectorAll('#switch-form label[data-for]')) {
    label.hidden = !fields.includes(label.dataset.for);
  }
}

async function changeSwitch(sw, enabled) {
  const what = describeSwitch(sw);
  const question = enabled
    ? `Lift the kill switch (${what})? Clients may subscribe again.`
    : `Switch off ${what}? Every subscription it covers gets reset "disabled" and new subscribes are refused.`;
  if (!window.confirm(question)) {
    show('switch-result', 'Cancelled.');
    return;
  }
  try {
    const answer = await api('POST', '/admin/switches', { ...sw, enabled });
    const did = enabled ? 'lifted' : 'in force';
    show('switch-result', answer.changed
      ? `${what}: ${did}${enabled ? '' : `, ${answer.affected_connections} connection(s) affected`}.`
      : `${what}: already ${did}; nothing changed.`);
    await refreshSwitches();
  } catch (e) {
    show('switch-result', `Refused: ${e.message}`);
  }
}

function switchFromForm() {
  const sw = { scope: $('sw-scope').value };
  for (const k of SCOPE_FIELDS[sw.scope]) {
    const v = $(`sw-${k}`).value.trim();
    if (v) sw[k] = v;
  }
  return sw;
}

async function refreshSwitches() {
  const answer = await api('GET', '/admin/switches');
  renderSwitches(answer.switches);
}

// ---------- users ----------

async function lookUpUser() {
  const app = $('du-app').value.trim();
  const user = $('du-user').value.trim();
  if (!app || !user) {
    show('user-result', 'Give an app and a user.');
    return;
  }
  try {
    const q = new URLSearchParams({ app, user });
    const answer = await api('GET', `/admin/connections?${q}`);
    const table = $('user-connections');
    table.hidden = false;
    fillTable(table, answer.connections, (c) => [
      cell(String(c.id)), cell(c.transport), cell(c.since.replace('T', ' ').replace(/\.\d+Z$/, 'Z')), cell(c.subscriptions.join(', ')),
    ], 'no connection on this node');
    show('user-result', `${answer.connections.length} connection(s) of ${user} on ${answer.node}.`);
  } catch (e) {
    show('user-result', `Refused: ${e.message}`);
  }
}

async function disconnectUser(event) {
  event.preventDefault();
  const app = $('du-app').value.trim();
  const user = $('du-user').value.trim();
  const reason = $('du-reason').value.trim();
  if (!window.confirm(`Disconnect every connection of ${user} (app ${app}) on this node?`)) {
    show('user-result', 'Cancelled.');
    return;
  }
  try {
    const answer = await api('POST', '/admin/disconnect', { app, user, ...(reason ? { reason } : {}) });
    show('user-result', `${answer.disconnected} connection(s) of ${user} closed.`);
    $('user-connections').hidden = true;
  } catch (e) {
    show('user-result', `Refused: ${e.message}`);
  }
}

// ---------- the loop ----------

function record(stats) {
  const newer = { stats, at: Date.now() };
  state.samples.push(newer);
  if (state.samples.length > HISTORY + LATENCY_WINDOW) state.samples.shift();
  const prev = state.samples.length > 1 ? state.samples[state.samples.length - 2] : null;
  const h = histDelta(prev?.stats.publish_to_write_seconds, stats.publish_to_write_seconds);
  const ms = (q) => {
    const v = prev ? quantile(h, q) : null;
    return v === null ? null : v * 1000;
  };
  state.series.push({
    connections: stats.connections,
    subscriptions: stats.subscriptions,
    published: rate(prev, newer, (s) => s.publications_total),
    delivered: rate(prev, newer, (s) => s.deliveries_queued_total),
    written: rate(prev, newer, (s) => s.messages_out_total),
    p50: ms(0.5),
    p99: ms(0.99),
  });
  if (state.series.length > HISTORY) state.series.shift();
}

function render() {
  const newer = sampleBack(0);
  const older = sampleBack(WINDOW);
  const s = newer.stats;
  show('v-connections', fmtInt(s.connections), s.connections);
  show('v-connections-total', fmtInt(s.connections_total), s.connections_total);
  show('v-subscriptions', fmtInt(s.subscriptions), s.subscriptions);
  show('v-switches', fmtInt(s.switches), s.switches);
  const published = rate(older, newer, (x) => x.publications_total);
  const delivered = rate(older, newer, (x) => x.deliveries_queued_total);
  const written = rate(older, newer, (x) => x.messages_out_total);
  const drops = rate(older, newer, totalDrops);
  show('v-published-rate', fmtRate(published), published ?? '');
  show('v-published-total', fmtInt(s.publications_total), s.publications_total);
  show('v-delivered-rate', fmtRate(delivered), delivered ?? '');
  show('v-delivered-total', fmtInt(s.deliveries_queued_total), s.deliveries_queued_total);
  show('v-written-rate', fmtRate(written), written ?? '');
  show('v-drops-rate', fmtRate(drops), drops ?? '');
  show('v-drops-total', fmtInt(totalDrops(s)), totalDrops(s));
  const latencyOlder = sampleBack(LATENCY_WINDOW);
  const h = histDelta(latencyOlder === newer ? null : latencyOlder.stats.publish_to_write_seconds, s.publish_to_write_seconds);
  const p50 = quantile(h, 0.5);
  const p99 = quantile(h, 0.99);
  show('v-p50', p50 === null ? '–' : fmtMs(p50 * 1000), p50 === null ? '' : p50 * 1000);
  show('v-p99', p99 === null ? '–' : fmtMs(p99 * 1000), p99 === null ? '' : p99 * 1000);
  show('node-id', s.node);
  show('node-uptime', fmtDuration(Math.floor(s.uptime_ms / 1000)));
  show('broker-kind', s.broker.kind);
  const broker = $('broker-state');
  broker.textContent = s.broker.connected ? 'connected' : 'disconnected';
  broker.className = `badge ${s.broker.connected ? 'on' : 'off'}`;
  renderTables(older, newer);
  drawCharts();
}

function setConnected(connected, message) {
  const badge = $('conn-state');
  badge.textContent = connected ? 'live' : message || 'not connected';
  badge.className = `badge ${connected ? 'on' : 'off'}`;
  $('node-info').hidden = !connected;
  $('forget').hidden = !state.key;
}

async function tick() {
  if (state.busy) return;
  state.busy = true;
  try {
    const [stats, switches] = await Promise.all([api('GET', '/admin/stats'), api('GET', '/admin/switches')]);
    if (state.ticks % 30 === 0 || !state.status) {
      state.status = await api('GET', '/admin/status');
      show('node-version', state.status.version);
    }
    state.ticks += 1;
    record(stats);
    renderSwitches(switches.switches);
    $('key-form').hidden = true;
    $('console').hidden = false;
    render();
    setConnected(true);
  } catch (e) {
    if (e.status === 401 || e.status === 403 || e.status === 404) {
      stop();
      sessionStorage.removeItem(KEY_STORE);
      $('key-form').hidden = false;
      show('key-error', e.status === 404 ? e.message : 'Wrong admin key.');
      setConnected(false);
    } else {
      setConnected(false, e.message);
    }
  } finally {
    state.busy = false;
  }
}

function start() {
  stop();
  show('key-error', '');
  state.samples = [];
  state.series = [];
  state.status = null;
  state.ticks = 0;
  tick();
  state.timer = setInterval(tick, POLL_MS);
}

function stop() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
}

document.addEventListener('DOMContentLoaded', () => {
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.key = $('key').value.trim();
    if (!state.key) return;
    sessionStorage.setItem(KEY_STORE, state.key);
    $('key').value = '';
    start();
  });
  $('forget').addEventListener('click', () => {
    stop();
    state.key = '';
    sessionStorage.removeItem(KEY_STORE);
    $('console').hidden = true;
    $('key-form').hidden = false;
    setConnected(false);
  });
  $('sw-scope').addEventListener('change', scopeChanged);
  scopeChanged();
  $('switch-form').addEventListener('submit', (event) => {
    event.preventDefault();
    changeSwitch(switchFromForm(), false);
  });
  $('du-look').addEventListener('click', lookUpUser);
  $('user-form').addEventListener('submit', disconnectUser);
  window.addEventListener('resize', () => {
    if (state.series.length) drawCharts();
  });
  if (state.key) start();
  else setConnected(false);
});
