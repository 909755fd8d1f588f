// The edgeside console. Vanilla JS, no build step. Everything shown is put in the page with
// textContent or SVG text nodes — never as HTML — so names from rules files, profiles and content
// cannot run as markup.
"use strict";

const API = "/console/api";
const SVG = "http://www.w3.org/2000/svg";
let csrf = "";
let activeText = "";
let sites = {};
let checkTimer = null;
let shadowTimer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const pct = (x, d = 1) => (x === null || x === undefined ? "–" : (100 * x).toFixed(d) + " %");
const num = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));

function status(text, isError) {
  const s = $("status");
  s.textContent = text || "";
  s.className = isError ? "status error" : "status";
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
  }
  if (opts.method && opts.method !== "GET") opts.headers["x-csrf-token"] = csrf;
  const res = await fetch(API + path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) { showSignIn(); throw new Error("signed out"); }
  return { status: res.status, data };
}

function errorText(r) {
  const e = r.data && r.data.error;
  return e ? e.message : "request failed (" + r.status + ")";
}

// -- sign in ------------------------------------------------------------------------------------

function showSignIn() {
  $("signin").hidden = false;
  $("tabs").hidden = true;
  $("signout").hidden = true;
  for (const t of document.querySelectorAll(".tab")) t.hidden = true;
}

async function signedIn() {
  $("signin").hidden = true;
  $("tabs").hidden = false;
  $("signout").hidden = false;
  showTab("rules");
  await loadRules();
}

// Promote pushes a rules snapshot: only a token with the `push` scope may (the server checks; this
// only saves an explain-only session a click that would be refused).
function allowPromote(scopes) {
  const may = Array.isArray(scopes) && scopes.includes("push");
  $("sh-promote").disabled = !may;
  $("sh-promote").title = may ? "" : "promoting needs a token with the push scope";
}

async function boot() {
  const res = await fetch(API + "/session", { credentials: "same-origin" });
  if (res.status === 200) {
    const session = await res.json();
    csrf = session.csrf;
    allowPromote(session.scopes);
    await signedIn();
  } else {
    showSignIn();
  }
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  const res = await fetch(API + "/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  if (res.status !== 200) {
    $("signin-error").textContent = "That token was not accepted.";
    return;
  }
  const session = await res.json();
  csrf = session.csrf;
  allowPromote(session.scopes);
  $("token").value = "";
  await signedIn();
});

$("signout").addEventListener("click", async () => {
  await fetch(API + "/session", { method: "DELETE", credentials: "same-origin" });
  csrf = "";
  showSignIn();
});

// -- tabs ---------------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== "tab-" + name;
  clearInterval(shadowTimer);
  if (name === "shadow") {
    loadShadow();
    shadowTimer = setInterval(loadShadow, 2000);
  }
  if (name === "analytics") loadAnalytics();
}

for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => showTab(b.dataset.tab));
}

// -- rules --------------------------------------------------------------------------------------

function candidateText() { return $("candidate").value; }

async function loadRules() {
  const r = await api("/rules");
  if (r.status !== 200) { status(errorText(r), true); return; }
  const d = r.data;
  activeText = d.text;
  sites = d.sites || {};
  $("active-version").textContent = d.version ? d.version + (d.file ? " · " + d.file : "") : "none";
  $("active-rules").textContent = d.text || "(no rules snapshot is active)";
  if (!$("candidate").value) $("candidate").value = d.text;
  const select = $("pv-site");
  select.replaceChildren(...Object.keys(sites).map((s) => el("option", { value: s, text: s })));
  if (sites["shop-fr"]) select.value = "shop-fr";
  renderGutter([]);
  await checkCandidate();
}

function renderGutter(diags) {
  const lines = candidateText().split("\n").length;
  const bad = new Map();
  for (const d of diags) {
    const prev = bad.get(d.line);
    if (!prev || d.severity === "error") bad.set(d.line, d);
  }
  const rows = [];
  for (let i = 1; i <= lines; i++) {
    const d = bad.get(i);
    const row = el("div", { "data-line": String(i) }, String(i));
    if (d) {
      row.className = d.severity;
      row.title = d.message;
    }
    rows.push(row);
  }
  $("gutter").replaceChildren(...rows);
  $("gutter").scrollTop = $("candidate").scrollTop;
}

