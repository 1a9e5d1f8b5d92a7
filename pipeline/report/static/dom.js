// DOM, number-formatting and row helpers of the report page (none reads the page's data); inlined before report.js in the page's one
// <script>, which takes them from NST. Text always goes through textContent, never markup.
const NST = (function () {
  'use strict';
  function h(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) for (const k in attrs) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (let i = 2; i < arguments.length; i++) {
      const kid = arguments[i];
      if (kid === null || kid === undefined) continue;
      if (Array.isArray(kid)) kid.forEach(function (k) { if (k !== null && k !== undefined) e.append(k); });
      else e.append(kid);
    }
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined || typeof v !== 'number' || !isFinite(v)) return '–';
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    if (Number.isInteger(v)) return String(v);
    return v.toPrecision(4).replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '');
  }
  function dur(s) {
    if (!s) return '–';
    if (s < 90) return s.toFixed(1) + ' s';
    if (s < 5400) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(2) + ' h';
  }
  function shortName(uri) {
    if (!uri) return '?';
    const parts = uri.split('/');
    return parts[parts.length - 1] || uri;
  }
  function clock(iso) { return iso ? iso.slice(0, 19).replace('T', ' ') + ' UTC' : ''; }
  function label(key) { return key.replace(/_/g, ' '); }

  function curveSvg(cv) {
    const m = { l: 52, r: 10, t: 10, b: 34 };
    const W = cv.w + m.l + m.r, H = cv.h + m.t + m.b;
    const svg = sv('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'curve', role: 'img',
      'aria-label': 'loss curve' });
    const g = sv('g', { transform: 'translate(' + m.l + ',' + m.t + ')' });
    g.append(sv('rect', { x: 0, y: 0, width: cv.w, height: cv.h, fill: 'none', stroke: '#dedee3' }));
    Object.keys(cv.lines).forEach(function (name) {
      g.append(sv('polyline', { points: cv.lines[name], class: 'ln-' + name }));
    });
    g.append(sv('text', { x: -4, y: 8, 'text-anchor': 'end' }, fmt(cv.y[1])));
    g.append(sv('text', { x: -4, y: cv.h, 'text-anchor': 'end' }, fmt(cv.y[0])));
    g.append(sv('text', { x: 0, y: cv.h + 12 }, 'step ' + cv.x[0]));
    g.append(sv('text', { x: cv.w, y: cv.h + 12, 'text-anchor': 'end' }, 'step ' + cv.x[1]));
    let lx = 0;
    Object.keys(cv.lines).forEach(function (name) {
      g.append(sv('text', { x: lx, y: cv.h + 26, class: 'lg-' + name }, '— ' + name));
      lx += 62;
    });
    g.append(sv('text', { x: cv.w, y: cv.h + 26, 'text-anchor': 'end' }, 'log scale'));
    svg.append(g);
    return svg;
  }

  function kvTable(entries, helpMap) {
    return h('table', null, entries.map(function (e) {
      return h('tr', { title: (helpMap && helpMap[e[0]]) || null },
        h('th', { text: label(e[0]) }), h('td', { class: typeof e[1] === 'number' ? 'num' : null,
          text: typeof e[1] === 'number' ? fmt(e[1]) : String(e[1]) }));
    }));
  }

  function pager(host, page, pages, total, what, go) {
    host.textContent = '';
    if (pages <= 1) { host.append(h('span', { class: 'muted', text: total + ' ' + what })); return; }
    host.append(
      h('button', { text: '‹ prev', disabled: page === 0, onclick: function () { go(page - 1); } }),
      h('span', { class: 'page-info', text: 'page ' + (page + 1) + ' / ' + pages + ' · ' + total + ' ' + what }),
      h('button', { text: 'next ›', disabled: page >= pages - 1, onclick: function () { go(page + 1); } }));
  }
  function text(r) {
    if (r._text === undefined) {
      r._text = [r.id, r.content || '', r.style || '', r.error || '', r.error_kind || '',
        JSON.stringify(r.md || {}), JSON.stringify(r.p || {})].join(' ').toLowerCase();
    }
    return r._text;
  }

  function varying(group, defaults) {
    const keys = new Set();
    group.forEach(function (r) { Object.keys(r.p || {}).forEach(function (k) { keys.add(k); }); });
    let vary = Array.from(keys).filter(function (k) {
      return new Set(group.map(function (r) { return (r.p || {})[k] !== undefined ? r.p[k] : defaults[k]; })).size > 1;
    });
    let source = 'p';
    if (!vary.length) {
      const mk = new Set();
      group.forEach(function (r) { Object.keys(r.md || {}).forEach(function (k) { mk.add(k); }); });
      vary = Array.from(mk).filter(function (k) {
        return new Set(group.map(function (r) { return JSON.stringify((r.md || {})[k]); })).size > 1;
      });
      source = 'md';
    }
    return { keys: vary.sort(), source: source };
  }
  return { h: h, sv: sv, fmt: fmt, dur: dur, shortName: shortName, label: label, kvTable: kvTable,
    pager: pager, curveSvg: curveSvg, text: text, varying: varying,
    clock: clock };
})();
