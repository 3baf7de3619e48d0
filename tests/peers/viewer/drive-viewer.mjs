// Drives the nanovm live viewer in the Debian chromium, headless, over the DevTools protocol
// (playwright-core), and prints what a person would see as one JSON object on stdout.
//
//   node drive-viewer.mjs --url http://127.0.0.1:PORT --token TOKEN --run RUN_ID --shots DIR [--hostile RUN_ID]
//   node drive-viewer.mjs --version
//
// The run must be suspended at an `await` of `approval` (customer_refund's manual review). The
// driver opens the page on it, reads the graph and the events, delivers the approval through
// the server's API (as a webhook would) while the page stays open, waits for the new events to
// arrive on the page without a reload, then steps the replay through every entry with the
// keyboard, and opens a second tab whose stream has one hash altered on the way.
// Screenshots: waiting.png, live.png, replay.png, tampered.png in --shots. Exit 0 with the report,
// 1 when the page did not show what was awaited (with the reason on stderr), 3 when
// playwright-core is not installed (tests/peers/viewer/install.sh).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error(`playwright-core is not installed (tests/peers/viewer/install.sh): ${e.message}`);
  process.exit(3);
}

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : true]);
    return acc;
  }, []),
);
if (args.version) {
  const { createRequire } = await import('node:module');
  const pkg = createRequire(import.meta.url)('playwright-core/package.json');
  console.log(`playwright-core ${pkg.version}`);
  process.exit(0);
}
for (const need of ['url', 'token', 'run', 'shots']) {
  if (!args[need] || args[need] === true) {
    console.error(`missing --${need}`);
    process.exit(2);
  }
}

