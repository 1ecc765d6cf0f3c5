// The supervision dashboard: one user's view of the fleet, fed by the
// Chouquette client. All data arrives through the gateway; the page only
// asks its backend for a signed subscription (and for the current state
// after a reset). Text goes into the page with textContent, never as HTML.
import { Chouquette } from '/chouquette.js';

const SVG = 'http://www.w3.org/2000/svg';
// A simplified outline of mainland France and Corsica, as (longitude, latitude).
const FRANCE = [[2.37,51.03],[1.85,50.95],[1.6,50.7],[1.55,50.2],[1.08,49.93],[0.1,49.5],[-0.4,49.3],
  [-1.25,49.7],[-1.95,49.7],[-1.5,48.65],[-2.0,48.65],[-3.0,48.8],[-4.75,48.4],[-4.4,48.0],[-4.2,47.8],
  [-3.35,47.7],[-2.5,47.45],[-2.2,47.25],[-2.0,46.8],[-1.2,46.15],[-1.2,45.6],[-1.25,44.65],[-1.55,43.45],
  [-1.78,43.35],[-1.2,43.05],[0.0,42.8],[0.7,42.85],[1.45,42.6],[2.2,42.42],[3.17,42.45],[3.05,43.0],
  [3.7,43.4],[4.6,43.35],[5.35,43.2],[5.93,43.1],[6.6,43.2],[7.25,43.68],[7.5,43.78],[7.65,44.15],
  [6.9,44.4],[7.0,45.0],[6.8,45.8],[6.1,46.15],[6.1,46.6],[6.95,47.3],[7.58,47.58],[7.55,48.1],[7.8,48.6],
  [8.2,48.97],[7.0,49.15],[6.4,49.47],[5.8,49.55],[4.85,50.15],[4.15,49.98],[3.6,50.35],[2.6,50.8]];
const CORSICA = [[9.4,43.0],[9.55,42.1],[9.2,41.37],[8.6,41.7],[8.6,42.3],[8.75,42.6],[9.3,42.7]];
const BOUNDS = { west: -5.2, east: 9.8, north: 51.3, south: 41.2 };

const $ = (id) => document.getElementById(id);
const state = { user: null, client: null, bornes: new Map(), links: new Map(), count: 0,
                perSecond: new Array(60).fill(0) };

function project(lon, lat) {
  const x = (lon - BOUNDS.west) / (BOUNDS.east - BOUNDS.west) * 600;
  // Stretch latitude by 1/cos(46.5°) so France keeps its shape.
  const y = (BOUNDS.north - lat) / (BOUNDS.north - BOUNDS.south) * 640;
  return [x.toFixed(1), y.toFixed(1)];
}

function drawLand() {
  const map = $('map');
  for (const shape of [FRANCE, CORSICA]) {
    const path = document.createElementNS(SVG, 'polygon');
    path.setAttribute('points', shape.map(([lon, lat]) => project(lon, lat).join(',')).join(' '));
    path.setAttribute('class', 'land');
    map.appendChild(path);
  }
}

function time(iso) {
  return (iso ? new Date(iso) : new Date()).toLocaleTimeString();
}

function upsertBorne(b, at, flash) {
  let entry = state.bornes.get(b.uid);
  if (!entry) {
    const [x, y] = project(b.lon, b.lat);
    const dot = document.createElementNS(SVG, 'circle');
    dot.setAttribute('cx', x); dot.setAttribute('cy', y); dot.setAttribute('r', b.uid === 'B1' ? 7 : 4.5);
    const title = document.createElementNS(SVG, 'title');
    dot.appendChild(title);
    $('map').appendChild(dot);
    const row = document.createElement('tr');
    row.dataset.uid = b.uid;
    for (let i = 0; i < 7; i++) row.appendChild(document.createElement('td'));
    row.children[2].className = 'status-cell';
    row.children[2].appendChild(document.createElement('span'));
    row.children[5].className = 'link-cell';
    row.children[6].append(commandButton(b.uid, 'unlock', 'Unlock'), commandButton(b.uid, 'restart', 'Restart'));
    entry = { dot, title, row, status: b.status };
    state.bornes.set(b.uid, entry);
    const rows = [...state.bornes.values()].map((e) => e.row)
      .sort((a, b) => Number(a.dataset.uid.slice(1)) - Number(b.dataset.uid.slice(1)));
    $('bornes').tBodies[0].replaceChildren(...rows);
    $('visible-count').textContent = `(${state.bornes.size} visible)`;
  }
  entry.status = b.status;
  entry.title.textContent = `${b.uid} · ${b.city} · ${b.status}`;
  const cells = entry.row.children;
  cells[0].textContent = b.uid; cells[1].textContent = b.city;
  cells[2].firstChild.textContent = b.status; cells[2].firstChild.className = b.status;
  cells[3].textContent = `${b.power_kw} kW`; cells[4].textContent = time(at);
  showLink(b.uid);
  if (flash) {
    entry.row.classList.remove('flash'); void entry.row.offsetWidth; entry.row.classList.add('flash');
  }
}