function renderDiagnostics(result) {
  const list = $("diagnostics");
  const items = result.diagnostics.map((d) => {
    const where = el("a", { href: "#", class: "where", "data-line": String(d.line) },
      "line " + d.line + ":" + d.col);
    where.addEventListener("click", (ev) => { ev.preventDefault(); goToLine(d.line, d.col); });
    return el("li", { class: d.severity, "data-line": String(d.line), "data-col": String(d.col) },
      where, " ", el("span", { class: "sev" }, d.severity + "[" + d.code + "]"), " ", d.message,
      d.source_line ? el("pre", { class: "src" }, d.source_line + "\n" +
        " ".repeat(Math.max(0, d.col - 1)) + "^".repeat(Math.max(1, d.end_col - d.col))) : null,
      d.suggestion ? el("div", { class: "help" }, "help: " + d.suggestion) : null);
  });
  list.replaceChildren(...items);
  $("check-summary").textContent = result.ok
    ? "checks: " + result.warnings + " warning(s)"
    : result.errors + " error(s), " + result.warnings + " warning(s) — nothing activates";
  $("check-summary").className = result.ok ? "ok" : "error";
  const cards = (result.cardinality || []).map((c) => {
    const parts = Object.entries(c.per_placement).map(([n, k]) => k + " " + n).join(" × ");
    let text = c.site + (c.locale ? " (" + c.locale + ")" : "") + ": at most " + c.max_keys +
      " decision keys per page (" + parts + ")";
    if (c.per_visitor.length) text += "; per visitor: " + c.per_visitor.join(", ");
    return el("li", {}, text);
  });
  $("cardinality").replaceChildren(...cards);
  renderGutter(result.diagnostics);
}

function goToLine(line, col) {
  const ta = $("candidate");
  const lines = ta.value.split("\n");
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  pos += Math.max(0, col - 1);
  ta.focus();
  ta.setSelectionRange(pos, pos);
}

async function checkCandidate() {
  const r = await api("/check", { method: "POST", body: { text: candidateText() } });
  if (r.status !== 200) { status(errorText(r), true); return; }
  renderDiagnostics(r.data);
  $("candidate").dataset.checked = "1";
}

$("candidate").addEventListener("input", () => {
  $("candidate").dataset.checked = "0";
  renderGutter([]);
  clearTimeout(checkTimer);
  checkTimer = setTimeout(checkCandidate, 250);
});
$("candidate").addEventListener("scroll", () => { $("gutter").scrollTop = $("candidate").scrollTop; });
$("reset-candidate").addEventListener("click", () => { $("candidate").value = activeText; checkCandidate(); });

// -- preview ------------------------------------------------------------------------------------

function traceList(trace) {
  const rows = trace.map((t) => {
    const conds = (t.conditions || []).map((c) =>
      el("li", {}, el("code", {}, c.expr), " = ", el("b", {}, JSON.stringify(c.value))));
    return el("li", { class: t.matched ? "hit" : "miss" },
      el("span", { class: "kind" }, t.kind), " ",
      t.placement === "*" ? "" : t.placement + " · ",
      el("b", {}, t.id || "—"), " ", t.matched ? "✓" : "✗",
      t.note ? el("span", { class: "meta" }, " (" + t.note + ")") : null,
      conds.length ? el("ul", { class: "conds" }, ...conds) : null);
  });
  return el("details", { class: "trace" }, el("summary", {}, "explain trace (" + trace.length + " steps)"),
    el("ul", {}, ...rows));
}

