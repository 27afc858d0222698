// The explore page: the collection's record, its map (plain canvas), the soundness checks and coverage.
// One script for both places it runs: served by `scinsearch serve` at /explore (the data comes from
// /explore/data, with the access key when the service has one) and inlined in the offline report of
// `scinsearch explore --out` (the data is embedded in #explore-data; thumbnails, when embedded, too).
"use strict";

(function () {
  const KEY_STORE = "scinsearch-api-key";  // the kiosk page's own: one key per browser tab
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
    "#7f7f00", "#004d40", "#aec7e8", "#ff9896"];
  const OTHER = "#9a9a9a";
  const UNKNOWN = "#cfcfcf";
  const RADIUS = 3;
  const HIT = 8;  // px: how near the pointer must be to a mark to show it
  const ROWS_SHOWN = 100;

  const $ = (id) => document.getElementById(id);
  const state = { data: null, colourBy: "condition", current: -1, screen: null, byCase: null, canvasSize: 0 };

  function el(tag, attributes, children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v; else if (k === "className") node.className = v; else node.setAttribute(k, v);
    });
    (children || []).forEach((c) => node.append(c));
    return node;
  }

  function apiKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (error) { return ""; }
  }

  function format(value) {
    if (value === null || value === undefined) return "none";
    if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en") : String(+value.toFixed(4));
    if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k}: ${format(v)}`).join("; ");
    return String(value);
  }

  // Data ---------------------------------------------------------------------------------------------

  async function loadData() {
    const embedded = $("explore-data");
    if (embedded) return JSON.parse(embedded.textContent);
    const headers = apiKey() ? { "X-API-Key": apiKey() } : {};
    const response = await fetch("/explore/data", { headers: headers });
    if (response.status === 401) {
      $("key-form").hidden = false;
      throw new Error("The access key is missing or wrong.");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `The service answered ${response.status}.`);
    return body;
  }

  function thumbnail(img, index) {
    const id = state.data.points.image[index];
    img.alt = `Image ${id}`;
    img.hidden = false;
    const thumbs = state.data.thumbs;
    if ($("explore-data")) {  // the report: the thumbnail is embedded, or there is none (its text says which image)
      if (thumbs && thumbs[id]) img.src = thumbs[id]; else { img.removeAttribute("src"); img.hidden = true; }
      return;
    }
    const url = `/images/${encodeURIComponent(id)}?size=thumb`;
    if (!apiKey()) { img.src = url; return; }
    fetch(url, { headers: { "X-API-Key": apiKey() } })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch(() => { img.removeAttribute("src"); });
  }

  // The record, the checks and the coverage tables ----------------------------------------------------

  function renderRecord() {
    const list = $("record");
    list.replaceChildren();
    Object.entries(state.data.record).forEach(([name, value]) => {
      list.append(el("dt", { text: name }), el("dd", { text: format(value) }));
    });
  }

  function table(spec, cellFor) {
    const head = el("tr", {}, spec.columns.map((c) => el("th", { scope: "col", text: c })));
    const rows = spec.rows.slice(0, ROWS_SHOWN).map((row, r) => el("tr", {}, row.map((v, c) => cellFor(v, c, r))));
    const caption = el("caption", { text: spec.title });
    const wrap = el("div", { className: "table-wrap", tabindex: "0", role: "region", "aria-label": spec.title });
    wrap.append(el("table", { id: `table-${spec.id}` }, [caption, el("thead", {}, [head]), el("tbody", {}, rows)]));
    return wrap;
  }

  function plainCell(value, column) {
    return column === 0 ? el("th", { scope: "row", text: format(value) }) : el("td", { text: format(value) });
  }

  function renderCoverage() {
    const box = $("coverage");
    const coverage = state.data.coverage;
    box.replaceChildren();
    coverage.tables.forEach((spec) => box.append(table(spec, plainCell)));
    coverage.matrices.forEach((spec) => {
      box.append(el("p", { className: "note", text: `${spec.title}: ${spec.flagged} cells under ${spec.flag_below} ` +
        `cases, marked "few" (the ${coverage.top_conditions} conditions with most cases).` }));
      box.append(table(spec, (value, column) => {
        if (column === 0) return plainCell(value, 0);
        const few = spec.flag_columns.includes(spec.columns[column]) && value < spec.flag_below;
        const cell = el("td", { className: few ? "few" : "", text: format(value) });
        if (few) cell.append(el("span", { className: "flag", text: " few" }));
        return cell;
      }));
    });
  }

  function renderChecks() {
    const box = $("checks");
    box.replaceChildren();
    state.data.checks.forEach((check) => {
      const section = el("section", { className: "check", id: `check-${check.id}`, "aria-labelledby": `check-h-${check.id}` });
      section.append(el("h3", { id: `check-h-${check.id}`, text: `${check.title}: ${check.count}` }));
      let rule = `Rule: ${check.rule}.`;
      if (check.judged !== undefined) rule += ` Images judged: ${check.judged}.`;
      if (check.rows.length < check.count) rule += ` The first ${check.rows.length} are listed.`;
      section.append(el("p", { className: "note", text: rule }));
      if (check.count === 0) {
        section.append(el("p", { className: "ok", text: "None found." }));
      } else {
        const spec = { id: check.id, title: check.title, columns: check.columns.concat(["on the map"]),
          rows: check.rows.map((row) => row.concat([""])) };
        section.append(table(spec, (value, column, r) => {
          if (column < check.columns.length) return plainCell(value, column);
          const button = el("button", { type: "button", className: "button small", text: "Show" });
          button.addEventListener("click", () => select(check.points[r][0], true));
          return el("td", {}, [button]);
        }));
      }
      box.append(section);
    });
  }

  // The map ------------------------------------------------------------------------------------------

  function colouring() {
    const p = state.data.points;
    const names = state.data.vocab[state.colourBy];
    const values = p[state.colourBy];
    const colours = names.map((name, i) => {
      if (name === "unknown" || name === state.data.map.unlabelled) return UNKNOWN;
      return i < PALETTE.length ? PALETTE[i] : OTHER;
    });
    return { names: names, values: values, colours: colours };
  }

  function renderLegend(c) {
    const counts = new Array(c.names.length).fill(0);
    c.values.forEach((v) => { counts[v] += 1; });
    const items = [];
    let others = 0;
    c.names.forEach((name, i) => {
      if (c.colours[i] === OTHER) { others += counts[i]; return; }
      items.push([c.colours[i], `${name} (${counts[i]})`]);
    });
    if (others) items.push([OTHER, `${c.names.length - PALETTE.length} other values (${others})`]);
    $("legend").replaceChildren(...items.map(([colour, text]) => {
      const swatch = el("span", { className: "swatch", "aria-hidden": "true" });
      swatch.style.background = colour;  // CSSOM, not a style attribute: the page's policy allows no inline styles
      return el("li", {}, [swatch, text]);
    }));
  }

  function layout() {
    const canvas = $("map");
    // As wide as the page allows, but never taller than the window: the whole map is in view at once.
    const width = Math.max(240, Math.min($("map-wrap").clientWidth, 900, window.innerHeight - 60));
    const ratio = window.devicePixelRatio || 1;
    canvas.style.width = `${width}px`;
    canvas.style.height = `${width}px`;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(width * ratio);
    state.canvasSize = width;
    const p = state.data.points;
    const pad = 12;
    const span = width - 2 * pad;
    const n = p.x.length;
    const xs = new Float32Array(n);
    const ys = new Float32Array(n);
    for (let i = 0; i < n; i += 1) {
      xs[i] = pad + p.x[i] * span;
      ys[i] = pad + (1 - p.y[i]) * span;
    }
    state.screen = { xs: xs, ys: ys };
  }

  function draw() {
    const started = performance.now();
    const canvas = $("map");
    const ctx = canvas.getContext("2d");
    const ratio = canvas.width / state.canvasSize;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, state.canvasSize, state.canvasSize);
    const c = colouring();
    const { xs, ys } = state.screen;
    const byColour = new Map();
    c.values.forEach((v, i) => {
      const colour = c.colours[v];
      if (!byColour.has(colour)) byColour.set(colour, []);
      byColour.get(colour).push(i);
    });
    // Grey first, so the named colours sit on top.
    const order = [...byColour.keys()].sort((a, b) => (b === UNKNOWN) - (a === UNKNOWN) || (b === OTHER) - (a === OTHER));
    let marks = 0;
    order.forEach((colour) => {
      ctx.beginPath();
      byColour.get(colour).forEach((i) => {
        ctx.moveTo(xs[i] + RADIUS, ys[i]);
        ctx.arc(xs[i], ys[i], RADIUS, 0, 2 * Math.PI);
        marks += 1;
      });
      ctx.globalAlpha = 0.75;
      ctx.fillStyle = colour;
      ctx.fill();
    });
    ctx.globalAlpha = 1;
    if (state.current >= 0) {
      ctx.beginPath();
      ctx.arc(xs[state.current], ys[state.current], RADIUS + 4, 0, 2 * Math.PI);
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#000000";
      ctx.stroke();
    }
    renderLegend(c);
    const canvasEl = $("map");
    canvasEl.dataset.marks = String(marks);
    canvasEl.dataset.drawMs = (performance.now() - started).toFixed(1);
    const m = state.data.map;
    canvasEl.setAttribute("aria-label", `Map of ${marks} images (${m.method.toUpperCase()}), coloured by ` +
      `${$("colour-by").selectedOptions[0].textContent.toLowerCase()}`);
  }

  function nearestMark(x, y, within) {
    const { xs, ys } = state.screen;
    let best = -1;
    let bestDistance = within * within;
    for (let i = 0; i < xs.length; i += 1) {
      const d = (xs[i] - x) ** 2 + (ys[i] - y) ** 2;
      if (d <= bestDistance) { best = i; bestDistance = d; }
    }
    return best;
  }

  function describe(i) {
    const p = state.data.points;
    const v = state.data.vocab;
    return `${v.condition[p.condition[i]]}; self-reported skin type ${v.self_fst[p.self_fst[i]]}, ` +
      `dermatologists' ${v.derm_fst[p.derm_fst[i]]}; ${v.split[p.split[i]]} split`;
  }

  function showTooltip(i) {
    const tip = $("tooltip");
    if (i < 0) { tip.hidden = true; return; }
    $("tooltip-text").textContent = `Image ${state.data.points.image[i]}: ${describe(i)}`;
    thumbnail($("tooltip-image"), i);
    const x = state.screen.xs[i];
    const y = state.screen.ys[i];
    tip.style.left = `${Math.min(x + 12, state.canvasSize - 220)}px`;
    tip.style.top = `${Math.min(y + 12, state.canvasSize - 40)}px`;
    tip.hidden = false;
    tip.dataset.point = String(i);
  }

  function pointItem(i, similarity) {
    const img = el("img", { width: "64", height: "64" });
    thumbnail(img, i);
    const label = `Image ${state.data.points.image[i]}${similarity === undefined ? "" : `, cosine ${similarity}`}: ${describe(i)}`;
    const button = el("button", { type: "button", className: "point-button", "data-point": String(i) }, [img, el("span", { text: label })]);
    button.addEventListener("click", () => select(i, true));
    return el("li", {}, [button]);
  }

  function openPanel(i) {
    const p = state.data.points;
    const panel = $("point-panel");
    panel.hidden = false;
    panel.dataset.point = String(i);
    $("point-heading").textContent = `Image ${p.image[i]}, case ${p.case[i]}`;
    $("point-text").textContent = describe(i);
    const mates = (state.byCase.get(p.case[i]) || []).filter((j) => j !== i);
    $("point-case").replaceChildren(...(mates.length ? mates.map((j) => pointItem(j)) : [el("li", { text: "No other image of this case." })]));
    const neighbours = p.neighbours[i].map((j, k) => pointItem(j, p.similarities[i][k]));
    $("point-neighbours").replaceChildren(...(neighbours.length ? neighbours : [el("li", { text: "None." })]));
    $("point-heading").focus();
  }

  function select(i, open) {
    state.current = i;
    draw();
    showTooltip(i);
    $("map-live").textContent = i >= 0 ? `Image ${state.data.points.image[i]}: ${describe(i)}` : "";
    if (open && i >= 0) openPanel(i);
  }

  function step(direction) {
    const { xs, ys } = state.screen;
    if (state.current < 0) { select(0, false); return; }
    const x0 = xs[state.current];
    const y0 = ys[state.current];
    let best = -1;
    let bestScore = Infinity;
    for (let i = 0; i < xs.length; i += 1) {
      const dx = xs[i] - x0;
      const dy = ys[i] - y0;
      const along = direction === "ArrowRight" ? dx : direction === "ArrowLeft" ? -dx : direction === "ArrowDown" ? dy : -dy;
      const across = direction === "ArrowRight" || direction === "ArrowLeft" ? Math.abs(dy) : Math.abs(dx);
      if (i === state.current || along <= 0 || across > along * 2) continue;
      const score = along + 2 * across;
      if (score < bestScore) { best = i; bestScore = score; }
    }
    if (best >= 0) select(best, false);
  }

  function wireMap() {
    const canvas = $("map");
    canvas.addEventListener("mousemove", (event) => {
      const rect = canvas.getBoundingClientRect();
      const i = nearestMark(event.clientX - rect.left, event.clientY - rect.top, HIT);
      if (i !== Number($("tooltip").dataset.point) || $("tooltip").hidden) showTooltip(i);
    });
    canvas.addEventListener("mouseleave", () => { if (state.current < 0) showTooltip(-1); });
    canvas.addEventListener("click", (event) => {
      const rect = canvas.getBoundingClientRect();
      const i = nearestMark(event.clientX - rect.left, event.clientY - rect.top, HIT);
      if (i >= 0) select(i, true);
    });
    canvas.addEventListener("keydown", (event) => {
      if (event.key.startsWith("Arrow")) { event.preventDefault(); step(event.key); }
      else if ((event.key === "Enter" || event.key === " ") && state.current >= 0) { event.preventDefault(); openPanel(state.current); }
      else if (event.key === "Escape") { state.current = -1; draw(); showTooltip(-1); }
    });
    $("colour-by").addEventListener("change", (event) => { state.colourBy = event.target.value; draw(); });
    let pending = 0;
    window.addEventListener("resize", () => {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(() => { layout(); draw(); });
    });
  }

  function renderMap() {
    const m = state.data.map;
    const explained = m.explained ? ` (the two axes explain ${m.explained.map((e) => `${(100 * e).toFixed(1)}%`).join(" and ")} of the variance)` : "";
    const sample = m.sampled ? `a stratified sample of ${m.points} of its ${m.total} images (by condition; ` +
      `collections over ${m.max_points} images are sampled)` : `all ${m.points} images`;
    $("map-note").textContent = `${m.method.toUpperCase()} of ${sample}${explained}${m.cached ? "; read from the collection's record" : ""}. ` +
      `The neighbours and the checks below are computed on the same images.`;
    $("colour-by").replaceChildren(...m.colourings.map((c) => el("option", { value: c.id, text: c.label })));
    state.byCase = new Map();
    state.data.points.case.forEach((c, i) => {
      if (!state.byCase.has(c)) state.byCase.set(c, []);
      state.byCase.get(c).push(i);
    });
    layout();
    draw();
  }

  async function start() {
    const began = performance.now();
    try {
      state.data = await loadData();
    } catch (error) {
      $("status").textContent = `The collection could not be loaded: ${error.message}`;
      document.documentElement.dataset.ready = "error";
      return;
    }
    const rendering = performance.now();
    renderRecord();
    renderMap();
    wireMap();
    renderChecks();
    renderCoverage();
    const r = state.data.record;
    $("status").textContent = `Collection ${r.collection}: ${format(r.points)} images of ${format(r.cases)} cases.`;
    document.documentElement.dataset.renderMs = (performance.now() - rendering).toFixed(1);
    document.documentElement.dataset.loadMs = (performance.now() - began).toFixed(1);
    document.documentElement.dataset.ready = "1";
  }

  // For the browser test: where a point is drawn, in page coordinates.
  window.scinExplore = {
    where(i) {
      const rect = $("map").getBoundingClientRect();
      return { x: rect.left + state.screen.xs[i], y: rect.top + state.screen.ys[i] };
    },
  };

  function begin() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      try { sessionStorage.setItem(KEY_STORE, $("key").value); } catch (error) { /* not remembered */ }
      $("key-form").hidden = true;
      $("status").textContent = "Loading the collection...";
      start();
    });
    start();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", begin); else begin();
}());