// Each point is a device of the gateway: its liveness (online, silent,
// offline) arrives as device_* events on the same channel.
function showLink(uid) {
  const entry = state.bornes.get(uid);
  if (!entry) return;
  const link = state.links.get(uid) ?? 'unknown';
  entry.dot.setAttribute('class', `${entry.status} link-${link}`);
  entry.row.children[5].textContent = link;
  entry.row.children[5].dataset.link = link;
}

// Asks the backend to command a point; it calls the device through the
// gateway and the answer (or "offline") is shown in the alarm list.
function commandButton(uid, command, label) {
  const button = document.createElement('button');
  button.className = 'command';
  button.textContent = label;
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const r = await fetch('/api/command', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: state.user, borne: uid, command }) });
      const a = await r.json();
      const said = a.result !== undefined ? JSON.stringify(a.result)
        : a.error ? `${a.error.code}: ${a.error.message ?? ''}`
        : a.code === 'offline' ? `offline (last seen ${a.last_seen ? time(a.last_seen) : 'never'})`
        : `${a.code ?? r.status}: ${a.message ?? a.error ?? ''}`;
      addAlarm(`${command} ${uid}: ${said}`, r.ok && !a.error ? 'reset' : 'major');
    } catch (e) {
      addAlarm(`${command} ${uid}: ${e.message}`, 'major');
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function addAlarm(text, level, at) {
  const li = document.createElement('li');
  li.className = level;
  const t = document.createElement('time');
  t.textContent = time(at);
  li.append(t, document.createTextNode(text));
  $('alarms').prepend(li);
  while ($('alarms').children.length > 100) $('alarms').lastChild.remove();
}

function onEvent(message, snapshot) {
  const kind = message.event_kind;
  if (kind === 'status' && !message.late) {
    // A late status (sent after an outage, older than the point's current
    // one) is history: the table keeps the newer state.
    upsertBorne(message.data, message.timestamp, !snapshot);
  } else if (kind === 'telemetry') {
    const entry = state.bornes.get(message.data.uid);
    if (entry) entry.row.children[4].textContent = time(message.timestamp);
  } else if (kind.startsWith('device_')) {
    const d = message.data;
    state.links.set(d.device, d.state);
    showLink(d.device);
    if (!snapshot && d.state !== 'online') addAlarm(`${d.device} ${d.state} (${d.reason})`, 'minor');
    if (!snapshot && d.state === 'online') addAlarm(`${d.device} back online (${d.reason})`, 'reset');
  } else if (message.event_kind === 'alarm') {
    const a = message.data;
    addAlarm(`${a.level.toUpperCase()} on ${a.uid}: ${a.message}`, a.level, message.timestamp);
  }
  if (!snapshot) {
    state.count += 1;
    state.perSecond[state.perSecond.length - 1] += 1;
    $('count').textContent = String(state.count);
  }
  $('offset').textContent = String(message.offset);
  window.__demo.received.push({ offset: message.offset, kind: message.event_kind,
                                keywords: message.keywords, snapshot: Boolean(snapshot) });
}

// Notifications from the backend (an alarm on B1, bursts of maintenance
// reports): each shown once with an acknowledge button, a grouped one with
// its count; removed when acknowledged here or in another tab of the user.
function showNotification(n) {
  const li = document.createElement('li');
  li.dataset.id = n.id;
  li.dataset.ids = JSON.stringify(n.grouped?.ids ?? [n.id]);
  li.className = n.kind;
  const t = document.createElement('time');
  t.textContent = time(n.grouped?.last ?? n.created);
  const title = document.createElement('strong');
  title.textContent = n.title;
  li.append(t, title);
  if (n.grouped) {
    const count = document.createElement('span');
    count.className = 'count';
    count.textContent = `×${n.grouped.count}`;
    count.title = `${n.grouped.count} grouped, first at ${time(n.grouped.first)}`;
    li.append(count);
  }
  const body = document.createElement('span');
  body.className = 'body';
  body.textContent = n.body;
  const ack = document.createElement('button');
  ack.className = 'ack';
  ack.textContent = 'Acknowledge';
  ack.addEventListener('click', () => {
    ack.disabled = true;
    state.client.ackNotifications([n.id]).catch((e) => {
      ack.disabled = false;
      addAlarm(`acknowledgement failed: ${e.code}`, 'major');
    });
  });
  li.append(body, ack);
  $('notifications').prepend(li);
  countNotifications();
  window.__demo.notifications.push({ id: n.id, kind: n.kind, title: n.title,
                                     count: n.grouped?.count ?? 1 });
}

function hideNotifications(ids) {
  for (const li of [...$('notifications').children]) {
    if (JSON.parse(li.dataset.ids).some((id) => ids.includes(id))) li.remove();
  }
  countNotifications();
}

function countNotifications() {
  const n = $('notifications').children.length;
  $('notification-count').textContent = n ? `(${n} to acknowledge)` : '';
}

async function refetch() {
  // After a reset the view may be stale: ask the backend for the truth.
  const bornes = await fetch(`/api/bornes?user=${state.user}`).then((r) => r.json());
  for (const b of bornes) upsertBorne(b, null, false);
}

function drawChart() {
  state.perSecond.push(0);
  state.perSecond.shift();
  const max = Math.max(5, ...state.perSecond);
  const points = state.perSecond.map((v, i) => `${(i / 59 * 600).toFixed(1)},${(130 - v / max * 120).toFixed(1)}`);
  const chart = $('chart');
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', points.join(' '));
  const label = document.createElementNS(SVG, 'text');
  label.setAttribute('x', '4'); label.setAttribute('y', '12');
  label.textContent = `max ${max}/s`;
  const base = document.createElementNS(SVG, 'line');
  base.setAttribute('x1', '0'); base.setAttribute('x2', '600'); base.setAttribute('y1', '130'); base.setAttribute('y2', '130');
  chart.replaceChildren(base, line, label);
}

function setState(s) {
  const el = $('state');
  el.textContent = s.state;
  el.className = `state ${s.state}`;
  $('transport').textContent = s.transport ? `over ${s.transport}` : '';
}

function switchUser(user) {
  if (state.client) state.client.close();
  state.user = user;
  state.count = 0;
  for (const { dot } of state.bornes.values()) dot.remove();
  state.bornes.clear();
  state.links.clear();
  $('bornes').tBodies[0].replaceChildren();
  $('alarms').replaceChildren();
  $('notifications').replaceChildren();
  countNotifications();
  window.__demo.notifications = [];
  $('count').textContent = '0';
  window.__demo.user = user;
  window.__demo.received = [];
  for (const b of document.querySelectorAll('.user-switch button')) {
    b.setAttribute('aria-pressed', String(b.dataset.user === user));
  }
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const client = new Chouquette({
    url: `${scheme}://${location.host}/ws`,
    getSubscription: () => fetch(`/api/get_subscription?user=${user}`).then((r) => r.json()),
    // The user's identity, for notifications addressed to them.
    getConnectToken: () => fetch(`/api/connect_token?user=${user}`).then((r) => r.json()),
  });
  client.on('notification', showNotification);
  client.on('notification_acked', (m) => hideNotifications(m.ids ?? []));
  client.on('data', (m) => onEvent(m, false));
  client.on('snapshot', (m) => onEvent(m, true));
  client.on('reset', (r) => { addAlarm(`reset (${r.reason}): refetching state`, 'reset'); refetch(); });
  client.on('error', (e) => addAlarm(`error ${e.code}: ${e.message}`, 'major'));
  client.on('state', setState);
  client.connect();
  state.client = client;
  // For the browser tests: stop the flow before a screenshot.
  window.__demo.client = client;
}

window.__demo = { user: null, received: [], notifications: [] };
drawLand();
setInterval(drawChart, 1000);
for (const b of document.querySelectorAll('.user-switch button')) {
  b.addEventListener('click', () => switchUser(b.dataset.user));
}
switchUser(new URLSearchParams(location.search).get('user') === 'roger' ? 'roger' : 'vb');