function decisionView(view, other) {
  if (!view) return el("p", { class: "meta" }, "no decision");
  const rows = view.placements.map((p, i) => {
    const o = other ? other.placements[i] : null;
    const changed = o && (o.variant !== p.variant || JSON.stringify(o.content) !== JSON.stringify(p.content));
    const titles = p.content.map((id) => view.items[id] ? view.items[id] + " (" + id + ")" : id).join(", ");
    return el("tr", { class: changed ? "changed" : "", "data-placement": p.placement },
      el("td", {}, p.placement), el("td", { class: "variant" }, p.variant),
      el("td", {}, p.rule || (p.fallback ? "fallback: " + p.fallback : "default")),
      el("td", {}, p.arm ? p.experiment + " / " + p.arm : ""), el("td", {}, titles));
  });
  return el("div", {},
    el("table", {}, el("thead", {}, el("tr", {}, ...["placement", "variant", "rule", "experiment", "content"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
    el("p", { class: "meta" }, "segments: " + (view.segments.join(", ") || "none") + " · key " + view.key),
    traceList(view.trace));
}

$("preview-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ctx = { site: $("pv-site").value || "default", consent: $("pv-consent").checked };
  if ($("pv-path").value) ctx.path = $("pv-path").value;
  if ($("pv-country").value) ctx.country = $("pv-country").value;
  if ($("pv-city").value) ctx.city = $("pv-city").value;
  if ($("pv-hour").value !== "") ctx.hour = Number($("pv-hour").value);
  if ($("pv-device").value) ctx.device = $("pv-device").value;
  const r = await api("/preview", { method: "POST", body: { visitor: $("pv-visitor").value, context: ctx, candidate: candidateText() } });
  if (r.status !== 200) { status(errorText(r), true); return; }
  status("");
  const d = r.data;
  $("pv-who").textContent = d.visitor ? "profile " + d.visitor : "anonymous or unknown visitor: context-only rules apply";
  $("pv-active").replaceChildren(decisionView(d.active, d.candidate));
  if (d.candidate_check && !d.candidate_check.ok) {
    $("pv-candidate").replaceChildren(el("p", { class: "error" }, "The candidate does not check: " + d.candidate_check.errors + " error(s) — see Rules."));
  } else {
    $("pv-candidate").replaceChildren(decisionView(d.candidate, d.active));
  }
});

// -- impact -------------------------------------------------------------------------------------

function table(headers, rows, attrs) {
  return el("table", attrs || {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  return s < 60 ? Math.ceil(s) + " s" : Math.floor(s / 60) + " min " + Math.ceil(s % 60) + " s";
}

// One line of the streamed replay's progress: the bar, "done of total", and the time left. The
// numbers also stay on the element (data-phase, data-done, data-total) for whoever reads the page.
function showProgress(p) {
  const box = $("impact-progress");
  box.hidden = false;
  box.dataset.phase = p.phase;
  box.dataset.done = String(p.done);
  box.dataset.total = String(p.total);
  const bar = $("impact-bar");
  bar.max = Math.max(1, p.total);
  bar.value = p.done;
  let text;
  if (p.phase === "read") {
    text = "reading the decision log: " + p.done + " of at most " + p.total + " decisions found";
  } else if (p.done < p.total) {
    text = "replayed " + p.done + " of " + p.total + " decisions" +
      (p.eta_s === null ? "" : " · about " + seconds(p.eta_s) + " left");
  } else {
    text = "replayed " + p.total + " of " + p.total + " decisions in " + p.elapsed_s.toFixed(1) + " s";
  }
  $("impact-progress-text").textContent = text;
}

// The replay answers NDJSON when asked: progress lines while the log is read and replayed, then
// {"result": …} or {"error": …} (server/console/impact_stream.py).
async function replayImpact(body) {
  const res = await fetch(API + "/impact", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "accept": "application/x-ndjson", "x-csrf-token": csrf },
    body: JSON.stringify(body),
  });
  if (res.status === 401) { showSignIn(); throw new Error("signed out"); }
  if (res.status !== 200) {
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { status: res.status, data };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffered += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (!line.trim()) continue;
      const msg = JSON.parse(line);
      if (msg.progress) showProgress(msg.progress);
      else last = msg;
    }
    if (done) break;
  }
  if (last && last.result) return { status: 200, data: last.result };
  const error = last && last.error ? last.error : { message: "the replay stopped before its result" };
  return { status: 500, data: { error } };
}

$("impact-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  status("replaying…");
  $("impact-out").replaceChildren();
  $("impact-progress").hidden = true;
  const r = await replayImpact({ candidate: candidateText(), last: Number($("im-last").value) });
  if (r.status !== 200) {
    $("impact-progress").hidden = true;
    status(r.data && r.data.check ? "The candidate does not check — see Rules." : errorText(r), true);
    return;
  }
  status("");
  const d = r.data;
  const out = [
    el("p", { class: "big", id: "impact-summary", "data-decisions": String(d.decisions), "data-changed": String(d.changed) },
      el("b", {}, String(d.changed)), " of ", el("b", {}, String(d.decisions)), " decisions change (" + pct(d.changed_share) + ")"),
    el("p", { class: "meta" }, "cache copies (distinct site, page and key): " + d.cache_cardinality.before + " → " + d.cache_cardinality.after +
      (d.errors ? " · the candidate hit rule errors in " + d.errors + " decisions" : "")),
    el("h3", {}, "By placement"),
    table(["placement", "decisions", "changed", "from → to"], Object.entries(d.by_placement).map(([n, p]) =>
      [n, p.decisions, p.changed, p.transitions.map((t) => t.from_variant + " → " + t.to_variant + ": " + t.count).join("; ")]), { id: "impact-placements" }),
    el("h3", {}, "By site"),
    table(["site", "decisions", "changed", "keys before", "keys after"], Object.entries(d.by_site).map(([n, s]) =>
      [n, s.decisions, s.changed, s.keys_before, s.keys_after])),
    el("h3", {}, "By segment"),
    table(["segment", "decisions (active)", "decisions (candidate)", "changed"], Object.entries(d.by_segment).map(([n, s]) =>
      [n, s.before, s.after, s.changed])),
  ];
  $("impact-out").replaceChildren(...out);
});

// -- shadow -------------------------------------------------------------------------------------

function renderShadow(d) {
  if (!d.active) {
    $("shadow-out").replaceChildren(el("p", { id: "shadow-state", class: "meta" }, "No shadow is running."));
    return;
  }
  const rows = Object.entries(d.placements).map(([n, p]) => {
    const total = p.agree + p.differ;
    return [n, p.agree, p.differ, pct(total ? p.agree / total : null),
      Object.entries(p.diff).map(([m, k]) => m + ": " + k).join("; ")];
  });
  $("shadow-out").replaceChildren(
    el("p", { class: "big", id: "shadow-state", "data-agreement": d.agreement === null ? "" : String(d.agreement) },
      "Agreement ", el("b", {}, pct(d.agreement)), " over " + d.sampled + " sampled decisions"),
    el("p", { class: "meta" }, "share " + pct(d.share, 0) + " · errors " + d.errors + " · workers reporting " + d.workers),
    table(["placement", "agree", "differ", "agreement", "live → candidate"], rows, { id: "shadow-placements" }));
}

async function loadShadow() {
  const r = await api("/shadow");
  if (r.status === 200) renderShadow(r.data);
}

$("shadow-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await api("/shadow", { method: "POST", body: { candidate: candidateText(), share: Number($("sh-share").value) } });
  if (r.status !== 200) { status(r.data && r.data.check ? "The candidate does not check — see Rules." : errorText(r), true); return; }
  status("shadow started");
  renderShadow(r.data);
});
$("sh-refresh").addEventListener("click", loadShadow);
$("sh-discard").addEventListener("click", async () => {
  const r = await api("/shadow/discard", { method: "POST", body: {} });
  if (r.status === 200) { status("shadow discarded"); renderShadow(r.data); }
});
$("sh-promote").addEventListener("click", async () => {
  if (!window.confirm("Make the shadow candidate the active rules on this node?")) return;
  const r = await api("/shadow/promote", { method: "POST", body: {} });
  if (r.status !== 200) { status(errorText(r), true); return; }
  status(r.data.message);
  $("candidate").value = "";
  setTimeout(loadRules, 800);
  loadShadow();
});

