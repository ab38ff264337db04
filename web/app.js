// tsbroker status page: login, live farm view (fetch every few seconds, no
// reload), and the admin actions (drain, enable, forget, log off, disconnect).
// Rows are updated in place, so focus and selection survive a refresh.
// Everything the broker sends is shown with textContent, never as HTML.
'use strict';

(function () {
  const REFRESH_MS = 3000;
  const EVENTS_KEEP = 100;
  const HISTORY_MS = 3600 * 1000;   // the charts' span
  const $ = (id) => document.getElementById(id);

  let csrf = null;          // from the login answer or GET /api/v1/session
  let timer = null;
  let refreshing = false;
  let lastEventId = 0;
  let events = [];
  let knownServers = '';
  let heartbeatInterval = 5;

  // ---- HTTP ----------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { 'Accept': 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
    const r = await fetch(path, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const msg = data && data.error ? data.error : `HTTP ${r.status}`;
      const err = new ApiError(r.status, msg);
      err.retryAfter = r.headers.get('Retry-After');
      throw err;
    }
    return data;
  }

  // ---- formatting ------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function badge(text, kind, extra) {
    return el('span', { class: `badge badge-${kind}${extra ? ' ' + extra : ''}`, text });
  }

  function age(ms) {
    if (ms === null || ms === undefined) return 'never';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function clock(ts) {
    const d = new Date(ts);
    const today = new Date();
    const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    if (d.toDateString() === today.toDateString()) return t;
    return `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${t}`;
  }

  function bar(percent, label) {
    const p = Math.max(0, Math.min(100, percent || 0));
    const fill = el('span', { class: p >= 90 ? 'hot' : p >= 70 ? 'warm' : '' });
    fill.style.width = `${p}%`;
    return el('div', { class: 'meter', title: label },
      el('div', { class: 'bar' }, fill), el('span', { class: 'meter-num', text: label }));
  }

  function setText(id, v) { $(id).textContent = String(v); }

  // Updates the rows of body in place from fresh (each with a data-key):
  // a row whose cells are unchanged is left alone, a changed cell alone is
  // replaced, so focus, text selection and scroll survive a refresh.
  function patchRows(body, fresh) {
    const old = new Map([...body.children].map((r) => [r.dataset.key, r]));
    let at = body.firstElementChild;
    for (const row of fresh) {
      let cur = old.get(row.dataset.key);
      if (cur) {
        old.delete(row.dataset.key);
        for (const a of [...cur.attributes]) if (!row.hasAttribute(a.name)) cur.removeAttribute(a.name);
        for (const a of [...row.attributes]) if (cur.getAttribute(a.name) !== a.value) cur.setAttribute(a.name, a.value);
        const cells = [...row.children];
        while (cur.children.length > cells.length) cur.lastElementChild.remove();
        cells.forEach((c, i) => {
          const o = cur.children[i];
          if (!o) cur.append(c);
          else if (!o.isEqualNode(c)) o.replaceWith(c);
        });
      } else {
        cur = row;
      }
      if (cur !== at) body.insertBefore(cur, at);
      at = cur.nextElementSibling;
    }
    for (const r of old.values()) r.remove();
  }

  function toast(msg, bad) {
    const t = $('toast');
    t.textContent = msg;
    t.className = `toast${bad ? ' toast-bad' : ''}`;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  // ---- views ------------------------------------------------------------------
  function showLogin(message) {
    stopRefresh();
    csrf = null;
    $('app-view').hidden = true;
    $('session-bar').hidden = true;
    $('login-view').hidden = false;
    const e = $('login-error');
    e.hidden = !message;
    e.textContent = message || '';
    $('password').value = '';
    $('password').focus();
  }

  function showApp() {
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('session-bar').hidden = false;
    lastEventId = 0;
    events = [];
    refresh();
  }

  function setLive(ok, text) {
    $('live').className = `live${ok ? '' : ' live-bad'}`;
    setText('live-text', text);
  }

  // ---- summary ----------------------------------------------------------------
  function renderStatus(s) {
    const sv = s.servers, ss = s.sessions, n1 = s.n_plus_1;
    setText('sum-servers-up', sv.up);
    setText('sum-servers-total', sv.total);
    setText('sum-servers-down', sv.down);
    setText('sum-servers-unknown', sv.unknown);
    setText('sum-servers-draining', sv.draining);
    setText('sum-servers-quarantined', sv.quarantined);
    setText('sum-sessions-total', ss.active + ss.disconnected + ss.pending);
    setText('sum-sessions-active', ss.active);
    setText('sum-sessions-disconnected', ss.disconnected);
    setText('sum-sessions-pending', ss.pending);
    setText('sum-sessions-lost', ss.lost);
    setText('sum-free', sv.free);
    setText('sum-capacity', sv.capacity);
    setText('sum-accepting', sv.accepting_new);
    const used = sv.capacity ? 100 * (sv.capacity - sv.free) / sv.capacity : 0;
    const capBar = $('sum-capacity-bar');
    capBar.style.width = `${used}%`;
    capBar.className = used >= 90 ? 'hot' : used >= 70 ? 'warm' : '';

    const card = $('n1-card'), b = $('n1-badge');
    if (n1.up_servers === 0) {
      setText('n1-headroom', '–');
      b.textContent = 'no server up';
      b.className = 'badge badge-down';
      setText('n1-text', 'No server is up: there is nothing to fail over to.');
      card.dataset.ok = 'false';
      return;
    }
    setText('n1-headroom', n1.headroom);
    b.textContent = n1.ok ? 'OK' : 'at risk';
    b.className = `badge ${n1.ok ? 'badge-up' : 'badge-down'}`;
    card.dataset.ok = String(n1.ok);
    const ws = n1.worst_sessions, h = n1.headroom;
    let text = `Losing ${n1.worst} and placing its ${ws} session${ws === 1 ? '' : 's'} on the other servers ` +
      'taking new users leaves ';
    if (h < 0) text += `${-h} user${h === -1 ? '' : 's'} without a place (headroom ${h}).`;
    else if (!n1.ok) text += `${h} free places: no other server takes new users.`;
    else text += `${h} free place${h === 1 ? '' : 's'}.`;
    setText('n1-text', text);
  }

  // ---- servers ----------------------------------------------------------------
  function stateBadges(s) {
    const box = el('div', { class: 'badges' });
    box.append(badge(s.state, s.state === 'up' ? 'up' : s.state === 'down' ? 'down' : 'unknown', 'badge-state'));
    if (s.admin_state === 'draining') box.append(badge('draining', 'draining', 'badge-admin'));
    if (s.quarantined) box.append(badge('quarantined', 'quarantined'));
    if (!s.sessions_known) box.append(badge('sessions unknown', 'unknown'));
    return box;
  }

  function renderServers(list) {
    const body = $('servers-body');
    const rows = [];
    for (const s of list) {
      const load = s.sessions.load;
      const sessPct = s.max_sessions ? 100 * load / s.max_sessions : 0;
      const parts = [];
      if (s.sessions.disconnected) parts.push(`${s.sessions.disconnected} disc.`);
      if (s.sessions.pending) parts.push(`${s.sessions.pending} pending`);
      if (s.sessions.lost) parts.push(`${s.sessions.lost} lost`);
      const action = s.admin_state === 'draining'
        ? el('button', { type: 'button', class: 'btn btn-small', 'data-action': 'enable', text: 'Enable', 'aria-label': `Enable ${s.name}` })
        : el('button', { type: 'button', class: 'btn btn-small btn-warn', 'data-action': 'drain', text: 'Drain', 'aria-label': `Drain ${s.name}` });
      const stale = s.state === 'up' && s.heartbeat_age_ms !== null && s.heartbeat_age_ms > 2000 * heartbeatInterval;
      rows.push(el('tr', { 'data-key': s.name, 'data-server': s.name, class: s.state === 'down' ? 'row-down' : '' },
        el('td', { class: 'strong' }, s.name, s.agent_version ? el('div', { class: 'sub', text: `agent ${s.agent_version}` }) : null),
        el('td', { class: 'mono', text: `${s.address}:${s.port}` }),
        el('td', {}, stateBadges(s)),
        el('td', { class: 'col-bar' }, s.last_heartbeat ? bar(s.cpu_percent, `${s.cpu_percent.toFixed(0)}%`) : el('span', { class: 'muted', text: '–' })),
        el('td', { class: 'col-bar' }, s.mem_percent !== null ? bar(s.mem_percent, `${s.mem_percent.toFixed(0)}%`) : el('span', { class: 'muted', text: '–' })),
        el('td', { class: 'col-sessions' },
          el('div', { class: 'sessions-cell' },
            el('span', { class: 'sessions-num', 'data-testid': 'sessions', text: `${load} / ${s.max_sessions}` }),
            el('div', { class: 'bar bar-thin' }, (() => { const f = el('span', { class: sessPct >= 90 ? 'hot' : sessPct >= 70 ? 'warm' : '' }); f.style.width = `${Math.min(100, sessPct)}%`; return f; })())),
          parts.length ? el('div', { class: 'sub', text: parts.join(' · ') }) : null),
        el('td', { class: stale ? 'warn-text' : '', text: age(s.heartbeat_age_ms) }),
        el('td', { class: 'col-actions' }, action)));
    }
    patchRows(body, rows);
    $('servers-empty').hidden = list.length > 0;
    setText('servers-count', `${list.length} server${list.length === 1 ? '' : 's'}`);

    // the server filter follows the list of servers
    const names = list.map((s) => s.name).join('\n');
    if (names !== knownServers) {
      knownServers = names;
      const sel = $('filter-server'), cur = sel.value;
      sel.replaceChildren(el('option', { value: '', text: 'All servers' }),
        ...list.map((s) => el('option', { value: s.name, text: s.name })));
      sel.value = list.some((s) => s.name === cur) ? cur : '';
    }
  }

  // ---- sessions ---------------------------------------------------------------
  function sessionsQuery() {
    const q = new URLSearchParams();
    const user = $('filter-user').value.trim();
    if (user) q.set('user', user);
    if ($('filter-server').value) q.set('server', $('filter-server').value);
    if ($('filter-state').value) q.set('state', $('filter-state').value);
    q.set('limit', '500');
    return `/api/v1/sessions?${q}`;
  }

  const STATE_KIND = { active: 'up', disconnected: 'disconnected', pending: 'pending', lost: 'down', ended: 'unknown' };

  const sessionsShown = new Map();   // id -> the session last rendered

  // One session's row: add a column here (and its <th> in index.html).
  function sessionRow(e, now) {
    const actions = el('div', { class: 'row-actions' });
    const btn = (action, text, cls) => actions.append(el('button', {
      type: 'button', class: `btn btn-small ${cls}`, 'data-action': action, text,
      'aria-label': `${text} ${e.user} on ${e.server} (session ${e.id})`,
    }));
    if (e.state === 'active' || e.state === 'disconnected') btn('logoff', 'Log off', 'btn-warn');
    if (e.state === 'active') btn('disconnect', 'Disconnect', 'btn-ghost');
    if (e.state !== 'ended') btn('forget', 'Forget', e.state === 'lost' ? 'btn-warn' : 'btn-ghost');
    const who = e.domain ? `${e.domain}\\${e.login || e.user}` : (e.login || e.user);
    return el('tr', { 'data-key': String(e.id), 'data-session': String(e.id), 'data-user': e.user, class: e.state === 'lost' ? 'row-lost' : '' },
      el('td', { class: 'num mono', text: e.id }),
      el('td', { class: 'strong' }, e.user, who.toLowerCase() !== e.user ? el('div', { class: 'sub', text: who }) : null),
      el('td', { text: e.server }),
      el('td', {}, badge(e.state, STATE_KIND[e.state] || 'unknown', 'badge-session')),
      el('td', { class: 'mono', text: e.client || '–' }),
      deskCell(e.desk),
      el('td', { text: age(now - e.updated), title: new Date(e.updated).toLocaleString() }),
      el('td', { class: 'col-actions' }, actions));
  }

  function renderSessions(data, now) {
    sessionsShown.clear();
    for (const e of data.sessions) sessionsShown.set(String(e.id), e);
    const rows = data.sessions.map((e) => sessionRow(e, now));
    patchRows($('sessions-body'), rows);
    $('sessions-empty').hidden = rows.length > 0;
    setText('sessions-count', data.truncated ? `showing ${rows.length} of ${data.total}` :
      `${data.total} session${data.total === 1 ? '' : 's'}`);
  }

  // ---- the desk: the computer name a client claimed (null: unknown) ------------
  function deskCell(desk) {
    if (desk === null || desk === undefined) return el('td', { class: 'muted', 'data-desk': 'unknown', text: 'unknown' });
    return el('td', { class: 'mono', 'data-desk': desk, text: desk === '' ? '(none)' : desk });
  }

  // the trail of the user searched (the search box names one user)
  async function renderTrail() {
    const user = $('filter-user').value.trim();
    const t = user ? await api('GET', `/api/v1/users/${encodeURIComponent(user)}/trail?limit=20`)
      .catch(() => null) : null;
    const rows = t ? t.trail : [];
    $('trail').hidden = rows.length === 0;
    if (!rows.length) return;
    setText('trail-title', `Where ${t.user} sat: desks and addresses as the clients claim them ` +
      `(kept ${t.keep_days} days)`);
    $('trail-list').replaceChildren(...rows.map((r) => el('li', { 'data-trail': r.kind },
      el('time', { text: clock(r.ts), datetime: new Date(r.ts).toISOString() }),
      badge(r.kind, r.kind === 'new' ? 'pending' : 'up'),
      el('span', { class: 'event-text' },
        el('b', { class: 'trail-desk', text: r.desk === null ? 'unknown desk' : (r.desk || '(none)') }),
        el('span', { class: 'muted', text: ` from ${r.client || '–'} to ` }),
        el('b', { text: r.server })))));
  }

  // ---- events -----------------------------------------------------------------
  const EVENT_KIND = {
    server_up: 'up', server_down: 'down', placement: 'pending', reconnect: 'up',
    refusal: 'down', redirect_failed: 'down', drain: 'draining', enable: 'up',
    pending_expired: 'draining', quarantine: 'quarantined', forget: 'unknown',
    admin_login_failed: 'down',
  };

  function eventItem(e) {
    return el('li', { 'data-event': e.kind, 'data-key': String(e.id) },
      el('time', { text: clock(e.ts), datetime: new Date(e.ts).toISOString() }),
      badge(e.kind.replace(/_/g, ' '), EVENT_KIND[e.kind] || 'neutral'),
      el('span', { class: 'event-text' },
        e.server ? el('b', { text: e.server }) : null,
        e.user ? ` ${e.user}` : null,
        e.client ? el('span', { class: 'muted', text: ` from ${e.client}` }) : null,
        e.detail ? el('span', { class: 'event-detail', text: ` ${e.detail}` }) : null));
  }

  function renderEvents(fresh) {
    if (fresh.length) {
      lastEventId = Math.max(lastEventId, ...fresh.map((e) => e.id));
      events = fresh.concat(events).slice(0, EVENTS_KEEP);
    }
    const list = $('events-list');
    if (!events.length) { list.replaceChildren(el('li', { class: 'empty', text: 'No events yet.' })); return; }
    patchRows(list, events.map(eventItem));
  }

  // ---- refresh loop -------------------------------------------------------------
  function stopRefresh() { clearTimeout(timer); timer = null; }

  async function refresh() {
    stopRefresh();
    if (refreshing) { timer = setTimeout(refresh, 200); return; }
    refreshing = true;
    try {
      const [status, servers, sessions, ev, history] = await Promise.all([
        api('GET', '/api/v1/status'),
        api('GET', '/api/v1/servers'),
        api('GET', sessionsQuery()).catch((e) => {
          if (e.status === 404) { $('filter-server').value = ''; return { sessions: [], total: 0, truncated: false }; }
          throw e;
        }),
        api('GET', `/api/v1/events?since=${lastEventId}&limit=${EVENTS_KEEP}`),
        // the last hour; the page still works without it
        api('GET', `/api/v1/history?since=${Date.now() - HISTORY_MS}`).catch(() => null),
      ]);
      heartbeatInterval = status.heartbeat_interval;
      renderStatus(status);
      renderServers(servers.servers);
      renderSessions(sessions, status.now);
      renderEvents(ev.events);
      if (history && window.TsbCharts && window.uPlot) window.TsbCharts.render(history);
      await renderTrail();
      setLive(true, `updated ${clock(status.now)}`);
      document.body.dataset.refreshed = String((Number(document.body.dataset.refreshed) || 0) + 1);
    } catch (e) {
      if (e.status === 401) { refreshing = false; showLogin('Your session has ended: sign in again.'); return; }
      // 503: the broker answers but cannot read its state (the message says why)
      setLive(false, e.status === 503 ? e.message : `broker unreachable (${e.message})`);
    } finally {
      refreshing = false;
    }
    if (!$('app-view').hidden) timer = setTimeout(refresh, REFRESH_MS);
  }

  // ---- actions ------------------------------------------------------------------
  function confirmDialog(title, text, okLabel) {
    const d = $('confirm');
    setText('confirm-title', title);
    setText('confirm-text', text);
    setText('confirm-ok', okLabel);
    d.returnValue = '';
    d.showModal();
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    });
  }

  async function serverAction(name, action) {
    const drain = action === 'drain';
    const ok = await confirmDialog(drain ? `Drain ${name}?` : `Enable ${name}?`,
      drain ? `${name} will get no new users. Users with a session there still reconnect to it.`
        : `${name} will take new users again.`, drain ? 'Drain' : 'Enable');
    if (!ok) return;
    try {
      const s = await api('POST', `/api/v1/servers/${encodeURIComponent(name)}/${action}`);
      toast(`${s.name} is ${s.admin_state === 'draining' ? 'draining' : 'enabled'}`);
    } catch (e) {
      if (e.status === 401) { showLogin('Your session has ended: sign in again.'); return; }
      toast(`Cannot ${action} ${name}: ${e.message}`, true);
    }
    refresh();
  }

  async function forgetSession(e) {
    const ok = await confirmDialog(`Forget session ${e.id}?`,
      `The broker forgets ${e.user}'s ${e.state} session on ${e.server}; the user's next ` +
      'connection is placed anew. The agent reports it again if it still exists.', 'Forget');
    if (!ok) return;
    try {
      await api('DELETE', `/api/v1/sessions/${e.id}`);
      toast(`Session ${e.id} of ${e.user} forgotten`);
    } catch (err) {
      if (err.status === 401) { showLogin('Your session has ended: sign in again.'); return; }
      toast(`Cannot forget session ${e.id}: ${err.message}`, true);
    }
    refresh();
  }

  // Log off or disconnect through the agent: the broker queues a command
  // the agent runs at its next heartbeat; its outcome comes as an event.
  async function sessionCommand(e, action) {
    const logoff = action === 'logoff';
    const ok = await confirmDialog(`${logoff ? 'Log off' : 'Disconnect'} ${e.user} on ${e.server}?`,
      logoff ? `${e.user}'s session ${e.id} on ${e.server} is ended: unsaved work in it is lost.`
        : `${e.user}'s client is disconnected from ${e.server}; session ${e.id} stays and the user can reconnect to it.`,
      logoff ? 'Log off' : 'Disconnect');
    if (!ok) return;
    try {
      const r = await api('POST', `/api/v1/sessions/${e.id}/${action}`);
      const c = r && (r.command || r);
      toast(`${logoff ? 'Log off' : 'Disconnect'} of ${e.user} on ${e.server}: ${c && c.state ? c.state : 'sent'}`);
    } catch (err) {
      if (err.status === 401) { showLogin('Your session has ended: sign in again.'); return; }
      toast(`Cannot ${logoff ? 'log off' : 'disconnect'} ${e.user} on ${e.server}: ${err.message}`, true);
    }
    refresh();
  }

  // One listener per table: buttons kept across refreshes keep working.
  function onRowAction(ev) {
    const b = ev.target.closest('button[data-action]');
    const tr = b && b.closest('tr');
    if (!tr) return;
    if (tr.dataset.server) { serverAction(tr.dataset.server, b.dataset.action); return; }
    const e = sessionsShown.get(tr.dataset.session);
    if (!e) return;
    if (b.dataset.action === 'forget') forgetSession(e);
    else sessionCommand(e, b.dataset.action);
  }

  // ---- login --------------------------------------------------------------------
  async function login(ev) {
    ev.preventDefault();
    const btn = $('login-submit'), err = $('login-error');
    btn.disabled = true;
    err.hidden = true;
    try {
      const r = await api('POST', '/api/v1/login', { password: $('password').value });
      csrf = r.csrf_token;
      $('password').value = '';
      showApp();
    } catch (e) {
      err.textContent = e.status === 401 ? 'Wrong password.'
        : e.status === 429 ? `Too many failed attempts: try again in ${e.retryAfter || 'a few'} s.`
          : `Cannot sign in: ${e.message}`;
      err.hidden = false;
      $('password').select();
    } finally {
      btn.disabled = false;
    }
  }

  async function logout() {
    try { await api('POST', '/api/v1/logout'); } catch (e) { /* ended anyway */ }
    showLogin('');
  }

  let filterTimer = null;
  function onFilter() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(refresh, 250);
  }

  document.addEventListener('DOMContentLoaded', async () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('servers-body').addEventListener('click', onRowAction);
    $('sessions-body').addEventListener('click', onRowAction);
    $('filter-user').addEventListener('input', onFilter);
    $('filter-server').addEventListener('change', refresh);
    $('filter-state').addEventListener('change', refresh);
    try {
      const s = await api('GET', '/api/v1/session');
      csrf = s.csrf_token || null;
      showApp();
    } catch (e) {
      showLogin('');
    }
  });
})();
