/*
 * switchyard web console: plain JavaScript, no framework, no third-party code. It talks only to
 * the operator API of the server that serves it (/api/v1/..., `Authorization: Bearer <token>`),
 * and builds every element with the DOM API (no innerHTML, no inline styles: the page's CSP is
 * `default-src 'self'; style-src 'self'; script-src 'self'`).
 *
 * Sign-in: a token checked with GET /api/v1/whoami, kept in sessionStorage (this tab only).
 *
 * Routes (location.hash):
 *   #/overview             KPI tiles (GET /kpis), refreshed every 10 s
 *   #/approvals            the approval queue; approve / reject with a note (supervisor)
 *   #/exceptions?state=..  exception tasks; assign to me, start, resolve, add a note (operator)
 *   #/campaigns[/ID]       campaigns; the selected one's release chart (SVG), pause / resume;
 *                          refreshed every 5 s
 *   #/orders?q=..&status=  order search
 *   #/orders/ID            one order: its fields, hold / release / cancel, and its audit
 *                          timeline (oldest first), refreshed every 2 s
 *   #/meters[/ID]          meter lookup: zone, flags, state, audit timeline (newest first)
 *   #/signout              forgets the token
 *
 * Stable hooks for tests (tests/console/e2e.mjs lists the ones it uses): element ids such as
 * #signin-token, #nav-approvals, #msg-error, #msg-ok, #order-status, #order-timeline,
 * #campaign-chart, and data-testid / data-* attributes on table rows and buttons
 * (tr[data-order-id], tr[data-exception-id], tr[data-campaign-id], button[data-testid=approve]).
 */
'use strict';