// -- analytics ----------------------------------------------------------------------------------

function barChart(title, groups, id) {
  const rows = groups.slice(0, 30);
  const labelW = 220, plotW = 460, barH = 18, gap = 6;
  const height = 30 + rows.length * (barH + gap) + 24;
  const top = Math.max(0.0001, ...rows.map((g) => g.ctr_high));
  // Room right of the plot for a full bar's label, then the impressions column.
  const chart = svg("svg", { width: labelW + plotW + 150, height, role: "img", "aria-label": title, class: "chart", id });
  chart.append(svg("text", { x: 0, y: 16, class: "title" }, title));
  rows.forEach((g, i) => {
    const y = 28 + i * (barH + gap);
    const w = (plotW * g.ctr) / top;
    chart.append(svg("text", { x: labelW - 6, y: y + 13, "text-anchor": "end" }, g.group.join(" · ")));
    chart.append(svg("rect", { x: labelW, y, width: w.toFixed(1), height: barH, class: g.small ? "bar small" : "bar" }));
    const lo = labelW + (plotW * g.ctr_low) / top, hi = labelW + (plotW * g.ctr_high) / top;
    chart.append(svg("line", { x1: lo, x2: hi, y1: y + barH / 2, y2: y + barH / 2, class: "whisker" }));
    // The rate is written at the end of its bar (not of the whisker).
    chart.append(svg("text", { x: labelW + w + 4, y: y - 1 + barH / 2 + 4, class: "value" }, pct(g.ctr)));
    chart.append(svg("text", { x: labelW + plotW + 146, y: y + 13, "text-anchor": "end", class: "meta" }, num(g.impressions) + " impr."));
  });
  return chart;
}

