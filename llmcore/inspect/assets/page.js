// The inspect page: reads the record from #trace-data and builds every view with DOM calls.
// Strings from the model or the text only ever reach the page through textContent / title.
"use strict";
const D = JSON.parse(document.getElementById("trace-data").textContent);
const T = D.tokens.length;
let selected = T - 1;

function el(tag, attrs, parent, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "title") e.title = v; else e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
const shown = (s) => JSON.stringify(s).slice(1, -1).replace(/ /g, "\u2423");  // ␣, \n, \t made visible
const vocab = (id) => shown(D.vocab[String(id)] ?? ("#" + id));
const fmt = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d === undefined ? 4 : d));
const hue = (id) => (id * 47) % 360;

function section(title, id) {
  const s = el("section", { id: id }, document.body);
  el("h2", {}, s, title);
  return s;
}

function tokensView() {
  const s = section("Tokens", "view-tokens");
  const info = el("div", { class: "note" }, s);
  el("span", { id: "token-count" }, info, String(T));
  el("span", {}, info, " tokens · click one to see its next-token distribution");
  const box = el("div", { id: "tokens" }, s);
  D.tokens.forEach((t, i) => {
    const span = el("span", { class: "tok", "data-pos": i }, box, t.text);
    span.style.background = `hsl(${hue(t.id)}, 70%, 85%)`;
    span.title = `position ${i} · id ${t.id} · bytes ${t.start}..${t.end} [${t.hex}]`;
    span.addEventListener("click", () => select(i));
  });
}

function select(i) {
  selected = i;
  document.querySelectorAll(".tok").forEach((e) => e.classList.toggle("sel", Number(e.dataset.pos) === i));
  distView();
}

function bars(parent, labels, values, picks) {
  const max = Math.max(1e-9, ...values.map((v) => v || 0));
  labels.forEach((lab, j) => {
    const row = el("div", { class: "bar-row" }, parent);
    el("span", { class: "bar-label" + (picks && picks.has(j) ? " pick" : "") }, row, lab);
    el("span", { class: "bar" }, row).style.width = `${Math.round(240 * (values[j] || 0) / max)}px`;
    el("span", { class: "bar-val" }, row, fmt(values[j]));
  });
}

function distView() {
  const box = document.getElementById("dist");
  box.replaceChildren();
  const i = selected;
  el("div", { class: "note", id: "dist-head" }, box,
    `after ${vocab(D.tokens[i].id)} (position ${i}) · entropy ${fmt(D.entropy[i], 3)} nats · ` +
    `loss of the actual next token ${fmt(D.loss[i], 3)}`);
  bars(box, D.top_ids[i].map(vocab), D.top_probs[i]);
}

