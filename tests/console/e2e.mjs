// switchyard web console, end to end in headless Chromium (playwright-core, Debian's
// /usr/bin/chromium). Run from tests/console: `npm ci && node e2e.mjs` with
//
//   CONSOLE_URL       e.g. http://127.0.0.1:PORT/console
//   SUPERVISOR_TOKEN  a supervisor's API token
//   VIEWER_TOKEN      a viewer's API token
//   ORDER_ID          an order awaiting approval (SO-CON-1), with a protection
//   METER_ID          a meter to look up (CON-1)
//   CAMPAIGN_ID       an active campaign that has released orders (C-CON-1)
//   SCREENSHOT_DIR    where the 1280x800 screenshots go (created): overview.png, approvals.png,
//                     order.png, exceptions.png, campaigns.png, meter.png
//
// Steps (each waits at most 30 s for what it expects, and logs one line):
//   1. a viewer signs in, clicks Approve on ORDER_ID: the API's 403 message is shown; signs out
//   2. a supervisor signs in: the overview's KPI tiles                      → overview.png
//   3. approvals: ORDER_ID listed with its protection                       → approvals.png
//      a note, Approve: the confirmation names the order
//   4. the order's page (the confirmation's link): its timeline shows the command confirmed
//      and the order completed                                             → order.png
//   5. exceptions: one assigned to me, its assignee shows                   → exceptions.png
//   6. campaigns: CAMPAIGN_ID selected, its release chart has a line and points; Pause: the
//      status becomes paused                                               → campaigns.png
//   7. meters: METER_ID looked up, its timeline has rows                    → meter.png
// Exit code 1 with a message on the first failure, and on any page error or console error
// (an API error answer the step expects, as the viewer's 403, is allowed: Chromium logs
// every 4xx fetch as a console error "Failed to load resource").
//
// The console's hooks this script relies on (src/http/console/index.html, app.js):
//   sign-in:     #signin, #signin-token, #signin-submit, #whoami ("name (role)"), #signout
//   navigation:  #nav-overview, #nav-approvals, #nav-exceptions, #nav-campaigns, #nav-meters
//   messages:    #msg-error (API errors, verbatim), #msg-ok (confirmations)
//   overview:    #kpi-tiles, [data-testid=kpi-tile][data-kpi=...] with [data-testid=kpi-value]
//   approvals:   #approvals-table tr[data-order-id=ID] with [data-testid=protections],
//                input[data-testid=approval-note], button[data-testid=approve];
//                #msg-ok [data-testid=approval-confirmation], a#confirm-order-link
//   order page:  #view-order[data-order-id], #order-status[data-status],
//                #order-timeline tr[data-kind=command_result] [data-testid=command-result]
//                (text "confirmed", switch state), tr[data-kind=status_change][data-status]
//   exceptions:  #exceptions-table tr[data-exception-id] with button[data-testid=assign-me],
//                td[data-testid=assignee]
//   campaigns:   #campaigns-table tr[data-campaign-id=ID], svg#campaign-chart with
//                path[data-testid=release-line] and circle.release-point, #campaign-pause,
//                #campaign-status[data-status]
//   meters:      #meter-id, #meter-lookup, #meter-page, #meter-zone, #meter-timeline tbody tr

import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const STEP_TIMEOUT = 30_000;
const RUN_TIMEOUT = 5 * 60_000;

function env(name) {
  const v = process.env[name];
  if (!v) fail(`${name} is not set (see the top of e2e.mjs)`);
  return v;
}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

const CONSOLE_URL = env('CONSOLE_URL');
const SUPERVISOR_TOKEN = env('SUPERVISOR_TOKEN');
const VIEWER_TOKEN = env('VIEWER_TOKEN');
const ORDER_ID = env('ORDER_ID');
const METER_ID = env('METER_ID');
const CAMPAIGN_ID = env('CAMPAIGN_ID');
const SCREENSHOT_DIR = path.resolve(env('SCREENSHOT_DIR'));

/** A CSS attribute value, quoted. */
const q = (v) => JSON.stringify(String(v));