function hourChart(groups) {
  const byHour = new Map(groups.map((g) => [g.group[0], g]));
  const W = 24 * 26, H = 160;
  const top = Math.max(1, ...groups.map((g) => g.impressions));
  const chart = svg("svg", { width: W + 40, height: H + 50, role: "img", "aria-label": "Impressions by hour", class: "chart", id: "chart-hour" });
  chart.append(svg("text", { x: 0, y: 16, class: "title" }, "Impressions by hour (UTC or the visitor's zone)"));
  for (let h = 0; h < 24; h++) {
    const g = byHour.get(String(h));
    const v = g ? g.impressions : 0;
    const bh = (H - 20) * v / top;
    chart.append(svg("rect", { x: 30 + h * 26, y: 24 + (H - 20) - bh, width: 20, height: bh, class: "bar" }));
    chart.append(svg("text", { x: 40 + h * 26, y: H + 20, "text-anchor": "middle" }, String(h)));
  }
  return chart;
}

async function loadAnalytics() {
  const r = await api("/analytics");
  if (r.status !== 200) { status(errorText(r), true); return; }
  const d = r.data;
  const out = [el("p", { class: "meta" }, d.records + " log records · rates with Wilson 95 % intervals")];
  if (!d.records) out.push(el("p", {}, "The decision log is empty: serve some decisions first."));
  if (d.small_groups) {
    out.push(el("p", { class: "warning", id: "small-sample" },
      "Small samples: " + d.small_groups + " variant(s) have fewer than " + d.small_threshold +
      " impressions. Their rates are too unsure to pick a winner — wait for more traffic."));
  }
  const v = d.views || {};
  if (v.variant && v.variant.length) out.push(barChart("Click-through rate by placement · variant", v.variant, "chart-variant"));
  if (d.lift && d.lift.length) {
    out.push(el("h3", {}, "Lift against the control / default"));
    out.push(table(["placement", "variant", "vs", "CTR", "reference CTR", "difference (95 % CI)", "ratio", ""],
      d.lift.map((l) => [l.placement, l.variant, l.reference, pct(l.ctr, 2), pct(l.reference_ctr, 2),
        (100 * l.diff).toFixed(2) + " pt (" + (100 * l.diff_low).toFixed(2) + " to " + (100 * l.diff_high).toFixed(2) + ")",
        l.ratio === null ? "–" : l.ratio.toFixed(2) + "×", l.small ? "small sample" : ""]), { id: "lift" }));
  }
  if (v.segment && v.segment.length) out.push(barChart("Click-through rate by segment", v.segment, "chart-segment"));
  if (v.country && v.country.length) out.push(barChart("Click-through rate by country", v.country, "chart-country"));
  if (v.hour && v.hour.length) {
    out.push(hourChart(v.hour));
    out.push(barChart("Click-through rate by hour", v.hour, "chart-hour-ctr"));
  }
  if (v.variant && v.variant.length) {
    out.push(el("h3", {}, "Table"));
    out.push(table(["Placement", "Variant", "Impressions", "Clicks", "Conversions", "CTR", "CTR 95 % CI", "Conversion rate", "CR 95 % CI"],
      v.variant.map((g) => [g.group[0], g.group[1], num(g.impressions), g.clicks, g.conversions, pct(g.ctr, 2),
        pct(g.ctr_low, 2) + " – " + pct(g.ctr_high, 2), pct(g.cr, 2), pct(g.cr_low, 2) + " – " + pct(g.cr_high, 2)]), { id: "analytics-table" }));
  }
  $("analytics-out").replaceChildren(...out);
}
$("an-refresh").addEventListener("click", loadAnalytics);

boot();
