(function () {
  'use strict';
  const h = NST.h, sv = NST.sv, fmt = NST.fmt, dur = NST.dur, shortName = NST.shortName;
  const label = NST.label, kvTable = NST.kvTable, pager = NST.pager, curveSvg = NST.curveSvg;
  const text = NST.text, varying = NST.varying, clock = NST.clock;
  const D = JSON.parse(document.getElementById('nst-data').textContent);
  const PAGE = 120, GRID_PAGE = 20, SWEEP_PAGE = 20, FAIL_PAGE = 100;
  const rows = D.rows;
  rows.forEach(function (r, i) { r._pos = i; });
  const byId = new Map(rows.map(function (r) { return [r.id, r]; }));

  // ---------------------------------------------------------------- tiles and detail
  function tile(r, caption) {
    const media = r.th
      ? h('img', { src: r.th, loading: 'lazy', decoding: 'async', alt: 'row ' + r.id })
      : h('div', { class: 'ph', text: r.st === 'failed' ? '✕ failed' + (r.ek ? '\n' + r.ek : '') : 'no thumbnail' });
    const fig = h('figure', { class: 'tile ' + r.st, 'data-row': r.id, tabindex: '0',
      title: (r.content ? shortName(r.content) : '') + ' × ' + (r.style ? shortName(r.style) : '') },
      media, h('figcaption', null, caption || h('b', { text: r.id })));
    fig.addEventListener('click', function () { openDetail(r); });
    fig.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') openDetail(r); });
    return fig;
  }


  const overlay = document.getElementById('detail');
  function openDetail(r) {
    const panel = overlay.querySelector('.panel');
    panel.textContent = '';
    const close = h('button', { text: 'Close ✕', onclick: closeDetail });
    panel.append(h('div', { class: 'top' },
      h('h2', null, 'Row ', r.id, ' ', h('span', { class: 'st-' + r.st, text: '(' + r.st + ')' })), close));
    const left = h('div');
    if (r.st === 'done' && (r.img || r.th)) {
      const src = r.img || r.th;
      left.append(h('a', { href: src, target: '_blank', rel: 'noopener' },
        h('img', { class: 'full', src: src, alt: 'output of row ' + r.id })));
      if (!r.img && r.out) left.append(h('div', { class: 'muted', text: 'full image: ' + r.out }));
    } else if (r.err) {
      left.append(h('div', { class: 'kind', text: r.ek || 'failed' }), h('div', { class: 'err', text: r.err }));
    }
    const right = h('div');
    if (r.cv) right.append(h('h2', { text: 'Loss curve' }), curveSvg(r.cv));
    const values = D.numeric.filter(function (k) { return r.v && r.v[k] !== undefined; })
      .map(function (k) { return [k, r.v[k]]; });
    if (values.length) right.append(h('h2', { text: 'Metrics and final losses' }), kvTable(values, D.help));
    const info = [['content', r.content || '–'], ['style', r.style || '–']];
    if (r.att) info.push(['attempt', r.att]);
    if (r.w) info.push(['worker', r.w + (r.dev ? ' · ' + r.dev : '') + (r.node ? ' · ' + r.node : '')]);
    if (r.fin) info.push(['finished', r.fin]);
    right.append(h('h2', { text: 'Row' }), kvTable(info));
    const params = Object.keys(r.p || {});
    right.append(h('h2', { text: 'Parameters' }), params.length
      ? kvTable(params.map(function (k) { return [k, r.p[k]]; }))
      : h('div', { class: 'muted', text: D.params_known ? 'run defaults' : 'unknown (manifest not readable)' }));
    const md = Object.keys(r.md || {});
    if (md.length) right.append(h('h2', { text: 'Metadata' }),
      kvTable(md.map(function (k) { return [k, typeof r.md[k] === 'object' ? JSON.stringify(r.md[k]) : r.md[k]]; })));
    panel.append(left, right);
    overlay.hidden = false;
    close.focus();
  }
  function closeDetail() { overlay.hidden = true; }
  overlay.addEventListener('click', function (ev) { if (ev.target === overlay) closeDetail(); });
  document.addEventListener('keydown', function (ev) { if (ev.key === 'Escape') closeDetail(); });


  // ---------------------------------------------------------------- summary
  function renderSummary() {
    const host = document.getElementById('view-summary');
    const S = D.status, R = D.run || {};
    const stats = R.stats || {};
    const runs = (R.history || []).length;
    // The headline counts the whole output folder (every run); the last run's own facts are labelled so.
    const cards = [
      ['rows', S.rows], ['done', S.done], ['failed', S.failed],
      ['images / hour (all runs)', S.images_per_hour ? Math.round(S.images_per_hour).toLocaleString('en') : '–'],
      ['run time (all runs)', dur(S.run_seconds)], ['runs', runs || '–']];
    host.append(h('div', { class: 'cards' }, cards.map(function (c) {
      return h('div', { class: 'card' }, h('b', { text: String(c[1]) }), h('span', { text: c[0] }));
    })));
    if (R.run_id) {
      const hit = stats.cache_hit_rate !== null && stats.cache_hit_rate !== undefined
        ? Math.round(100 * stats.cache_hit_rate) + ' %' : '–';
      host.append(h('p', { class: 'last-run' }, h('b', { text: 'Last run ' + R.run_id }),
        ' (' + (R.status || 'unknown') + '): ' + (stats.done || 0) + ' done, ' + (stats.failed || 0) + ' failed, ' +
        (stats.already_done || 0) + ' already done by earlier runs, in ' + dur(stats.seconds) +
        '; style-cache hits ' + hit));
    }
    (D.notes || []).forEach(function (n) { host.append(h('div', { class: 'note', text: n })); });
    if (D.workers.length) {
      host.append(h('h2', { text: 'Workers' }), h('table', { class: 'workers' },
        h('tr', null, ['worker', 'node', 'device', 'rows done', 'device s / row', 'rows / hour', 'joined', 'left'].map(function (t) {
          return h('th', { text: t }); })),
        D.workers.map(function (w) {
          return h('tr', null, h('td', { text: w.worker }), h('td', { text: w.node }), h('td', { text: w.device }),
            h('td', { class: 'num', text: String(w.rows) }), h('td', { class: 'num', text: fmt(w.mean_seconds) }),
            h('td', { class: 'num', text: w.rows_per_hour ? Math.round(w.rows_per_hour).toLocaleString('en') : '–' }),
            h('td', { text: clock(w.joined_at) }), h('td', { text: w.joined_at ? clock(w.left_at) || 'to the end' : '' }));
        })));
    }
  }

  // ---------------------------------------------------------------- gallery
  const G = { status: 'all', q: '', sort: 'index', dir: 1, metric: '', min: '', max: '', page: 0 };
  function galleryRows() {
    const q = G.q.trim().toLowerCase();
    const lo = G.min === '' ? -Infinity : Number(G.min), hi = G.max === '' ? Infinity : Number(G.max);
    let out = rows.filter(function (r) {
      if (G.status !== 'all' && r.st !== G.status) return false;
      if (q && text(r).indexOf(q) < 0) return false;
      if (G.metric) {
        const v = r.v ? r.v[G.metric] : undefined;
        if (v === undefined || v === null || v < lo || v > hi) return false;
      }
      return true;
    });
    const key = G.sort, dir = G.dir;
    if (key === 'index') out.sort(function (a, b) { return dir * (a._pos - b._pos); });
    else if (key === 'id') out.sort(function (a, b) { return dir * (a.id < b.id ? -1 : a.id > b.id ? 1 : 0); });
    else out.sort(function (a, b) {
      const va = a.v ? a.v[key] : undefined, vb = b.v ? b.v[key] : undefined;
      const ma = va === undefined || va === null, mb = vb === undefined || vb === null;
      if (ma || mb) return ma === mb ? a._pos - b._pos : (ma ? 1 : -1);  // rows without the value last
      return dir * (va - vb) || a._pos - b._pos;
    });
    return out;
  }
  function renderGallery() {
    const list = galleryRows();
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    G.page = Math.min(G.page, pages - 1);
    const host = document.getElementById('gallery');
    host.textContent = '';
    const shown = G.sort !== 'index' && G.sort !== 'id' ? G.sort : (G.metric || null);
    list.slice(G.page * PAGE, (G.page + 1) * PAGE).forEach(function (r) {
      const cap = [h('b', { text: r.name || r.id.slice(0, 10), title: 'row ' + r.id })];
      if (shown && r.v && r.v[shown] !== undefined) cap.push(' ' + label(shown) + ' ' + fmt(r.v[shown]));
      else if (r.st === 'failed') cap.push(' ' + (r.ek || 'failed'));
      host.append(tile(r, cap));
    });
    pager(document.getElementById('gallery-pager'), G.page, pages, list.length, 'rows',
      function (p) { G.page = p; renderGallery(); window.scrollTo(0, host.offsetTop - 80); });
  }
  function setupGallery() {
    const sortSel = document.getElementById('sort');
    const metricSel = document.getElementById('metric');
    [['index', 'manifest order'], ['id', 'row id']].concat(D.numeric.map(function (k) { return [k, label(k)]; }))
      .forEach(function (o) { sortSel.append(h('option', { value: o[0], text: o[1], title: D.help[o[0]] || null })); });
    metricSel.append(h('option', { value: '', text: '(no range filter)' }));
    D.numeric.forEach(function (k) { metricSel.append(h('option', { value: k, text: label(k) })); });
    function bind(id, prop, ev, conv) {
      document.getElementById(id).addEventListener(ev, function (e) {
        G[prop] = conv ? conv(e.target.value) : e.target.value; G.page = 0; renderGallery();
      });
    }
    bind('status', 'status', 'change'); bind('q', 'q', 'input'); bind('sort', 'sort', 'change');
    bind('dir', 'dir', 'change', Number); bind('metric', 'metric', 'change');
    bind('min', 'min', 'input'); bind('max', 'max', 'input');
  }

  // ---------------------------------------------------------------- grid and sweeps
  const cells = new Map();
  rows.forEach(function (r) {
    if (r.c === null || r.c === undefined || r.s === null || r.s === undefined) return;
    const key = r.c + ',' + r.s;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(r);
  });
  const sweeps = Array.from(cells.entries()).filter(function (e) { return e[1].length > 1; });
  let gridPage = 0, sweepPage = 0, highlighted = null;

  function headerCell(item) {
    return h('th', { class: 'hdr', title: item.uri },
      item.thumb ? h('img', { src: item.thumb, loading: 'lazy', alt: shortName(item.uri) }) : null,
      h('div', { text: shortName(item.uri) }));
  }
  function renderGrid() {
    const host = document.getElementById('grid');
    host.textContent = '';
    const used = new Set(), usedS = new Set();
    cells.forEach(function (_, key) { const p = key.split(','); used.add(+p[0]); usedS.add(+p[1]); });
    const cs = Array.from(used).sort(function (a, b) { return a - b; });
    const ss = Array.from(usedS).sort(function (a, b) { return a - b; });
    const pages = Math.max(1, Math.ceil(cs.length / GRID_PAGE));
    const table = h('table', { class: 'grid' },
      h('tr', null, h('th', { class: 'muted', text: 'content ↓ · style →' }), ss.map(function (s) { return headerCell(D.styles[s]); })));
    cs.slice(gridPage * GRID_PAGE, (gridPage + 1) * GRID_PAGE).forEach(function (c) {
      table.append(h('tr', null, headerCell(D.contents[c]), ss.map(function (s) {
        const group = cells.get(c + ',' + s);
        if (!group) return h('td', { class: 'muted', text: '' });
        const best = group.find(function (r) { return r.st === 'done'; }) || group[0];
        const t = tile(best, h('b', { text: best.name || best.id.slice(0, 10), title: 'row ' + best.id }));
        if (group.length > 1) {
          t.append(h('span', { class: 'badge', text: '×' + group.length, title: 'parameter sweep: compare side by side',
            onclick: function (ev) { ev.stopPropagation(); showSweep(c + ',' + s); } }));
        }
        return h('td', null, t);
      })));
    });
    host.append(h('div', { class: 'grid-wrap' }, table));
    pager(document.getElementById('grid-pager'), gridPage, pages, cs.length, 'contents × ' + ss.length + ' styles',
      function (p) { gridPage = p; renderGrid(); });
  }
  function renderSweeps() {
    const host = document.getElementById('sweeps');
    host.textContent = '';
    if (!sweeps.length) host.append(h('p', { class: 'muted', text: 'No parameter sweeps: every content × style pair has one row.' }));
    const pages = Math.max(1, Math.ceil(sweeps.length / SWEEP_PAGE));
    sweeps.slice(sweepPage * SWEEP_PAGE, (sweepPage + 1) * SWEEP_PAGE).forEach(function (entry) {
      const group = entry[1], first = group[0];
      const vary = varying(group, D.defaults);
      const box = h('div', { class: 'sweep' + (highlighted === entry[0] ? ' hl' : ''), 'data-key': entry[0] },
        h('div', null, h('b', { text: shortName(first.content) }), ' × ', h('b', { text: shortName(first.style) }),
          h('span', { class: 'muted', text: ' · ' + group.length + ' rows' + (vary.keys.length ? ', varying ' + vary.keys.join(', ') : '') })));
      const tiles = h('div', { class: 'tiles' });
      group.forEach(function (r) {
        const bag = vary.source === 'p' ? (r.p || {}) : (r.md || {});
        const parts = vary.keys.map(function (k) {
          const v = bag[k] !== undefined ? bag[k] : (vary.source === 'p' ? D.defaults[k] : '–');
          return k + '=' + (typeof v === 'object' ? JSON.stringify(v) : v);
        });
        tiles.append(tile(r, [h('b', { text: parts.join(', ') || r.name || r.id.slice(0, 10), title: 'row ' + r.id })]));
      });
      box.append(tiles);
      host.append(box);
    });
    pager(document.getElementById('sweeps-pager'), sweepPage, pages, sweeps.length, 'sweeps',
      function (p) { sweepPage = p; renderSweeps(); });
  }
  function showSweep(key) {
    const i = sweeps.findIndex(function (e) { return e[0] === key; });
    if (i < 0) return;
    sweepPage = Math.floor(i / SWEEP_PAGE);
    highlighted = key;
    renderSweeps();
    show('sweeps');
    const el = document.querySelector('.sweep[data-key="' + key + '"]');
    if (el) el.scrollIntoView({ block: 'center' });
  }

  // ---------------------------------------------------------------- failures
  const failed = rows.filter(function (r) { return r.st === 'failed'; });
  let failPage = 0;
  function renderFailures() {
    const host = document.getElementById('failures');
    host.textContent = '';
    if (!failed.length) { host.append(h('p', { class: 'muted', text: 'No failed rows.' })); return; }
    const pages = Math.max(1, Math.ceil(failed.length / FAIL_PAGE));
    const table = h('table', { class: 'fail' }, h('tr', null,
      ['row', 'error kind', 'attempt', 'content', 'style', 'message'].map(function (t) { return h('th', { text: t }); })));
    failed.slice(failPage * FAIL_PAGE, (failPage + 1) * FAIL_PAGE).forEach(function (r) {
      const tr = h('tr', { class: 'failed-row', 'data-row': r.id },
        h('td', null, h('a', { href: '#', text: r.id, onclick: function (ev) { ev.preventDefault(); openDetail(r); } })),
        h('td', { class: 'kind', text: r.ek || '?' }), h('td', { class: 'num', text: String(r.att || '–') }),
        h('td', { text: r.content ? shortName(r.content) : '–', title: r.content || null }),
        h('td', { text: r.style ? shortName(r.style) : '–', title: r.style || null }),
        h('td', { class: 'msg', text: r.err || '' }));
      table.append(tr);
    });
    host.append(table);
    pager(document.getElementById('failures-pager'), failPage, pages, failed.length, 'failed rows',
      function (p) { failPage = p; renderFailures(); });
  }

  // ---------------------------------------------------------------- tabs
  const VIEWS = [['gallery', 'Gallery (' + rows.length + ')'], ['grid', 'Content × style'],
    ['sweeps', 'Sweeps (' + sweeps.length + ')'], ['failures', 'Failures (' + failed.length + ')']];
  const nav = document.getElementById('tabs');
  function show(name) {
    VIEWS.forEach(function (v) {
      document.getElementById('view-' + v[0]).hidden = v[0] !== name;
      nav.querySelector('[data-view="' + v[0] + '"]').className = v[0] === name ? 'on' : '';
    });
  }
  VIEWS.forEach(function (v) {
    nav.append(h('button', { 'data-view': v[0], text: v[1], onclick: function () { show(v[0]); } }));
  });

  renderSummary();
  setupGallery();
  renderGallery();
  renderGrid();
  renderSweeps();
  renderFailures();
  show('gallery');
  const m = /^#row=(.+)$/.exec(location.hash);
  if (m && byId.has(decodeURIComponent(m[1]))) openDetail(byId.get(decodeURIComponent(m[1])));
  document.body.setAttribute('data-ready', '1');
})();