const profile = mkdtempSync(join(tmpdir(), 'nanovm-viewer-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const fail = async (why) => {
  console.error(`viewer: ${why}`);
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
};

try {
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    problems.push(`a dialog opened (script from the data ran): ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  let loads = 0;
  page.on('load', () => {
    loads += 1;
  });
  const base = args.url.replace(/\/$/, '');
  const run = args.run;
  await page.goto(`${base}/viewer#token=${encodeURIComponent(args.token)}&run=${encodeURIComponent(run)}`);

  // Everything the page shows about the chosen run, read from its DOM.
  const look = () =>
    page.evaluate(() => {
      const q = (s) => Array.from(document.querySelectorAll(s));
      const state = document.querySelector('#state');
      return {
        status: state?.dataset.status ?? null,
        entries: Number(state?.dataset.entries ?? -1),
        waits_for: document.querySelector('#waiting')?.dataset.event || null,
        open_effects: q('#open-effects [data-effect]').length,
        root: document.querySelector('#chain')?.dataset.root ?? null,
        events: q('#events [data-seq]').map((r) => ({
          seq: Number(r.dataset.seq),
          kind: r.dataset.kind,
          hash: r.dataset.hash,
          verify: r.dataset.verify,
        })),
        current: q('#graph [data-step][data-status="current"]').map((n) => n.dataset.step),
        visited: q('#graph [data-step][data-visited="1"]').map((n) => n.dataset.step),
        taken_edges: q('#graph [data-edge][data-taken="1"]').length,
        timeline: q('#timeline [data-step]').map((b) => ({ step: b.dataset.step, events: Number(b.dataset.events), ms: b.dataset.ms === undefined ? null : Number(b.dataset.ms) })),
      };
    });
  const settled = (s, status) =>
    s.status === status &&
    s.events.length === s.entries &&
    s.events.every((e) => e.verify !== 'pending') &&
    s.current.length > 0;
  const until = async (what, status, ms = 20000) => {
    const t0 = Date.now();
    let s;
    for (;;) {
      s = await look();
      if (settled(s, status)) return s;
      if (Date.now() - t0 > ms) await fail(`${what}: not shown within ${ms} ms: ${JSON.stringify(s)} ${problems.join('; ')}`);
      await page.waitForTimeout(100);
    }
  };

  const waiting = await until('the suspended run', 'suspended');
  await page.screenshot({ path: join(args.shots, 'waiting.png'), fullPage: true });

  // The approval, as a webhook delivers it, while the page is open.
  const res = await fetch(`${base}/v1/runs/${encodeURIComponent(run)}/events/approval`, {
    method: 'POST',
    headers: { authorization: `Bearer ${args.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ event_id: 'viewer-approval-1', payload: { approved: true } }),
  });
  if (!res.ok) await fail(`the delivery: ${res.status} ${await res.text()}`);

  const live = await until('the events after the delivery', 'success');
  await page.screenshot({ path: join(args.shots, 'live.png'), fullPage: true });

  // The replay: Home goes to entry 0, ArrowRight one entry on, ArrowLeft one back.
  const shown = () =>
    page.evaluate(() => {
      const r = document.querySelector('#replay-entry');
      return {
        seq: r?.dataset.seq === undefined ? null : Number(r.dataset.seq),
        kind: r?.dataset.kind ?? null,
        hash: r?.dataset.hash ?? null,
        current: Array.from(document.querySelectorAll('#graph [data-step][data-status="current"]')).map((n) => n.dataset.step),
        row: Array.from(document.querySelectorAll('#events tr.shown')).map((r) => Number(r.dataset.seq)),
        visit: Array.from(document.querySelectorAll('#timeline [data-shown="1"]')).map((b) => b.dataset.step),
        status: document.querySelector('#state').dataset.status,
        waits_for: document.querySelector('#waiting').dataset.event || null,
        open: Array.from(document.querySelectorAll('#open-effects [data-effect]')).map((o) => o.dataset.effect),
      };
    });
  await page.click('#replay-start');
  await page.keyboard.press('Home');
  const replay = [];
  let pictured = false;
  for (let k = 0; k < live.entries; k += 1) {
    const s = await shown();
    replay.push(s);
    if (!pictured && s.current.includes('manual_review')) {
      await page.screenshot({ path: join(args.shots, 'replay.png'), fullPage: true });
      pictured = true;
    }
    if (k + 1 < live.entries) await page.keyboard.press('ArrowRight');
  }
  if (!pictured) await page.screenshot({ path: join(args.shots, 'replay.png'), fullPage: true });
  await page.keyboard.press('ArrowLeft');
  const replay_back = await shown();

  // The metric plots (from /v1/stats).
  const t0 = Date.now();
  let plots = [];
  while (Date.now() - t0 < 10000) {
    plots = await page.evaluate(() =>
      Array.from(document.querySelectorAll('#plots svg[data-metric]')).map((s) => ({
        metric: s.dataset.metric,
        program: s.dataset.program,
        points: s.querySelectorAll('[data-run]').length,
      })),
    );
    if (plots.length > 0) break;
    await page.waitForTimeout(100);
  }
  // Text from the store is text: a run id written as markup, chosen in the runs list, shows
  // literally and runs nothing (any dialog fails the driver).
  let hostile = null;
  if (args.hostile && args.hostile !== true) {
    await page.keyboard.press('Escape');
    const row = page.locator('#runs tbody tr').filter({ has: page.locator('td', { hasText: args.hostile }) });
    await row.first().click();
    const t2 = Date.now();
    while (Date.now() - t2 < 10000) {
      hostile = await page.evaluate(() => ({
        header: document.querySelector('#run-id').textContent,
        status: document.querySelector('#state').dataset.status,
        listed: Array.from(document.querySelectorAll('#runs [data-run]')).map((r) => r.dataset.run),
        injected: document.querySelectorAll('#runs svg, #state svg, #runs img, #state img').length,
      }));
      if (hostile.status === 'success') break;
      await page.waitForTimeout(100);
    }
  }

  // An attack on the stream: a second tab whose stream has one hash altered on the way (as a
  // man in the middle or a broken proxy would). The page must mark that entry, and the next one
  // (whose `prev` no longer links), broken, and every other entry verified.
  const other = await context.newPage();
  other.on('pageerror', (e) => problems.push(`page error (tampered tab): ${e.message}`));
  await other.route('**/v1/runs/*/stream*', async (route) => {
    const res = await route.fetch();
    const body = (await res.text()).replace(/("seq":3,"prev":"[0-9a-f]{64}","hash":")([0-9a-f])/, (_, head, c) => head + (c === '0' ? '1' : '0'));
    await route.fulfill({ response: res, body });
  });
  await other.goto(`${base}/viewer#token=${encodeURIComponent(args.token)}&run=${encodeURIComponent(run)}`);
  let tampered = [];
  const t1 = Date.now();
  while (Date.now() - t1 < 20000) {
    tampered = await other.evaluate(() =>
      Array.from(document.querySelectorAll('#events [data-seq]')).map((r) => ({ seq: Number(r.dataset.seq), hash: r.dataset.hash, verify: r.dataset.verify })),
    );
    if (tampered.length === live.entries && tampered.every((e) => e.verify !== 'pending')) break;
    await other.waitForTimeout(100);
  }
  await other.screenshot({ path: join(args.shots, 'tampered.png'), fullPage: true });

  if (problems.length > 0) await fail(problems.join('; '));
  console.log(JSON.stringify({ loads, waiting, live, replay, replay_back, plots, hostile, tampered }));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  await fail(e.stack ?? String(e));
}