const started = Date.now();
const secs = (t0) => ((Date.now() - t0) / 1000).toFixed(1);

// The whole run has a ceiling too (a hung browser must not hang the caller).
const watchdog = setTimeout(() => fail(`the run took over ${RUN_TIMEOUT / 1000} s`), RUN_TIMEOUT);

mkdirSync(SCREENSHOT_DIR, { recursive: true });

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT);

  // ---- page errors and console errors ---------------------------------------------------
  const problems = [];
  /** API answers a step expects to be errors: {status, path} taken once each. */
  let allowed = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    const url = m.location()?.url || '';
    const http = /^Failed to load resource: the server responded with a status of (\d+)/.exec(text);
    if (http) {
      const i = allowed.findIndex((a) => a.status === Number(http[1]) && url.includes(a.path));
      if (i >= 0) {
        allowed.splice(i, 1);
        return;
      }
    }
    problems.push(`console error: ${text}${url ? ` (${url})` : ''}`);
  });
  page.on('requestfailed', (r) => {
    console.log(`  (request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText})`);
  });

  const checkProblems = () => {
    if (problems.length) throw new Error(problems.join('; '));
  };

  let n = 0;
  async function step(title, fn) {
    n += 1;
    const t0 = Date.now();
    try {
      await fn();
      checkProblems();
    } catch (e) {
      const shot = path.join(tmpdir(), `switchyard-console-failed-step-${n}.png`);
      await page.screenshot({ path: shot }).catch(() => {});
      throw new Error(`step ${n} (${title}): ${e.message.split('\n')[0]}\n  screenshot of the page: ${shot}`);
    }
    console.log(`ok ${n} - ${title} (${secs(t0)} s)`);
  }

  const shot = (name) => page.screenshot({ path: path.join(SCREENSHOT_DIR, name) });

  /** Waits for `fn` in the page to be true (a string of JS, arg), at most 30 s. */
  const until = (what, fn, arg) => page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT, polling: 250 })
    .catch((e) => { throw new Error(`timed out waiting for ${what} (${e.message.split('\n')[0]})`); });

  /** Waits (at most 30 s) for `locator` to be visible; the error names `what`. */
  const visible = (locator, what) => locator.first().waitFor({ state: 'visible', timeout: STEP_TIMEOUT })
    .catch((e) => { throw new Error(`timed out waiting for ${what} (${e.message.split('\n')[0]})`); });

  async function signIn(tokenValue) {
    await visible(page.locator('#signin'), 'the sign-in form');
    await page.fill('#signin-token', tokenValue);
    await page.click('#signin-submit');
    await visible(page.locator('#whoami'), 'the signed-in user in the header');
    await until('the signed-in name', () => document.querySelector('#whoami').textContent.includes('('));
    return (await page.textContent('#whoami')).trim();
  }

  /** The answer to the next POST to `path` (at most 30 s). */
  const answerTo = (apiPath) => page.waitForResponse((r) => r.request().method() === 'POST'
    && new URL(r.url()).pathname === apiPath, { timeout: STEP_TIMEOUT })
    .catch((e) => { throw new Error(`no answer to POST ${apiPath} (${e.message.split('\n')[0]})`); });
  const approveResponse = () => answerTo(`/api/v1/approvals/${encodeURIComponent(ORDER_ID)}`);

  // ---- 1. a viewer cannot approve -------------------------------------------------------
  await step(`a viewer's Approve on ${ORDER_ID} shows the API's 403 message`, async () => {
    const res = await page.goto(CONSOLE_URL, { waitUntil: 'load' });
    if (!res || !res.ok()) throw new Error(`${CONSOLE_URL} answered ${res?.status()}`);
    const who = await signIn(VIEWER_TOKEN);
    if (!who.includes('(viewer)')) throw new Error(`signed in as "${who}", expected a viewer`);
    await page.click('#nav-approvals');
    const row = page.locator(`#approvals-table tr[data-order-id=${q(ORDER_ID)}]`);
    await visible(row, `${ORDER_ID} in the approval queue`);
    allowed.push({ status: 403, path: `/api/v1/approvals/${encodeURIComponent(ORDER_ID)}` });
    const answer = approveResponse();
    await row.locator('button[data-testid=approve]').click();
    const r = await answer;
    if (r.status() !== 403) throw new Error(`the approval answered ${r.status()}, expected 403`);
    const message = (await r.json()).error;
    await visible(page.locator('#msg-error'), 'the error message (#msg-error)');
    await until('the 403 message in #msg-error', (m) => document.querySelector('#msg-error').textContent.includes(m), message);
    console.log(`  shown: ${(await page.textContent('#msg-error')).trim()}`);
    await page.click('#signout');
    await visible(page.locator('#signin'), 'the sign-in form after signing out');
    allowed = []; // (Chromium may or may not have logged it by now)
  });

  // ---- 2. a supervisor signs in: the overview -------------------------------------------
  let myName = '';
  await step('a supervisor signs in and sees the KPI tiles', async () => {
    const who = await signIn(SUPERVISOR_TOKEN);
    if (!who.includes('(supervisor)')) throw new Error(`signed in as "${who}", expected a supervisor`);
    myName = who.replace(/\s*\(.*$/, '');
    await page.click('#nav-overview');
    await visible(page.locator('#kpi-tiles [data-testid=kpi-tile][data-kpi=open-awaiting-approval]'), 'the KPI tiles');
    const tiles = await page.locator('#kpi-tiles [data-testid=kpi-tile]').count();
    if (tiles < 5) throw new Error(`${tiles} KPI tiles, expected at least 5`);
    const received = (await page.textContent('[data-kpi=today-received] [data-testid=kpi-value]')).trim();
    console.log(`  ${tiles} tiles; orders received today: ${received}`);
    await shot('overview.png');
  });

  // ---- 3. approvals: listed with its protection, approved -------------------------------
  await step(`${ORDER_ID} is in the approval queue with its protection, and is approved`, async () => {
    await page.click('#nav-approvals');
    const row = page.locator(`#approvals-table tr[data-order-id=${q(ORDER_ID)}]`);
    await visible(row, `${ORDER_ID} in the approval queue`);
    const protections = (await row.locator('[data-testid=protections] .badge').allTextContents()).map((t) => t.trim());
    if (!protections.length) throw new Error(`${ORDER_ID} shows no protection`);
    console.log(`  protections: ${protections.join(', ')}`);
    await shot('approvals.png');
    await row.locator('input[data-testid=approval-note]').fill('Approved in the console e2e run: welfare check done');
    const answer = approveResponse();
    await row.locator('button[data-testid=approve]').click();
    const r = await answer;
    if (r.status() !== 202) throw new Error(`the approval answered ${r.status()}: ${await r.text()}`);
    const confirmation = page.locator(`#msg-ok [data-testid=approval-confirmation][data-order-id=${q(ORDER_ID)}]`);
    await visible(confirmation, 'the approval confirmation naming the order');
    console.log(`  shown: ${(await page.textContent('#msg-ok')).trim()}`);
  });

  // ---- 4. the order's page: command confirmed, order completed --------------------------
  await step(`${ORDER_ID}'s timeline shows its command confirmed and the order completed`, async () => {
    await page.click('#confirm-order-link');
    await visible(page.locator(`#view-order[data-order-id=${q(ORDER_ID)}]`), 'the order page');
    await until('a confirmed command result and status completed', () => {
      const result = [...document.querySelectorAll('#order-timeline tr[data-kind=command_result]')]
        .some((tr) => /confirmed/.test(tr.textContent));
      const completed = document.querySelector('#order-timeline tr[data-kind=status_change][data-status=completed]');
      return result && completed && document.querySelector('#order-status')?.dataset.status === 'completed';
    });
    const result = (await page.locator('#order-timeline tr[data-kind=command_result] [data-testid=command-result]').last().textContent()).trim();
    console.log(`  command result: ${result.replace(/\s+/g, ' ')}`);
    // The end of the timeline in view (the command result and the final status).
    await page.locator('#order-timeline tbody tr').last().evaluate((tr) => tr.scrollIntoView({ block: 'end' }));
    await shot('order.png');
  });

  // ---- 5. exceptions: assign one to me --------------------------------------------------
  await step('an exception task is assigned to me and shows its assignee', async () => {
    await page.click('#nav-exceptions');
    const rows = page.locator('#exceptions-table tr[data-exception-id]');
    await visible(rows.first(), 'an exception task in the list');
    // A task not yet mine (on a used instance, give one back first).
    let row = rows.filter({ has: page.locator('button[data-testid=assign-me]', { hasText: 'Assign to me' }) }).first();
    if (!(await row.count())) {
      const mine = rows.first();
      const id = await mine.getAttribute('data-exception-id');
      await mine.locator('button[data-testid=assign-me]').click();
      row = page.locator(`#exceptions-table tr[data-exception-id=${q(id)}]`);
      await visible(row.locator('button[data-testid=assign-me]', { hasText: 'Assign to me' }), 'the task back unassigned');
    }
    const id = await row.getAttribute('data-exception-id');
    await row.locator('button[data-testid=assign-me]').click();
    const assignee = page.locator(`#exceptions-table tr[data-exception-id=${q(id)}] [data-testid=assignee]`);
    await until(`${id} assigned to ${myName}`, ([sel, name]) => document.querySelector(sel)?.textContent.trim() === name,
      [`#exceptions-table tr[data-exception-id=${q(id)}] [data-testid=assignee]`, myName]);
    console.log(`  ${id} assigned to ${(await assignee.textContent()).trim()}`);
    await shot('exceptions.png');
  });

  // ---- 6. campaigns: the release chart, pause -------------------------------------------
  await step(`${CAMPAIGN_ID}'s release chart shows, and Pause makes it paused`, async () => {
    await page.click('#nav-campaigns');
    const row = page.locator(`#campaigns-table tr[data-campaign-id=${q(CAMPAIGN_ID)}]`);
    await visible(row, `${CAMPAIGN_ID} in the campaign list`);
    await row.click();
    await visible(page.locator('svg#campaign-chart'), 'the release chart');
    await until('a release line and at least one point in the chart', () =>
      document.querySelector('svg#campaign-chart path[data-testid=release-line]')
      && document.querySelectorAll('svg#campaign-chart circle.release-point').length >= 1);
    const points = await page.locator('svg#campaign-chart circle.release-point').count();
    console.log(`  chart: ${points} release point(s)`);
    const pause = page.locator('#campaign-pause');
    await visible(pause, 'the Pause button (is the campaign active?)');
    const answer = answerTo(`/api/v1/campaigns/${encodeURIComponent(CAMPAIGN_ID)}/pause`);
    await pause.click();
    const r = await answer;
    if (r.status() !== 202) throw new Error(`pause answered ${r.status()}: ${await r.text()}`);
    await until('the campaign status paused', () => document.querySelector('#campaign-status')?.dataset.status === 'paused');
    await until('the list row paused', (id) => document.querySelector(`#campaigns-table tr[data-campaign-id="${id}"] [data-testid=status]`)?.textContent.trim() === 'paused', CAMPAIGN_ID);
    await shot('campaigns.png');
  });

  // ---- 7. meters: look one up -----------------------------------------------------------
  await step(`${METER_ID} is looked up and its timeline shows`, async () => {
    await page.click('#nav-meters');
    await page.fill('#meter-id', METER_ID);
    await page.click('#meter-lookup');
    await visible(page.locator('#meter-page'), 'the meter page');
    await visible(page.locator('#meter-timeline tbody tr').first(), "rows in the meter's timeline");
    const rows = await page.locator('#meter-timeline tbody tr').count();
    const zone = (await page.textContent('#meter-zone')).trim();
    if (!zone || zone === '—') throw new Error('no zone shown');
    console.log(`  zone ${zone}, ${rows} audit rows`);
    await shot('meter.png');
  });

  console.log(`PASS: ${n} steps in ${secs(started)} s; screenshots in ${SCREENSHOT_DIR}`);
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.message}`);
} finally {
  clearTimeout(watchdog);
  await browser.close().catch(() => {});
}
process.exit(failed ? 1 : 0);