(() => {
  const TOKEN_KEY = 'switchyard.console.token';
  const API = '/api/v1';

  /** Order statuses, in the order an order moves through them. */
  const ORDER_STATUSES = ['received', 'scheduled', 'deferred', 'awaiting_approval', 'dispatched',
    'retry_scheduled', 'confirmed', 'completed', 'failed', 'cancelled', 'rejected'];
  const OPEN_STATUSES = ['received', 'scheduled', 'deferred', 'awaiting_approval', 'dispatched',
    'retry_scheduled', 'confirmed'];
  const FINAL_STATUSES = ['completed', 'failed', 'cancelled', 'rejected'];

  /** Meter flags (bits of `flags` in GET /meters/{id}). */
  const METER_FLAGS = [
    [1, 'has_switch', 'remote switch'],
    [2, 'life_support', 'life support'],
    [4, 'medical', 'medical'],
    [8, 'critical_care', 'critical care'],
    [16, 'vip', 'VIP'],
    [32, 'legal_dispute', 'legal dispute'],
  ];

  // ---------------------------------------------------------------------------------------
  // Session state

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  /** {name, role} of the signed-in token. */
  let me = null;
  /** Bumped at every route change and sign-out: async work of an older view drops its result. */
  let gen = 0;
  /** Where the error shown in #msg-error came from ('poll' errors are cleared by a good poll). */
  let errorSource = null;

  // ---------------------------------------------------------------------------------------
  // Small helpers

  const $ = (sel, root = document) => root.querySelector(sel);

  /**
   * Builds an element. attrs: {class, id, text, on: {event: fn}, dataset-like 'data-x', any
   * attribute}; children: nodes, strings, arrays, null (skipped).
   */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  /** Builds an SVG element (attributes as given). */
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
      else if (k === 'value') el.value = v;
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  /** Replaces the children of `el`. */
  function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
  }

  const pad2 = (n) => String(n).padStart(2, '0');

  /** An RFC 3339 instant as `YYYY-MM-DD HH:MM:SS` (UTC); '—' when absent. */
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ` +
      `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`;
  }

  /** A time cell: the UTC time, the full instant as its tooltip. */
  function timeEl(iso) {
    return h('time', { datetime: iso || null, title: iso || null, class: 'ts' }, fmtTime(iso));
  }

  /** `12 s ago`, `3 min ago`, `in 2 h` … */
  function relTime(iso) {
    if (!iso) return '';
    const ms = Date.now() - new Date(iso).getTime();
    if (Number.isNaN(ms)) return '';
    const a = Math.abs(ms) / 1000;
    const txt = a < 60 ? `${Math.round(a)} s` : a < 3600 ? `${Math.round(a / 60)} min`
      : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
    return ms >= 0 ? `${txt} ago` : `in ${txt}`;
  }

  const human = (v) => String(v ?? '').replace(/_/g, ' ');

  /** A colored status badge; `kind` picks the palette family (order, sla, task, campaign). */
  function badge(value, kind = 'status', extra) {
    if (value === null || value === undefined || value === '') return h('span', { class: 'muted' }, '—');
    const v = String(value);
    return h('span', {
      class: ['badge', `badge-${kind}`, `is-${v.replace(/[^a-z0-9_-]/gi, '')}`, extra],
      'data-value': v,
    }, human(v));
  }

  /** An order id as a link to its page. */
  const orderLink = (id) => id
    ? h('a', { href: `#/orders/${encodeURIComponent(id)}`, class: 'mono', 'data-testid': 'order-link' }, id)
    : h('span', { class: 'muted' }, '—');
  /** A meter id as a link to its page. */
  const meterLink = (id) => id
    ? h('a', { href: `#/meters/${encodeURIComponent(id)}`, class: 'mono', 'data-testid': 'meter-link' }, id)
    : h('span', { class: 'muted' }, '—');

  /** A path segment for the API (ids with '/', as exception ids, keep their slashes). */
  const seg = (id) => String(id).split('/').map(encodeURIComponent).join('/');

  const dash = (v) => (v === null || v === undefined || v === '' ? '—' : v);

  // ---------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /**
   * Calls the operator API. Resolves with the JSON body; rejects with an ApiError carrying the
   * server's `error` message verbatim. A 401 while signed in signs out.
   */
  async function api(method, path, body, opts = {}) {
    const headers = { Accept: 'application/json', Authorization: `Bearer ${opts.token ?? token}` };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, `switchyard did not answer (${e.message}): check the network and try again`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      let msg = data && typeof data.error === 'string' ? data.error
        : `HTTP ${res.status} ${res.statusText}${text ? `: ${text.slice(0, 300)}` : ''}`;
      if (res.status === 429 && res.headers.get('Retry-After') && !/try again/i.test(msg)) {
        msg += ` (retry after ${res.headers.get('Retry-After')} s)`;
      }
      if (res.status === 401 && !opts.signin && me) {
        signOut(`Signed out: ${msg}`);
      }
      throw new ApiError(res.status, msg);
    }
    return data;
  }

  // ---------------------------------------------------------------------------------------
  // Messages (the bar above each view: #msg-error, #msg-ok)

  function showError(text, source = 'action') {
    const el = $('#msg-error');
    el.textContent = text;
    el.hidden = false;
    errorSource = source;
    if (source === 'action') $('#msg-ok').hidden = true;
  }

  function showOk(...children) {
    const el = $('#msg-ok');
    fill(el, children);
    el.hidden = false;
    if (errorSource === 'action') clearError();
  }

  function clearError() {
    $('#msg-error').hidden = true;
    $('#msg-error').textContent = '';
    errorSource = null;
  }

  function clearMessages() {
    clearError();
    $('#msg-ok').hidden = true;
    $('#msg-ok').replaceChildren();
  }

  /** A failed refresh: shown, and cleared by the next good one (an action's error stays). */
  function pollFailed(what, e) {
    if (errorSource !== 'action') showError(`${what}: ${e.message}`, 'poll');
  }

  function pollOk() {
    if (errorSource === 'poll') clearError();
  }

  // ---------------------------------------------------------------------------------------
  // Refreshing: `poll` runs `fn` now, then again `every()` ms after each run, while the view
  // that started it is still shown (never two runs at once). `.now()` runs it again at once
  // (after an action), or right after the run under way.

  function poll(fn, every) {
    const g = gen;
    let timer = null;
    let running = false;
    let again = false;
    const tick = async () => {
      timer = null;
      if (g !== gen) return;
      if (running) { again = true; return; }
      // A hidden tab does not poll (the token's request rate is shared by its tabs).
      if (document.hidden) { timer = setTimeout(tick, 1_000); return; }
      running = true;
      try {
        await fn();
      } catch (e) {
        if (g === gen) console.warn('refresh failed', e); // eslint-disable-line no-console
      }
      running = false;
      if (g !== gen) return;
      if (again) { again = false; tick(); return; }
      timer = setTimeout(tick, typeof every === 'function' ? every() : every);
    };
    tick();
    return {
      now() {
        if (timer) { clearTimeout(timer); timer = null; }
        tick();
      },
    };
  }

  /** Whether the view that started some async work is still the one shown. */
  const current = (g) => g === gen;

  function stamp(el) {
    if (el) el.textContent = `updated ${fmtTime(new Date().toISOString()).slice(11)} UTC`;
  }

  /** Runs an action on a button: disabled while it runs. */
  async function busy(buttons, fn) {
    const list = (Array.isArray(buttons) ? buttons : [buttons]).filter(Boolean);
    list.forEach((b) => { b.disabled = true; b.classList.add('is-busy'); });
    try {
      return await fn();
    } finally {
      list.forEach((b) => { b.disabled = false; b.classList.remove('is-busy'); });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Sign-in / sign-out

  function showSignin(message) {
    $('#main').hidden = true;
    $('#nav').hidden = true;
    $('#user').hidden = true;
    $('#signin').hidden = false;
    const err = $('#signin-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('#footer-status').textContent = `${location.host} · not signed in`;
    setTimeout(() => $('#signin-token').focus(), 0);
  }

  function showApp() {
    $('#signin').hidden = true;
    $('#main').hidden = false;
    $('#nav').hidden = false;
    $('#user').hidden = false;
    $('#whoami').textContent = `${me.name} (${me.role ?? 'no role'})`;
    $('#user').dataset.role = me.role ?? '';
    $('#footer-status').textContent = `${location.host} · signed in as ${me.name}, role ${me.role ?? '—'}`;
  }

  function signOut(message) {
    gen++;
    token = '';
    me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('#view').replaceChildren();
    clearMessages();
    $('#signin-token').value = '';
    showSignin(message);
  }

  async function signIn(candidate) {
    const who = await api('GET', '/whoami', undefined, { token: candidate, signin: true });
    token = candidate;
    me = who;
    sessionStorage.setItem(TOKEN_KEY, token);
    showApp();
  }

  $('#signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('#signin-token');
    const candidate = input.value.trim();
    if (!candidate) return;
    await busy($('#signin-submit'), async () => {
      try {
        await signIn(candidate);
        input.value = '';
        if (!location.hash || location.hash === '#/signout' || location.hash === '#/') {
          location.hash = '#/overview';
        } else {
          route();
        }
      } catch (e) {
        const err = $('#signin-error');
        err.textContent = e.status === 401 ? `Sign-in refused: ${e.message}` : e.message;
        err.hidden = false;
      }
    });
  });

  // ---------------------------------------------------------------------------------------
  // Router

  /** `#/orders/SO-1?q=x` → {name: 'orders', arg: 'SO-1', params} */
  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, query] = raw.split('?');
    const [name, ...rest] = path.split('/');
    let arg = rest.join('/');
    try { arg = decodeURIComponent(arg); } catch { /* keep as is */ }
    return { name: name || 'overview', arg, params: new URLSearchParams(query || '') };
  }

  const VIEWS = {
    overview: viewOverview,
    approvals: viewApprovals,
    exceptions: viewExceptions,
    campaigns: viewCampaigns,
    orders: viewOrders,
    meters: viewMeters,
  };

  function route() {
    const r = parseHash();
    if (r.name === 'signout') {
      signOut('Signed out.');
      history.replaceState(null, '', '#/overview');
      return;
    }
    if (!me) return;
    const view = VIEWS[r.name];
    if (!view) {
      location.hash = '#/overview';
      return;
    }
    gen++;
    clearMessages();
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.route === r.name);
      if (a.dataset.route === r.name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const root = $('#view');
    root.replaceChildren();
    root.dataset.view = r.name;
    document.title = `${r.name[0].toUpperCase()}${r.name.slice(1)} · switchyard`;
    view(root, r);
  }

  window.addEventListener('hashchange', route);

  /** The header of a view: a title, a subtitle, and things on the right. */
  function viewHeader(title, sub, ...right) {
    return h('div', { class: 'view-head' },
      h('div', {}, h('h1', { text: title }), sub ? h('p', { class: 'muted sub' }, sub) : null),
      h('div', { class: 'view-tools' }, right));
  }

  // ---------------------------------------------------------------------------------------
  // Overview: KPI tiles

  function viewOverview(root) {
    const updated = h('span', { class: 'muted small', id: 'overview-updated' });
    const tiles = h('div', { id: 'kpi-tiles', class: 'kpi-groups', 'data-testid': 'kpi-tiles' },
      h('p', { class: 'muted' }, 'Loading…'));
    root.append(h('section', { id: 'view-overview' },
      viewHeader('Overview', 'The desk at a glance: counted from the store for the whole fleet, refreshed every 10 s.', updated),
      tiles));

    const g = gen;
    poll(async () => {
      let k;
      try {
        k = await api('GET', '/kpis');
      } catch (e) {
        if (current(g)) pollFailed('Could not load the KPIs', e);
        return;
      }
      if (!current(g)) return;
      pollOk();
      renderKpis(tiles, k);
      stamp(updated);
    }, 10_000);
  }

  /** One tile: a label, a big number, an optional link and tone. */
  function tile(key, label, value, { href, tone, note } = {}) {
    const inner = [
      h('span', { class: 'tile-label' }, label),
      h('span', { class: 'tile-value', 'data-testid': 'kpi-value' }, value === null || value === undefined ? '—' : String(value)),
      note ? h('span', { class: 'tile-note muted' }, note) : null,
    ];
    const attrs = { class: ['tile', tone ? `tone-${tone}` : null], 'data-testid': 'kpi-tile', 'data-kpi': key };
    return href ? h('a', { ...attrs, href }, inner) : h('div', attrs, inner);
  }

  function group(title, note, ...tiles) {
    return h('section', { class: 'kpi-group' },
      h('h2', {}, title, note ? h('span', { class: 'muted small' }, ` ${note}`) : null),
      h('div', { class: 'tiles' }, tiles));
  }

  const partial = (complete) => (complete === false ? '(partial count)' : null);

  function renderKpis(el, k) {
    const today = k.today || {};
    const tb = today.by_status || {};
    const open = k.open || {};
    const ob = open.by_status || {};
    const sla = open.sla || {};
    const openTotal = Object.values(ob).reduce((a, b) => a + b, 0);
    const ex = k.exceptions || {};
    const exb = ex.by_state || {};
    const camp = k.campaigns || {};
    const byStatus = (st) => `#/orders?status=${st}`;

    fill(el,
      h('p', { class: 'muted small business-time' },
        `Business time ${fmtTime(k.business_time)} UTC · today since ${fmtTime(today.since)} UTC`),
      group('Orders today', partial(today.complete),
        tile('today-received', 'Received', today.received ?? 0),
        tile('today-completed', 'Completed', tb.completed ?? 0, { tone: 'good', href: byStatus('completed') }),
        tile('today-failed', 'Failed', tb.failed ?? 0, { tone: (tb.failed ? 'bad' : null), href: byStatus('failed') }),
        tile('today-cancelled', 'Cancelled', tb.cancelled ?? 0, { href: byStatus('cancelled') }),
        tile('today-rejected', 'Rejected', tb.rejected ?? 0, { tone: (tb.rejected ? 'warn' : null), href: byStatus('rejected') }),
        tile('today-open', 'Still open', tb.open ?? 0, { href: byStatus(OPEN_STATUSES.join(',')) }),
        // Any other final status the server counts.
        Object.keys(tb).filter((x) => !['completed', 'failed', 'cancelled', 'rejected', 'open'].includes(x))
          .map((x) => tile(`today-${x}`, human(x), tb[x]))),
      group('Open work', partial(open.complete),
        tile('open-total', 'Open orders', openTotal, { href: byStatus(OPEN_STATUSES.join(',')) }),
        tile('open-awaiting-approval', 'Awaiting approval', ob.awaiting_approval ?? 0,
          { tone: ob.awaiting_approval ? 'warn' : null, href: '#/approvals' }),
        tile('open-in-flight', 'In flight', open.in_flight ?? 0, { tone: 'info', href: byStatus('dispatched,confirmed') }),
        tile('open-held', 'Held by operator', open.held_by_operator ?? 0, { tone: open.held_by_operator ? 'warn' : null }),
        tile('open-deferred', 'Deferred by policy', ob.deferred ?? 0, { href: byStatus('deferred') }),
        tile('open-retry', 'Retry scheduled', ob.retry_scheduled ?? 0, { href: byStatus('retry_scheduled') }),
        tile('open-waiting', 'Received / scheduled', (ob.received ?? 0) + (ob.scheduled ?? 0),
          { href: byStatus('received,scheduled') })),
      group('Service levels (open orders)', null,
        tile('sla-on-track', 'On track', sla.on_track ?? 0, { tone: 'good' }),
        tile('sla-at-risk', 'At risk', sla.at_risk ?? 0, { tone: sla.at_risk ? 'warn' : null }),
        tile('sla-breaches', 'SLA breaches', k.sla_breaches ?? 0, { tone: k.sla_breaches ? 'bad' : 'good' })),
      group('Exceptions', partial(ex.complete),
        tile('exceptions-open', 'Open exceptions', ex.open ?? 0,
          { tone: ex.open ? 'bad' : 'good', href: '#/exceptions', note: 'open + in progress' }),
        tile('exceptions-new', 'Not started', exb.open ?? 0, { href: '#/exceptions?state=open' }),
        tile('exceptions-in-progress', 'In progress', exb.in_progress ?? 0, { href: '#/exceptions?state=in_progress' }),
        tile('exceptions-resolved', 'Resolved', exb.resolved ?? 0, { href: '#/exceptions?state=resolved' })),
      group('Campaigns', null,
        ['active', 'paused', 'finished', 'cancelled', 'expired']
          .concat(Object.keys(camp).filter((x) => !['active', 'paused', 'finished', 'cancelled', 'expired'].includes(x)))
          .map((st) => tile(`campaigns-${st}`, human(st), camp[st] ?? 0, {
            href: '#/campaigns',
            tone: st === 'active' && camp[st] ? 'good' : st === 'paused' && camp[st] ? 'warn' : null,
          }))));
  }

  // ---------------------------------------------------------------------------------------
  // Approvals

  function viewApprovals(root) {
    const count = h('span', { class: 'count-pill', id: 'approvals-count' }, '…');
    const refresh = h('button', { class: 'btn', id: 'approvals-refresh', type: 'button' }, 'Refresh');
    const body = h('tbody');
    const table = h('table', { class: 'grid', id: 'approvals-table', 'data-testid': 'approvals-table' },
      h('thead', {}, h('tr', {},
        ['Order', 'Meter', 'Kind · reason', 'Pri', 'Protections', 'Held by rule', 'Created', 'Note', 'Decision']
          .map((c) => h('th', { text: c })))),
      body);
    const empty = h('p', { class: 'empty', id: 'approvals-empty', hidden: true }, 'Nothing is waiting for approval.');
    const truncated = h('p', { class: 'muted small', id: 'approvals-truncated', hidden: true },
      'The queue is longer than the list: decide these first, the next ones follow.');
    root.append(h('section', { id: 'view-approvals' },
      viewHeader('Approvals', 'Orders held until a supervisor decides (protected customers, VIP, disputes). Most urgent first.', count, refresh),
      h('div', { class: 'table-wrap' }, table), empty, truncated));

    const g = gen;
    async function load() {
      let r;
      try {
        r = await api('GET', '/approvals');
      } catch (e) {
        if (current(g)) pollFailed('Could not load the approval queue', e);
        return;
      }
      if (!current(g)) return;
      pollOk();
      const list = r.approvals || [];
      count.textContent = String(list.length);
      // Keep notes typed into rows that are still there.
      const notes = {};
      for (const input of body.querySelectorAll('input[data-testid=approval-note]')) notes[input.dataset.orderId] = input.value;
      fill(body, list.map((a) => approvalRow(a, notes[a.order_id] || '', load)));
      empty.hidden = list.length > 0;
      table.hidden = list.length === 0;
      truncated.hidden = !r.truncated;
    }
    refresh.addEventListener('click', () => busy(refresh, load));
    poll(load, 15_000);
  }

  function approvalRow(a, note, reload) {
    const noteInput = h('input', {
      type: 'text', class: 'input input-note', maxlength: 250, placeholder: 'note (optional)',
      'data-testid': 'approval-note', 'data-order-id': a.order_id, 'aria-label': `Note for ${a.order_id}`, value: note,
    });
    const approve = h('button', { type: 'button', class: 'btn btn-good', 'data-testid': 'approve' }, 'Approve');
    const reject = h('button', { type: 'button', class: 'btn btn-bad', 'data-testid': 'reject' }, 'Reject');
    const decide = (decision) => busy([approve, reject], async () => {
      const body = { decision };
      if (noteInput.value.trim()) body.note = noteInput.value.trim();
      try {
        const r = await api('POST', `/approvals/${seg(a.order_id)}`, body);
        const verb = decision === 'approve' ? 'Approved' : 'Rejected';
        showOk(h('span', { 'data-testid': 'approval-confirmation', 'data-order-id': r.order_id || a.order_id },
          `${verb} order `, h('strong', { class: 'mono' }, r.order_id || a.order_id),
          ` on meter ${r.meter_id || a.meter_id} (by ${r.by || me.name}`,
          r.fact_id ? `, fact ${r.fact_id}` : '', r.status ? `: ${r.status}` : '', '). ',
          h('a', { href: `#/orders/${encodeURIComponent(r.order_id || a.order_id)}`, id: 'confirm-order-link', 'data-testid': 'confirm-order-link' },
            `Follow order ${r.order_id || a.order_id} →`)));
        noteInput.value = '';
        await reload();
      } catch (e) {
        showError(`Could not ${decision} ${a.order_id}: ${e.message}`);
      }
    });
    approve.addEventListener('click', () => decide('approve'));
    reject.addEventListener('click', () => decide('reject'));
    const held = a.held || {};
    return h('tr', { 'data-order-id': a.order_id, 'data-testid': 'approval-row' },
      h('td', {}, orderLink(a.order_id)),
      h('td', {}, meterLink(a.meter_id)),
      h('td', {}, human(a.kind), h('span', { class: 'muted' }, ` · ${human(a.reason)}`)),
      h('td', { class: 'num' }, dash(a.priority)),
      h('td', { 'data-testid': 'protections' },
        (a.protections || []).length ? a.protections.map((p) => badge(p, 'protection')) : h('span', { class: 'muted' }, 'none')),
      h('td', { 'data-testid': 'rules' }, (held.rules || []).map((r) => h('code', { class: 'rule' }, r)),
        held.status && held.status !== 'awaiting_approval' ? [' ', badge(held.status, 'order')] : null),
      h('td', {}, a.created_at ? timeEl(a.created_at) : h('span', { class: 'muted' }, '—')),
      h('td', {}, noteInput),
      h('td', { class: 'actions' }, approve, reject));
  }

  // ---------------------------------------------------------------------------------------
  // Exceptions

  const TASK_FILTERS = [
    ['open,in_progress', 'Open and in progress'],
    ['open', 'Open (not started)'],
    ['in_progress', 'In progress'],
    ['resolved', 'Resolved'],
    ['open,in_progress,resolved', 'All'],
  ];

  function viewExceptions(root, r) {
    const state = r.params.get('state') || 'open,in_progress';
    const select = h('select', { id: 'exceptions-state', class: 'input', 'data-testid': 'exceptions-state', 'aria-label': 'Task state' },
      TASK_FILTERS.map(([v, label]) => h('option', { value: v, selected: v === state }, label)),
      TASK_FILTERS.some(([v]) => v === state) ? null : h('option', { value: state, selected: true }, state));
    select.addEventListener('change', () => { location.hash = `#/exceptions?state=${encodeURIComponent(select.value)}`; });
    const mine = h('label', { class: 'check' }, h('input', { type: 'checkbox', id: 'exceptions-mine' }), ' assigned to me');
    const count = h('span', { class: 'count-pill', id: 'exceptions-count' }, '…');
    const refresh = h('button', { class: 'btn', id: 'exceptions-refresh', type: 'button' }, 'Refresh');
    const body = h('tbody');
    const table = h('table', { class: 'grid', id: 'exceptions-table', 'data-testid': 'exceptions-table' },
      h('thead', {}, h('tr', {},
        ['Exception', 'Meter', 'Order', 'Detail', 'Raised', 'Pri', 'State', 'Assignee', 'Notes', 'Actions']
          .map((c) => h('th', { text: c })))),
      body);
    const empty = h('p', { class: 'empty', id: 'exceptions-empty', hidden: true }, 'No exception tasks in this state.');
    const more = h('button', { class: 'btn', id: 'exceptions-more', type: 'button', hidden: true }, 'Load more');
    const scanNote = h('p', { class: 'muted small', id: 'exceptions-scan' });
    root.append(h('section', { id: 'view-exceptions' },
      viewHeader('Exceptions', 'What switchyard could not do by itself: take a task, work it, resolve it.', select, mine, count, refresh),
      h('div', { class: 'table-wrap' }, table), empty, h('div', { class: 'below' }, more, scanNote)));

    const g = gen;
    let rows = [];
    let nextToken = null;
    const query = (pageToken) => {
      const p = new URLSearchParams({ state, limit: '100' });
      if ($('#exceptions-mine').checked && me) p.set('assignee', me.name);
      if (pageToken) p.set('page_token', pageToken);
      return `/exceptions?${p}`;
    };
    async function load(append = false) {
      let res;
      try {
        res = await api('GET', query(append ? nextToken : null));
      } catch (e) {
        if (current(g)) pollFailed('Could not load the exception tasks', e);
        return;
      }
      if (!current(g)) return;
      pollOk();
      rows = append ? rows.concat(res.exceptions || []) : (res.exceptions || []);
      nextToken = res.next_page_token || null;
      render();
      more.hidden = !nextToken;
      scanNote.textContent = `${res.scanned ?? '?'} exceptions read${res.scan_complete === false ? ' (more remain: load more)' : ''}.`;
    }
    function render() {
      const notes = {};
      for (const input of body.querySelectorAll('input[data-testid=exception-note]')) notes[input.dataset.exceptionId] = input.value;
      fill(body, rows.map((x) => exceptionRow(x, notes[x.exception_id] || '', load)));
      count.textContent = String(rows.length);
      empty.hidden = rows.length > 0;
      table.hidden = rows.length === 0;
    }
    more.addEventListener('click', () => busy(more, () => load(true)));
    refresh.addEventListener('click', () => busy(refresh, () => load()));
    $('#exceptions-mine').addEventListener('change', () => load());
    poll(() => load(), 15_000);
  }

  function exceptionRow(x, note, reload) {
    const change = (btns, what, body) => busy(btns, async () => {
      try {
        const t = await api('POST', `/exceptions/${seg(x.exception_id)}`, { ...body, version: x.version });
        showOk(h('span', { 'data-testid': 'exception-confirmation' },
          `${what}: ${t.exception_id} is ${human(t.state)}`, t.assignee ? `, assigned to ${t.assignee}` : ', unassigned',
          ` (version ${t.version}).`));
        await reload();
      } catch (e) {
        showError(`Could not change ${x.exception_id}: ${e.message}`);
        if (e.status === 409) await reload();
      }
    });
    const assign = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'assign-me' },
      x.assignee === me?.name ? 'Unassign' : 'Assign to me');
    const start = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'start', disabled: x.state === 'in_progress' }, 'Start');
    const resolve = h('button', { type: 'button', class: 'btn btn-small btn-good', 'data-testid': 'resolve', disabled: x.state === 'resolved' }, 'Resolve');
    const reopen = x.state === 'resolved'
      ? h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'reopen' }, 'Reopen') : null;
    const noteInput = h('input', {
      type: 'text', class: 'input input-note', maxlength: 1000, placeholder: 'note',
      'data-testid': 'exception-note', 'data-exception-id': x.exception_id, 'aria-label': `Note for ${x.exception_id}`, value: note,
    });
    const addNote = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'add-note' }, 'Add note');
    const all = [assign, start, resolve, reopen, addNote];
    assign.addEventListener('click', () => change(all, x.assignee === me?.name ? 'Unassigned' : 'Assigned',
      { assignee: x.assignee === me?.name ? '' : me.name }));
    start.addEventListener('click', () => change(all, 'Started', { state: 'in_progress' }));
    resolve.addEventListener('click', () => change(all, 'Resolved', { state: 'resolved' }));
    if (reopen) reopen.addEventListener('click', () => change(all, 'Reopened', { state: 'open' }));
    addNote.addEventListener('click', () => {
      const text = noteInput.value.trim();
      if (!text) { showError('Write a note first.'); noteInput.focus(); return; }
      change(all, 'Note added', { note: text });
    });
    noteInput.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') addNote.click(); });
    const notes = x.notes || [];
    const last = notes[notes.length - 1];
    return h('tr', { 'data-exception-id': x.exception_id, 'data-testid': 'exception-row', 'data-version': x.version },
      h('td', {}, h('div', { class: 'mono' }, x.exception_id), badge(x.kind, 'kind')),
      h('td', {}, meterLink(x.meter_id)),
      h('td', {}, orderLink(x.order_id)),
      h('td', { class: 'detail' }, dash(x.detail), x.command_id ? h('div', { class: 'muted small mono' }, `command ${x.command_id}`) : null),
      h('td', {}, timeEl(x.raised_at)),
      h('td', { class: 'num' }, dash(x.priority)),
      h('td', { 'data-testid': 'state' }, badge(x.state, 'task')),
      h('td', { 'data-testid': 'assignee' }, x.assignee ? h('span', { class: 'assignee' }, x.assignee) : h('span', { class: 'muted' }, 'unassigned')),
      h('td', { class: 'notes', 'data-testid': 'notes' },
        notes.length ? [h('div', { class: 'note-last' }, h('strong', {}, `${last.by}: `), last.text),
          h('div', { class: 'muted small', title: notes.map((n) => `${fmtTime(n.at)} ${n.by}: ${n.text}`).join('\n') },
            `${notes.length} note${notes.length > 1 ? 's' : ''} · ${fmtTime(last.at)}`)]
          : h('span', { class: 'muted' }, '—'),
        x.updated_by ? h('div', { class: 'muted small' }, `changed by ${x.updated_by} ${relTime(x.updated_at)}`) : null),
      h('td', { class: 'actions actions-wrap' },
        h('div', { class: 'btn-row' }, assign, start, resolve, reopen),
        h('div', { class: 'btn-row' }, noteInput, addNote)));
  }

  // ---------------------------------------------------------------------------------------
  // Campaigns

  function viewCampaigns(root, r) {
    const selected = r.arg || null;
    const updated = h('span', { class: 'muted small', id: 'campaigns-updated' });
    const body = h('tbody');
    const table = h('table', { class: 'grid grid-click', id: 'campaigns-table', 'data-testid': 'campaigns-table' },
      h('thead', {}, h('tr', {},
        ['Campaign', 'Status', 'Rate / h', 'Released / total', 'Progress', 'Last release', 'Zones', 'Window']
          .map((c) => h('th', { text: c })))),
      body);
    const empty = h('p', { class: 'empty', hidden: true, id: 'campaigns-empty' }, 'No campaigns are defined.');
    const detail = h('div', { id: 'campaign-detail', class: 'panel', hidden: !selected });
    root.append(h('section', { id: 'view-campaigns' },
      viewHeader('Campaigns', 'Bulk disconnect campaigns released at a steady rate. Select one for its release chart.', updated),
      h('div', { class: 'table-wrap' }, table), empty, detail));

    const g = gen;
    /** Orders per campaign (the list does not say): {id: {total, at}} from GET /campaigns/{id}. */
    const totals = {};
    let fastUntil = 0; // poll every second for a while after a pause / resume
    let detailParts = null;

    async function load() {
      let list;
      try {
        list = (await api('GET', '/campaigns')).campaigns || [];
      } catch (e) {
        if (current(g)) pollFailed('Could not load the campaigns', e);
        return;
      }
      if (!current(g)) return;
      // The selected one in full (its releases), and a few totals the list lacks.
      let shown = null;
      if (selected) {
        try {
          shown = await api('GET', `/campaigns/${seg(selected)}`);
          totals[selected] = { total: shown.orders_total, at: Date.now() };
        } catch (e) {
          if (current(g)) pollFailed(`Could not load campaign ${selected}`, e);
          return;
        }
      }
      const stale = list.filter((c) => !totals[c.campaign_id] || Date.now() - totals[c.campaign_id].at > 60_000).slice(0, 3);
      for (const c of stale) {
        try {
          const d = await api('GET', `/campaigns/${seg(c.campaign_id)}`);
          totals[c.campaign_id] = { total: d.orders_total, at: Date.now() };
        } catch { /* the list still shows */ }
      }
      if (!current(g)) return;
      pollOk();
      fill(body, list.map((c) => campaignRow(c, totals[c.campaign_id]?.total, c.campaign_id === selected)));
      empty.hidden = list.length > 0;
      table.hidden = list.length === 0;
      if (shown) {
        if (!detailParts) detailParts = campaignDetail(detail, selected, () => { fastUntil = Date.now() + 20_000; poller.now(); });
        renderCampaign(detailParts, shown);
        detail.hidden = false;
      }
      stamp(updated);
    }
    const poller = poll(load, () => (Date.now() < fastUntil ? 1_000 : 5_000));
  }

  function campaignRow(c, total, isSelected) {
    const go = () => { location.hash = `#/campaigns/${encodeURIComponent(c.campaign_id)}`; };
    const prog = h('progress', { max: total || 1, value: Math.min(c.released || 0, total || 0), class: 'progress' });
    return h('tr', {
      'data-campaign-id': c.campaign_id, 'data-testid': 'campaign-row', class: isSelected ? 'selected' : null,
      tabindex: 0, on: { click: go, keydown: (ev) => { if (ev.key === 'Enter') go(); } },
    },
      h('td', {}, h('a', { href: `#/campaigns/${encodeURIComponent(c.campaign_id)}`, class: 'mono' }, c.campaign_id),
        h('div', { class: 'small' }, dash(c.name))),
      h('td', { 'data-testid': 'status' }, badge(c.status, 'campaign')),
      h('td', { class: 'num' }, dash(c.rate_per_hour)),
      h('td', { class: 'num', 'data-testid': 'released' }, `${c.released ?? 0} / ${total ?? '…'}`),
      h('td', {}, prog),
      h('td', {}, c.last_release_at ? [timeEl(c.last_release_at), h('div', { class: 'muted small' }, relTime(c.last_release_at))] : '—'),
      h('td', {}, (c.zones || []).length ? c.zones.join(', ') : h('span', { class: 'muted' }, 'all')),
      h('td', { class: 'small' }, `${fmtTime(c.start_at)} → ${c.end_by ? fmtTime(c.end_by) : 'open-ended'}`));
  }

  /** Builds the detail panel of a campaign once; returns the parts refreshed later. */
  function campaignDetail(el, id, afterAction) {
    const title = h('h2', {}, id);
    const status = h('span', { id: 'campaign-status', 'data-testid': 'campaign-status' });
    const pause = h('button', { type: 'button', class: 'btn btn-warn', id: 'campaign-pause', 'data-testid': 'campaign-pause' }, 'Pause');
    const resume = h('button', { type: 'button', class: 'btn btn-good', id: 'campaign-resume', 'data-testid': 'campaign-resume' }, 'Resume');
    const stats = h('dl', { class: 'facts', id: 'campaign-facts' });
    const chart = h('div', { class: 'chart-wrap', id: 'campaign-chart-wrap' });
    const recent = h('tbody');
    const act = (btn, action) => busy([pause, resume], async () => {
      try {
        const r = await api('POST', `/campaigns/${seg(id)}/${action}`);
        showOk(h('span', { 'data-testid': 'campaign-confirmation' },
          `${action === 'pause' ? 'Pause' : 'Resume'} of ${id} sent (by ${r?.by || me.name}): `,
          r?.status || 'accepted', '. The status below follows.'));
        afterAction();
      } catch (e) {
        showError(`Could not ${action} ${id}: ${e.message}`);
      }
    });
    pause.addEventListener('click', () => act(pause, 'pause'));
    resume.addEventListener('click', () => act(resume, 'resume'));
    fill(el,
      h('div', { class: 'panel-head' }, h('div', { class: 'panel-title' }, title, status),
        h('div', { class: 'view-tools' }, pause, resume)),
      h('div', { class: 'campaign-body' },
        h('div', {}, h('h3', {}, 'Campaign'), stats),
        h('div', {}, h('h3', {}, 'Cumulative releases'), chart)),
      h('details', { class: 'recent' }, h('summary', {}, 'Latest releases'),
        h('table', { class: 'grid grid-compact', id: 'campaign-releases' },
          h('thead', {}, h('tr', {}, ['Released', 'Order', 'Meter', 'Zone'].map((c) => h('th', { text: c })))), recent)));
    return { title, status, pause, resume, stats, chart, recent };
  }

  function renderCampaign(p, d) {
    const c = d.campaign;
    fill(p.title, h('span', { class: 'mono' }, c.campaign_id), ' ', h('span', { class: 'muted' }, dash(c.name)));
    fill(p.status, badge(c.status, 'campaign'));
    p.status.dataset.status = c.status;
    p.pause.hidden = c.status !== 'active';
    p.resume.hidden = c.status !== 'paused';
    const releases = d.releases || [];
    fill(p.stats,
      fact('Status', human(c.status)), fact('Rate', `${c.rate_per_hour} / h`),
      fact('Released', `${c.released} of ${d.orders_total}`),
      fact('Last release', c.last_release_at ? `${fmtTime(c.last_release_at)} (${relTime(c.last_release_at)})` : '—'),
      fact('Zones', (c.zones || []).length ? c.zones.join(', ') : 'all'),
      fact('Window', `${fmtTime(c.start_at)} → ${c.end_by ? fmtTime(c.end_by) : 'open-ended'}`),
      fact('Updated', fmtTime(c.updated_at)));
    fill(p.chart, releaseChart(releases, d.orders_total, c.rate_per_hour, c.status));
    const last = (d.orders || []).filter((o) => o.released_at)
      .sort((a, b) => (a.released_at < b.released_at ? 1 : -1)).slice(0, 15);
    fill(p.recent, last.map((o) => h('tr', {},
      h('td', {}, timeEl(o.released_at)), h('td', {}, orderLink(o.order_id)), h('td', {}, meterLink(o.meter_id)), h('td', {}, dash(o.zone)))));
  }

  function fact(label, value, attrs) {
    return [h('dt', {}, label), h('dd', attrs || {}, value)];
  }

  /**
   * The release chart: cumulative releases over time as a step line, one dot per release, the
   * campaign's total as a dashed line and the pace its rate allows as a dotted one.
   */
  function releaseChart(releases, total, rate, status) {
    const W = 880; const H = 260;
    const m = { l: 48, r: 90, t: 14, b: 34 };
    const iw = W - m.l - m.r; const ih = H - m.t - m.b;
    const times = releases.map((t) => Date.parse(t)).filter((t) => !Number.isNaN(t)).sort((a, b) => a - b);
    const n = times.length;
    const svg = s('svg', {
      id: 'campaign-chart', 'data-testid': 'campaign-chart', class: 'chart', viewBox: `0 0 ${W} ${H}`,
      width: '100%', height: H, role: 'img', preserveAspectRatio: 'xMinYMin meet',
      'aria-label': `${n} releases of ${total} orders`, 'data-releases': n,
    });
    const now = Date.now();
    const t0 = n ? times[0] : now - 3_600_000;
    let t1 = Math.max(now, n ? times[n - 1] : now);
    if (t1 - t0 < 120_000) t1 = t0 + 120_000;
    const yMax = Math.max(total || 0, n, 1);
    const x = (t) => m.l + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => m.t + ih - (v / yMax) * ih;

    // Grid and axes.
    const g = s('g', { class: 'chart-grid' });
    const yStep = niceStep(yMax / 5);
    for (let v = 0; v <= yMax + 1e-9; v += yStep) {
      g.append(s('line', { x1: m.l, x2: m.l + iw, y1: y(v), y2: y(v), class: 'grid-line' }),
        s('text', { x: m.l - 8, y: y(v) + 4, 'text-anchor': 'end', class: 'axis-label' }, String(Math.round(v))));
    }
    const span = t1 - t0;
    const fmtTick = (t) => {
      const d = new Date(t);
      const hm = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
      return span < 600_000 ? `${hm}:${pad2(d.getUTCSeconds())}` : span > 2 * 86_400_000
        ? `${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${hm}` : hm;
    };
    for (let i = 0; i <= 5; i++) {
      const t = t0 + (span * i) / 5;
      g.append(s('line', { x1: x(t), x2: x(t), y1: m.t, y2: m.t + ih, class: 'grid-line grid-line-v' }),
        s('text', { x: x(t), y: m.t + ih + 18, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle', class: 'axis-label' }, fmtTick(t)));
    }
    g.append(s('line', { x1: m.l, x2: m.l + iw, y1: m.t + ih, y2: m.t + ih, class: 'axis' }),
      s('line', { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ih, class: 'axis' }),
      s('text', { x: m.l + iw, y: H - 2, 'text-anchor': 'end', class: 'axis-title' }, 'time (UTC)'));
    svg.append(g);

    // The total, and the pace the rate allows from the first release.
    if (total) {
      svg.append(s('line', { x1: m.l, x2: m.l + iw, y1: y(total), y2: y(total), class: 'total-line' }),
        s('text', { x: m.l + iw + 6, y: y(total) + 4, class: 'series-label' }, `total ${total}`));
    }
    let paceLabelY = null;
    if (n && rate) {
      const tEnd = Math.min(t1, t0 + ((yMax - 1) / rate) * 3_600_000);
      const vEnd = Math.min(yMax, 1 + ((tEnd - t0) / 3_600_000) * rate);
      svg.append(s('line', { x1: x(t0), y1: y(1), x2: x(tEnd), y2: y(vEnd), class: 'pace-line' }),
        (paceLabelY = s('text', { x: Math.min(x(tEnd) + 6, m.l + iw + 6), y: y(vEnd) + (vEnd >= yMax - 0.5 ? 14 : 4), class: 'series-label pace-label' }, `${rate}/h pace`)));
    }

    if (!n) {
      svg.append(s('text', { x: m.l + iw / 2, y: m.t + ih / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No releases yet'));
      return svg;
    }
    // Step line of the releases so far, flat up to now.
    let d = `M${x(t0).toFixed(1)},${y(0).toFixed(1)}`;
    times.forEach((t, i) => { d += ` H${x(t).toFixed(1)} V${y(i + 1).toFixed(1)}`; });
    d += ` H${x(Math.max(now, times[n - 1])).toFixed(1)}`;
    svg.append(s('path', { d, class: `release-line status-${status}`, 'data-testid': 'release-line' }));
    if (n <= 400) {
      const dots = s('g', { class: `release-points status-${status}` });
      times.forEach((t, i) => dots.append(s('circle', { cx: x(t), cy: y(i + 1), r: 3, class: 'release-point' },
        s('title', {}, `#${i + 1} at ${fmtTime(new Date(t).toISOString())} UTC`))));
      svg.append(dots);
    }
    const relY = y(n) + 4;
    svg.append(s('text', { x: m.l + iw + 6, y: relY, class: 'series-label released-label' }, `released ${n}`));
    // Keep the pace label clear of the released one.
    if (paceLabelY && Math.abs(Number(paceLabelY.getAttribute('y')) - relY) < 13) {
      paceLabelY.setAttribute('y', String(relY + (Number(paceLabelY.getAttribute('y')) < relY || relY + 14 > H - m.b ? -14 : 14)));
    }
    return svg;
  }

  /** 1, 2, 5, 10, 20, 50… at least `raw`. */
  function niceStep(raw) {
    if (raw <= 1) return 1;
    const p = 10 ** Math.floor(Math.log10(raw));
    const f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  // ---------------------------------------------------------------------------------------
  // Orders: search, and one order's page

  function viewOrders(root, r) {
    if (r.arg) return viewOrder(root, r.arg);
    const q = r.params.get('q') || '';
    const status = r.params.get('status') || '';
    const qInput = h('input', { type: 'search', id: 'orders-q', class: 'input', 'data-testid': 'orders-q', value: q,
      placeholder: 'order, meter, account or service point id', 'aria-label': 'Search', spellcheck: 'false' });
    const statusSel = h('select', { id: 'orders-status', class: 'input', 'data-testid': 'orders-status', 'aria-label': 'Status' },
      h('option', { value: '' }, 'any status'),
      h('option', { value: OPEN_STATUSES.join(','), selected: status === OPEN_STATUSES.join(',') }, 'open (any)'),
      h('option', { value: FINAL_STATUSES.join(','), selected: status === FINAL_STATUSES.join(',') }, 'final (any)'),
      ORDER_STATUSES.map((st) => h('option', { value: st, selected: st === status }, human(st))),
      status && !ORDER_STATUSES.includes(status) && status !== OPEN_STATUSES.join(',') && status !== FINAL_STATUSES.join(',')
        ? h('option', { value: status, selected: true }, human(status)) : null);
    const go = h('button', { type: 'submit', class: 'btn btn-primary', id: 'orders-search', 'data-testid': 'orders-search' }, 'Search');
    const form = h('form', { class: 'toolbar', id: 'orders-form' }, qInput, statusSel, go);
    const body = h('tbody');
    const table = h('table', { class: 'grid', id: 'orders-table', 'data-testid': 'orders-table', hidden: true },
      h('thead', {}, h('tr', {},
        ['Order', 'Meter', 'Kind · reason', 'Pri', 'Zone', 'Campaign', 'Status', 'SLA', 'Received', 'Ended']
          .map((c) => h('th', { text: c })))),
      body);
    const info = h('p', { class: 'muted small', id: 'orders-info' });
    const more = h('button', { class: 'btn', type: 'button', id: 'orders-more', hidden: true }, 'Load more');
    root.append(h('section', { id: 'view-orders' },
      viewHeader('Orders', 'Search the orders received in the last 30 days (newest first).'),
      form, h('div', { class: 'table-wrap' }, table), h('div', { class: 'below' }, more, info)));

    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if (qInput.value.trim()) p.set('q', qInput.value.trim());
      if (statusSel.value) p.set('status', statusSel.value);
      const next = `#/orders${p.toString() ? `?${p}` : ''}`;
      if (location.hash === next) route(); else location.hash = next;
    });

    const g = gen;
    let rows = [];
    let nextToken = null;
    async function search(append) {
      const p = new URLSearchParams({ limit: '100' });
      if (q) p.set('q', q);
      if (status) p.set('status', status);
      if (append && nextToken) p.set('page_token', nextToken);
      info.textContent = 'Searching…';
      let res;
      try {
        res = await api('GET', `/orders?${p}`);
      } catch (e) {
        if (current(g)) { info.textContent = ''; showError(`Search failed: ${e.message}`); }
        return;
      }
      if (!current(g)) return;
      rows = append ? rows.concat(res.orders || []) : (res.orders || []);
      nextToken = res.next_page_token || null;
      fill(body, rows.map(orderRow));
      table.hidden = rows.length === 0;
      more.hidden = !nextToken;
      info.textContent = `${rows.length} order${rows.length === 1 ? '' : 's'}` +
        `${res.from ? ` received ${fmtTime(res.from)} → ${fmtTime(res.to)} UTC` : ''}` +
        `${nextToken ? ' · more match: load more' : ''}${rows.length === 0 ? ' · nothing matches' : ''}.`;
    }
    more.addEventListener('click', () => busy(more, () => search(true)));
    search(false);
    if (!q) qInput.focus();
  }

  function slaCell(sla) {
    if (!sla) return h('span', { class: 'muted' }, '—');
    return h('span', { class: 'sla', title: sla.due_at ? `due ${sla.due_at}` : null }, badge(sla.state, 'sla'),
      h('span', { class: 'muted small' }, ` ${sla.class ? sla.class.toUpperCase() : ''}${sla.due_at && !['met', 'closed'].includes(sla.state) ? ` · due ${relTime(sla.due_at)}` : ''}`));
  }

  function orderRow(o) {
    return h('tr', { 'data-order-id': o.order_id, 'data-testid': 'order-row' },
      h('td', {}, orderLink(o.order_id)),
      h('td', {}, meterLink(o.meter_id)),
      h('td', {}, human(o.kind), h('span', { class: 'muted' }, ` · ${human(o.reason)}`)),
      h('td', { class: 'num' }, dash(o.priority)),
      h('td', { 'data-testid': 'zone' }, dash(o.zone)),
      h('td', {}, o.campaign_id ? h('a', { href: `#/campaigns/${encodeURIComponent(o.campaign_id)}`, class: 'mono' }, o.campaign_id) : h('span', { class: 'muted' }, '—')),
      h('td', { 'data-testid': 'status' }, badge(o.status, 'order'),
        o.held_by_operator ? [' ', badge('held', 'flag')] : null,
        o.status_reason ? h('div', { class: 'muted small' }, human(o.status_reason)) : null),
      h('td', { 'data-testid': 'sla' }, slaCell(o.sla)),
      h('td', {}, timeEl(o.received_at)),
      h('td', {}, o.ended_at ? timeEl(o.ended_at) : h('span', { class: 'muted' }, '—')));
  }

  /** One order: fields, commands, and its timeline (refreshed every 2 s). */
  function viewOrder(root, id) {
    const status = h('span', { id: 'order-status', 'data-testid': 'order-status' });
    const live = h('span', { class: 'live', id: 'order-live' }, h('span', { class: 'live-dot' }), 'live · every 2 s');
    const updated = h('span', { class: 'muted small', id: 'order-updated' });
    const facts = h('dl', { class: 'facts facts-2', id: 'order-facts', 'data-testid': 'order-facts' });
    const command = h('div', { id: 'order-command', 'data-testid': 'order-command', class: 'command-summary', hidden: true });
    const note = h('input', { type: 'text', id: 'order-note', class: 'input input-note', maxlength: 250, placeholder: 'note (optional)', 'aria-label': 'Note' });
    const hold = h('button', { type: 'button', class: 'btn btn-warn', id: 'order-hold', 'data-testid': 'order-hold' }, 'Hold');
    const release = h('button', { type: 'button', class: 'btn', id: 'order-release', 'data-testid': 'order-release' }, 'Release');
    const cancel = h('button', { type: 'button', class: 'btn btn-bad', id: 'order-cancel', 'data-testid': 'order-cancel' }, 'Cancel order');
    const body = h('tbody');
    const timeline = h('table', { class: 'grid timeline', id: 'order-timeline', 'data-testid': 'order-timeline' },
      h('thead', {}, h('tr', {}, ['Time (UTC)', 'Kind', 'Status', 'Reason', 'Detail'].map((c) => h('th', { text: c })))),
      body);
    const truncated = h('p', { class: 'muted small', id: 'order-audit-truncated', hidden: true },
      'The trail is longer than shown: see the meter page for all of it.');
    root.append(h('section', { id: 'view-order', 'data-order-id': id },
      viewHeader(`Order ${id}`, null, status, live, updated),
      h('p', { class: 'crumbs' }, h('a', { href: '#/orders' }, '← Orders')),
      h('div', { class: 'split' },
        h('div', { class: 'panel' }, h('h2', {}, 'Order'), facts),
        h('div', { class: 'panel' }, h('h2', {}, 'Latest command'), command,
          h('h2', {}, 'Operator commands'),
          h('p', { class: 'muted small' }, 'Hold keeps the order from being carried out until released; cancel ends it. Operator role or above.'),
          h('div', { class: 'btn-row' }, note), h('div', { class: 'btn-row' }, hold, release, cancel))),
      h('h2', {}, 'Audit timeline', h('span', { class: 'muted small' }, ' oldest first')),
      h('div', { class: 'table-wrap' }, timeline), truncated));

    let confirmCancel = false;
    const g = gen;
    const act = (action) => busy([hold, release, cancel], async () => {
      const text = note.value.trim();
      try {
        const r = await api('POST', `/orders/${seg(id)}/${action}`, text ? { note: text } : undefined);
        const verb = { hold: 'Hold', release: 'Release', cancel: 'Cancel' }[action];
        showOk(h('span', { 'data-testid': 'order-confirmation' }, `${verb} of ${id}: `,
          (r && r.status) || 'accepted', '. The timeline shows it once the meter has taken it.'));
        note.value = '';
        poller.now();
      } catch (e) {
        showError(`Could not ${action} ${id}: ${e.message}`);
      }
    });
    hold.addEventListener('click', () => act('hold'));
    release.addEventListener('click', () => act('release'));
    cancel.addEventListener('click', () => {
      if (!confirmCancel) {
        confirmCancel = true;
        cancel.textContent = 'Confirm cancel';
        cancel.classList.add('is-armed');
        setTimeout(() => { confirmCancel = false; cancel.textContent = 'Cancel order'; cancel.classList.remove('is-armed'); }, 5000);
        return;
      }
      confirmCancel = false;
      cancel.textContent = 'Cancel order';
      cancel.classList.remove('is-armed');
      act('cancel');
    });

    const parts = { status, facts, command, body, truncated, hold, release, cancel };
    let searchRow = null;
    let searchAt = 0;
    async function load() {
      let d;
      try {
        d = await api('GET', `/orders/${seg(id)}`);
      } catch (e) {
        if (current(g)) pollFailed(e.status === 404 ? `Order ${id}` : `Could not load order ${id}`, e);
        return;
      }
      // Zone, SLA, campaign and the operator hold are only in the search rows: one look now
      // and then (every 10 s, or when the status moved).
      const st = d.order?.status;
      if (!searchRow || Date.now() - searchAt > 10_000 || searchRow.status !== st) {
        try {
          const res = await api('GET', `/orders?${new URLSearchParams({ q: id, limit: '20' })}`);
          searchRow = (res.orders || []).find((o) => o.order_id === id) || searchRow;
          searchAt = Date.now();
        } catch { /* the page works without it */ }
      }
      if (!current(g)) return;
      pollOk();
      renderOrder(d, searchRow, parts);
      stamp(updated);
    }
    const poller = poll(load, 2_000);
  }

  /** A command result's detail (`{"outcome":"confirmed","switch_state":"disconnected"}`) as text. */
  function describeDetail(a) {
    const raw = a.detail;
    if (raw === null || raw === undefined || raw === '') return null;
    let j = null;
    if (typeof raw === 'string' && raw.trim().startsWith('{')) {
      try { j = JSON.parse(raw); } catch { j = null; }
    } else if (typeof raw === 'object') j = raw;
    if (!j) return h('span', { class: 'detail-text' }, String(raw));
    if (a.kind === 'command_result' || 'outcome' in j) {
      return h('span', { class: 'detail-text', 'data-testid': 'command-result' },
        j.outcome ? badge(j.outcome, 'outcome') : null,
        j.switch_state ? [' switch ', h('strong', { 'data-testid': 'switch-state' }, human(j.switch_state))] : null,
        Object.entries(j).filter(([k]) => k !== 'outcome' && k !== 'switch_state')
          .map(([k, v]) => h('span', { class: 'kv' }, ` · ${human(k)} ${typeof v === 'object' ? JSON.stringify(v) : v}`)));
    }
    if (a.kind === 'decision' || 'verdict' in j) {
      return h('span', { class: 'detail-text' },
        j.verdict ? [h('strong', {}, human(j.verdict)), ' '] : null,
        (j.rules || []).map((r) => h('span', { class: 'kv' }, h('code', { class: 'rule' }, r.rule), r.detail ? ` ${r.detail} ` : ' ')),
        j.pack ? h('span', { class: 'muted small' }, ` (${j.pack})`) : null,
        h('details', { class: 'raw' }, h('summary', {}, 'inputs'), h('pre', {}, JSON.stringify(j.inputs ?? j, null, 2))));
    }
    return h('span', { class: 'detail-text' }, Object.entries(j).map(([k, v]) =>
      h('span', { class: 'kv' }, `${human(k)} ${typeof v === 'object' ? JSON.stringify(v) : v}; `)));
  }

  /** A row of an audit timeline (order or meter page). */
  function auditRow(a, { showOrder } = {}) {
    const result = a.kind === 'command_result';
    return h('tr', { class: ['audit-row', `kind-${a.kind}`], 'data-kind': a.kind, 'data-status': a.status || null, 'data-testid': 'audit-row' },
      h('td', {}, timeEl(a.at)),
      h('td', {}, h('span', { class: ['kind', `kind-${a.kind}`] }, human(a.kind)),
        a.command_id ? h('div', { class: 'muted small mono' }, a.command_kind ? `${a.command_id} · ${a.command_kind}` : a.command_id) : null),
      showOrder ? h('td', {}, orderLink(a.order_id)) : null,
      h('td', {}, a.status ? badge(a.status, 'order') : result && a.reason ? badge(a.reason, 'outcome') : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'small' }, a.reason ? human(a.reason) : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'detail' }, describeDetail(a) ?? h('span', { class: 'muted' }, '—')));
  }

  function renderOrder(d, row, p) {
    const rec = d.order || {};
    const o = rec.order || {};
    fill(p.status, badge(rec.status, 'order', 'badge-lg'));
    p.status.dataset.status = rec.status || '';
    fill(p.facts,
      fact('Order', h('span', { class: 'mono' }, o.order_id)),
      fact('Meter', meterLink(o.meter_id)),
      fact('Kind · reason', `${human(o.kind)} · ${human(o.reason)}`),
      fact('Priority', dash(o.priority)),
      fact('Status', [badge(rec.status, 'order'), row?.held_by_operator ? [' ', badge('held by operator', 'flag')] : null]),
      fact('Status reason', rec.reason ? human(rec.reason) : '—'),
      fact('Account', dash(o.account_id)),
      fact('Service point', dash(o.service_point_id)),
      fact('Zone', dash(row?.zone)),
      fact('Campaign', row?.campaign_id || o.campaign_id
        ? h('a', { href: `#/campaigns/${encodeURIComponent(row?.campaign_id || o.campaign_id)}`, class: 'mono' }, row?.campaign_id || o.campaign_id) : '—'),
      fact('SLA', slaCell(row?.sla)),
      fact('Received', [timeEl(rec.received_at), ' ', h('span', { class: 'muted small' }, relTime(rec.received_at))]),
      fact('Updated', [timeEl(rec.updated_at), ' ', h('span', { class: 'muted small' }, relTime(rec.updated_at))]),
      fact('Ended', row?.ended_at ? timeEl(row.ended_at) : '—'),
      rec.source ? fact('Source', h('span', { class: 'mono small' }, `${rec.source.topic}/${rec.source.partition}/${rec.source.offset}`)) : null);
    const audit = d.audit || [];
    // The latest command result, in words, above the timeline.
    const results = audit.filter((a) => a.kind === 'command_result');
    const lastResult = results[results.length - 1];
    if (lastResult) {
      fill(p.command, h('span', { class: 'muted' }, `Command ${lastResult.command_id || ''} ${lastResult.command_kind || ''}: `),
        describeDetail(lastResult) ?? human(lastResult.reason));
      p.command.hidden = false;
    } else {
      const dispatched = audit.filter((a) => a.kind === 'command_dispatched').pop();
      fill(p.command, dispatched
        ? [h('span', { class: 'muted' }, `Command ${dispatched.command_id || ''} ${dispatched.command_kind || ''}: `), badge('awaiting_result', 'outcome')]
        : h('span', { class: 'muted' }, 'No command sent yet.'));
      p.command.hidden = false;
    }
    // Rebuilt only when it changed (an opened "inputs" stays open across refreshes).
    const sig = JSON.stringify(audit);
    if (p.sig !== sig) {
      fill(p.body, audit.map((a) => auditRow(a)));
      p.sig = sig;
    }
    p.truncated.hidden = !d.audit_truncated;
    const final = FINAL_STATUSES.includes(rec.status);
    p.hold.disabled = final || !!row?.held_by_operator;
    p.release.disabled = final || (row ? !row.held_by_operator : false);
    p.cancel.disabled = final;
  }

  // ---------------------------------------------------------------------------------------
  // Meters

  function viewMeters(root, r) {
    const input = h('input', { type: 'search', id: 'meter-id', class: 'input', 'data-testid': 'meter-id', value: r.arg || '',
      placeholder: 'meter id', 'aria-label': 'Meter id', spellcheck: 'false' });
    const go = h('button', { type: 'submit', class: 'btn btn-primary', id: 'meter-lookup', 'data-testid': 'meter-lookup' }, 'Look up');
    const form = h('form', { class: 'toolbar', id: 'meter-form' }, input, go);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const id = input.value.trim();
      if (!id) return;
      const next = `#/meters/${encodeURIComponent(id)}`;
      if (location.hash === next) route(); else location.hash = next;
    });
    const page = h('div', { id: 'meter-page', 'data-testid': 'meter-page', hidden: true });
    root.append(h('section', { id: 'view-meters' },
      viewHeader('Meters', 'A meter: where it is, what protects it, its switch, its open orders and its audit trail.'),
      form, page));
    if (!r.arg) { input.focus(); return; }
    loadMeter(page, r.arg);
  }

  async function loadMeter(page, id) {
    const g = gen;
    let m;
    try {
      m = await api('GET', `/meters/${seg(id)}`);
    } catch (e) {
      if (current(g)) showError(e.status === 404 ? `Meter ${id}: ${e.message}` : `Could not load meter ${id}: ${e.message}`);
      return;
    }
    if (!current(g)) return;
    const flags = METER_FLAGS.filter(([bit]) => (m.flags & bit) !== 0);
    const st = m.state || {};
    const open = st.open || [];
    const body = h('tbody');
    const more = h('button', { class: 'btn', type: 'button', id: 'meter-more', hidden: !m.next }, 'Load older');
    let next = m.next;
    more.addEventListener('click', () => busy(more, async () => {
      try {
        const older = await api('GET', `/meters/${seg(id)}?${new URLSearchParams({ before: next })}`);
        append(body, [(older.audit || []).map((a) => auditRow(a, { showOrder: true }))]);
        next = older.next;
        more.hidden = !next;
      } catch (e) {
        showError(`Could not load older rows: ${e.message}`);
      }
    }));
    const refresh = h('button', { class: 'btn', type: 'button', id: 'meter-refresh' }, 'Refresh');
    refresh.addEventListener('click', () => busy(refresh, () => loadMeter(page, id)));
    fill(page,
      h('div', { class: 'panel-head' },
        h('h2', {}, 'Meter ', h('span', { class: 'mono' }, m.meter_id)),
        h('div', { class: 'view-tools' }, refresh)),
      h('div', { class: 'split split-wide' },
        h('div', { class: 'panel' }, h('h2', {}, 'Meter'),
          h('dl', { class: 'facts', id: 'meter-facts' },
            fact('Meter', h('span', { class: 'mono' }, m.meter_id)),
            fact('Zone', m.zone || '—', { id: 'meter-zone', 'data-testid': 'meter-zone' }),
            fact('Head-end', dash(m.head_end_id)),
            fact('Flags', flags.length
              ? flags.map(([, key, label]) => badge(label, 'flag', `flag-${key}`))
              : h('span', { class: 'muted' }, 'none'), { id: 'meter-flags', 'data-testid': 'meter-flags', 'data-flags': m.flags }),
            fact('Switch', st.switch ? badge(st.switch, 'switch') : '—', { id: 'meter-switch', 'data-testid': 'meter-switch' }),
            fact('Open orders', String(m.open_orders_total ?? open.length)),
            fact('Actor', m.live_actor ? 'live (in memory)' : 'at rest (stored)'))),
        h('div', { class: 'panel' }, h('h2', {}, 'Open orders'),
          open.length ? h('table', { class: 'grid grid-compact', id: 'meter-open-orders' },
            h('thead', {}, h('tr', {}, ['Order', 'Kind', 'Status', 'Hold', 'Attempts'].map((c) => h('th', { text: c })))),
            h('tbody', {}, open.map((o) => h('tr', { 'data-order-id': o.order?.order_id },
              h('td', {}, orderLink(o.order?.order_id)),
              h('td', {}, `${human(o.order?.kind)} · ${human(o.order?.reason)}`),
              h('td', {}, badge(o.status, 'order')),
              h('td', {}, o.hold ? (o.hold.rules || []).map((x) => h('code', { class: 'rule' }, x)) : '—',
                o.operator_hold ? [' ', badge('held by operator', 'flag')] : null),
              h('td', { class: 'num' }, dash(o.attempts))))))
            : h('p', { class: 'muted' }, 'No open orders.'),
          h('details', { class: 'raw' }, h('summary', {}, 'Stored state (JSON)'),
            h('pre', { id: 'meter-state' }, JSON.stringify(st, null, 2))))),
      h('h2', {}, 'Audit timeline', h('span', { class: 'muted small' }, ' newest first')),
      h('div', { class: 'table-wrap' },
        h('table', { class: 'grid timeline', id: 'meter-timeline', 'data-testid': 'meter-timeline' },
          h('thead', {}, h('tr', {}, ['Time (UTC)', 'Kind', 'Order', 'Status', 'Reason', 'Detail'].map((c) => h('th', { text: c })))),
          fill(body, (m.audit || []).map((a) => auditRow(a, { showOrder: true }))))),
      h('div', { class: 'below' }, more));
    page.hidden = false;
  }

  // ---------------------------------------------------------------------------------------
  // Start: a kept token is checked again; otherwise the sign-in screen.

  async function start() {
    if (!token) {
      showSignin();
      return;
    }
    try {
      await signIn(token);
      if (!location.hash || location.hash === '#/' || location.hash === '#/signout') location.hash = '#/overview';
      else route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      token = '';
      showSignin(e.status === 401 ? `Sign in again: ${e.message}` : e.message);
    }
  }

  start();
})();