function paint(canvas, m) {
  const n = m.length, ctx = canvas.getContext("2d");  // row r holds keys 0..r only
  canvas.width = n; canvas.height = n;
  const img = ctx.createImageData(n, n);
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) {
    const v = Math.sqrt(m[r][c] || 0), o = 4 * (r * n + c);  // sqrt: small weights stay visible
    img.data[o] = 255 - 200 * v; img.data[o + 1] = 255 - 150 * v; img.data[o + 2] = 255 - 40 * v; img.data[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function attentionView() {
  const s = section("Attention (layers × heads)", "view-attention");
  if (!D.attention) { el("div", { class: "note", id: "attn-note" }, s, D.attention_note); return; }
  el("div", { class: "note" }, s, "rows: layers, columns: heads; click a cell to zoom, hover the zoom for a weight");
  const grid = el("div", { id: "attn-grid" }, s);
  grid.style.gridTemplateColumns = `40px repeat(${D.heads.length}, 60px)`;
  el("span", {}, grid);
  D.heads.forEach((h) => el("span", { class: "grid-label" }, grid, `head ${h}`));
  const zoomBox = el("div", {}, s);
  const zoomTitle = el("div", { class: "note", id: "attn-zoom-title" }, zoomBox);
  const zoom = el("canvas", { id: "attn-zoom" }, zoomBox);
  const hover = el("div", { class: "note", id: "attn-hover" }, zoomBox, "–");
  let cur = null;
  const open = (li, hi, cell) => {
    cur = D.attention[li][hi];
    paint(zoom, cur);
    zoomTitle.textContent = `layer ${D.layers[li]}, head ${D.heads[hi]}`;
    document.querySelectorAll(".attn-cell").forEach((c) => c.classList.remove("sel"));
    cell.classList.add("sel");
  };
  D.layers.forEach((l, li) => {
    el("span", { class: "grid-label" }, grid, `layer ${l}`);
    D.heads.forEach((h, hi) => {
      const c = el("canvas", { class: "attn-cell", "data-layer": l, "data-head": h }, grid);
      c.title = `layer ${l}, head ${h}`;
      paint(c, D.attention[li][hi]);
      c.addEventListener("click", () => open(li, hi, c));
    });
  });
  zoom.addEventListener("mousemove", (ev) => {
    if (!cur) return;
    const r = zoom.getBoundingClientRect();
    const q = Math.floor((ev.clientY - r.top) / r.height * T), k = Math.floor((ev.clientX - r.left) / r.width * T);
    if (q < 0 || k < 0 || q >= T || k >= T) return;
    hover.textContent = `${vocab(D.tokens[q].id)} (${q}) → ${vocab(D.tokens[k].id)} (${k}): ${fmt(cur[q][k] ?? 0)}`;
  });
  open(0, 0, grid.querySelector(".attn-cell"));
}

function lensView() {
  const s = section("Logit lens (top token of each layer's residual)", "view-lens");
  el("div", { class: "note" }, s, "cell: the layer's top next token; shade: its probability; hover: top-k and the rank of the final prediction; last column: mean residual norm");
  const table = el("table", { id: "lens-table" }, s);
  const head = el("tr", {}, table);
  el("th", {}, head, "layer");
  D.tokens.forEach((t) => el("th", {}, head, shown(t.text)));
  el("th", {}, head, "‖x‖");
  D.lens.layers.forEach((l, li) => {
    const row = el("tr", {}, table);
    el("th", {}, row, String(l));
    for (let i = 0; i < T; i++) {
      const p = D.lens.top_probs[li][i][0];
      const cell = el("td", {}, row, vocab(D.lens.top_ids[li][i][0]));
      cell.style.background = `rgba(74, 123, 208, ${0.1 + 0.8 * p})`;
      cell.title = D.lens.top_ids[li][i].map((id, j) => `${vocab(id)} ${fmt(D.lens.top_probs[li][i][j], 3)}`).join("\n")
        + `\nrank of the final prediction: ${D.lens.rank[li][i]}`;
    }
    const norms = D.residual_norms[l + 1];
    el("td", {}, row, fmt(norms.reduce((a, b) => a + b, 0) / norms.length, 2));
  });
}

function samplerView() {
  const s = section("Sampler", "view-sampler");
  const v = D.sampler;
  if (!v) { el("div", { class: "note" }, s, "no sampler view in this record"); return; }
  el("div", { class: "note" }, s, `next token after position ${v.position} (${vocab(D.tokens[v.position].id)}); ` +
    "each column: the distribution after that processor");
  const table = el("table", { id: "sampler-table" }, s);
  const head = el("tr", {}, table);
  el("th", {}, head, "token");
  v.stages.forEach((st) => el("th", {}, head, `${st.name} (${st.kept} kept)`));
  v.tokens.forEach((id, j) => {
    const row = el("tr", {}, table);
    el("th", {}, row, vocab(id));
    v.stages.forEach((st) => {
      const td = el("td", {}, row, fmt(st.probs[j], 3));
      td.style.background = `rgba(74, 123, 208, ${0.8 * (st.probs[j] || 0)})`;
    });
  });
  const picks = el("div", { id: "sampler-picks" }, s);
  el("div", {}, picks, `greedy picks ${vocab(v.greedy)}`);
  el("div", {}, picks, `sampling (seed ${v.seed}) picks ${vocab(v.sampled)}`);
  const then = v.beam_tokens.slice(1).map(vocab).join(" ");
  el("div", {}, picks, `beam search (width ${v.beam_width}, two tokens deep) picks ` +
    (v.beam_tokens.length ? vocab(v.beam_tokens[0]) : "nothing (the end token)") +
    (then ? ` then ${then}` : "") + ` (score ${fmt(v.beam_score, 3)})`);
}

el("h1", {}, document.body, D.title || "llmcore inspect");
tokensView();
section("Next-token distribution", "view-dist");
el("div", { id: "dist" }, document.getElementById("view-dist"));
attentionView();
lensView();
samplerView();
select(T - 1);
