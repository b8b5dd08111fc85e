// The dashboard: renders GET /api/overview and keeps it current by fetching it again
// every few seconds (no page reload). Everything from the network (peer names, block
// messages, minedBy) is set with textContent, never as HTML.
"use strict";

(function () {
  const script = document.currentScript;
  const REFRESH_MS = Number(script && script.dataset.refreshMs) || 2000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  let updates = 0;
  let lastOk = Date.now();

  const $ = (id) => document.getElementById(id);

  function fmtRate(r) {
    if (typeof r !== "number" || !isFinite(r)) return "–";
    if (r >= 1e9) return (r / 1e9).toFixed(2) + " GH/s";
    if (r >= 1e6) return (r / 1e6).toFixed(2) + " MH/s";
    if (r >= 1e3) return (r / 1e3).toFixed(2) + " kH/s";
    return r.toFixed(0) + " H/s";
  }

  function fmtDuration(s) {
    if (typeof s !== "number" || !isFinite(s) || s < 0) return "–";
    if (s < 10 && s !== Math.round(s)) return s.toFixed(1) + "s";
    s = Math.round(s);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function fmtNumber(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "–";
  }

  function setText(id, text) {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function linkCell(tr, text, href, cls) {
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function fillTable(id, rows, build) {
    const body = $(id).tBodies[0];
    const fresh = document.createElement("tbody");
    rows.forEach((row) => fresh.appendChild(build(row)));
    body.replaceWith(fresh);
  }

  // ---------------------------------------------------------------- cards

  function renderHeader(o) {
    const status = $("status");
    status.textContent = o.status;
    status.dataset.status = o.status;
    document.title = o.node.name + " · " + o.status;
    const banner = $("banner");
    const problems = [];
    if (o.status !== "ok") problems.push(o.status + (o.reason ? ": " + o.reason : ""));
    if (o.chain.error) problems.push("chain unavailable: " + o.chain.error);
    if (problems.length) {
      banner.textContent = problems.join(" · ");
      banner.className = o.status === "down" ? "banner bad" : "banner";
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }

  function renderSync(o) {
    const s = o.sync || {};
    const card = $("card-sync");
    card.classList.toggle("busy", s.state === "syncing");
    const bar = $("sync-bar");
    if (s.state === "syncing") {
      const pct = typeof s.percent === "number" ? s.percent : null;
      setText("sync-state", pct === null ? "syncing" : "syncing " + pct.toFixed(1) + "%");
      bar.hidden = pct === null;
      $("sync-bar-fill").style.width = (pct || 0).toFixed(1) + "%";
      const parts = [fmtNumber(s.fetched) + (s.total ? " / " + fmtNumber(s.total) : "") + " blocks"];
      if (typeof s.target_height === "number") parts.push("to " + fmtNumber(s.target_height));
      if (typeof s.rate === "number") parts.push(s.rate.toFixed(0) + " blocks/s");
      if (typeof s.eta_seconds === "number") parts.push("ETA " + fmtDuration(s.eta_seconds));
      setText("sync-detail", parts.join(" · "));
    } else {
      bar.hidden = true;
      const label = { alone: "on its own", "no peers": "no peers", "in sync": "in sync", behind: "behind",
                      checking: "asking peers" }[s.state] || String(s.state || "–");
      setText("sync-state", label);
      card.classList.toggle("problem", s.state === "behind");
      const best = s.best_claim;
      const who = best ? (best.name || best.address) : "";
      const when = best && typeof best.age === "number" ? ", " + fmtDuration(best.age) + " ago" : "";
      let detail = s.last_result ? "last round: " + s.last_result : "";
      if (s.state === "alone") detail = "no --peer: a private chain. Join with --peer HOST:PORT";
      else if (s.state === "behind") detail = who + " claims " + fmtNumber(best.height) + " blocks, we have " + fmtNumber(s.chain_height) + when + "; a sync round follows by itself";
      else if (s.state === "in sync" && typeof s.chain_height === "number" && best.height < s.chain_height) {
        detail = "ours is the longest chain known; best peer claim " + fmtNumber(best.height) + " blocks (" + who + when + ")";
      } else if (s.state === "in sync") detail = "level with " + who + ": " + fmtNumber(best.height) + " blocks" + when;
      else if (s.state === "checking") detail = "peers connected; waiting for their chain lengths";
      setText("sync-detail", detail);
    }
  }

  function renderChain(o) {
    const c = o.chain;
    setText("chain-height", fmtNumber(c.height));
    const parts = [];
    if (typeof c.top_index === "number") parts.push("top is #" + fmtNumber(c.top_index));
    if (typeof c.last_block_age === "number") parts.push("last block " + fmtDuration(c.last_block_age) + " ago");
    if (c.height === 0) parts.push("empty chain");
    setText("chain-detail", parts.join(" · "));
    $("card-chain").classList.toggle("problem", c.height === null || c.height === undefined);
  }

  function windowLabel(m) {
    return m.window_seconds ? "mean of the last " + fmtDuration(m.window_seconds) : "now (no sample yet)";
  }

  function renderMining(o) {
    const m = o.mining;
    setText("hashrate", fmtRate(m.total));
    const parts = [windowLabel(m)];
    if (m.expected_block_seconds) parts.push("a block every ~" + fmtDuration(m.expected_block_seconds));
    else if (!m.local_workers && !m.ray_workers && !m.external_clients) parts.push("not mining");
    const sources = [];
    if (m.local_workers) sources.push(m.local_workers + " local " + fmtRate(m.local));
    if (m.ray_workers) sources.push(m.ray_workers + " Ray " + fmtRate(m.ray));
    if (m.external_clients || m.external) sources.push(m.external_clients + " external " + fmtRate(m.external));
    if (sources.length) parts.push(sources.join(" + "));
    parts.push(m.blocks_found + " found");
    setText("hash-detail", parts.join(" · "));
  }

  function renderPeers(o) {
    const peers = o.peers || [];
    setText("peer-count", o.peers_error ? "?" : String(peers.length));
    const claims = peers.filter((p) => typeof p.claimed_height === "number");
    const best = claims.reduce((b, p) => (b === null || p.claimed_height > b.claimed_height ? p : b), null);
    const counts = o.peer_counts || {};
    let detail = o.peers_error ? o.peers_error : "";
    if (!detail && peers.length) detail = (counts.tried ?? 0) + " tried, " + (counts.new ?? 0) + " new";
    if (!o.peers_error && best) detail += " · highest claim " + fmtNumber(best.claimed_height) + " blocks" + (typeof best.claim_age === "number" ? ", " + fmtDuration(best.claim_age) + " ago" : "");
    if (!peers.length && !o.peers_error) detail = (o.node.peers_configured || []).length ? "waiting for " + o.node.peers_configured.join(", ") : "none: started without --peer";
    setText("peer-detail", detail);
    $("card-peers").classList.toggle("problem", Boolean(o.peers_error));
    fillTable("peers", peers, (p) => {
      const tr = document.createElement("tr");
      cell(tr, p.name || "");
      cell(tr, p.address, "hash");
      const claim = cell(tr, typeof p.claimed_height === "number" ? fmtNumber(p.claimed_height) : "–", "num");
      if (typeof p.claim_age === "number") {
        const age = document.createElement("span");
        age.className = "muted";
        age.textContent = " " + fmtDuration(p.claim_age) + " ago";
        claim.appendChild(age);
      }
      cell(tr, typeof p.last_seen_age === "number" ? fmtDuration(p.last_seen_age) + " ago" : "–");
      return tr;
    });
    const empty = $("peers-empty");
    empty.hidden = peers.length > 0;
    empty.textContent = o.peers_error || "no peers yet";
  }

  function renderUptime(o) {
    setText("uptime", fmtDuration(o.node.uptime_seconds));
    const p = o.process || {};
    const rss = typeof p.rss_bytes === "number" ? (p.rss_bytes / 1048576).toFixed(0) + " MiB" : "–";
    setText("process-detail", "pid " + (p.pid ?? "–") + " · CPU " + (typeof p.cpu_percent === "number" ? p.cpu_percent.toFixed(0) + "%" : "–") + " · " + rss);
  }

  // ---------------------------------------------------------------- tables

  function renderBlocks(o) {
    const blocks = o.latest_blocks || [];
    fillTable("blocks", blocks, (b) => {
      const tr = document.createElement("tr");
      linkCell(tr, String(b.height), "/block/" + b.height, "num");
      linkCell(tr, b.hash.slice(0, 16) + "…", "/block/" + b.hash, "hash");
      cell(tr, b.minedBy);
      cell(tr, (b.messages || []).join(", "));
      cell(tr, fmtDuration(o.now - b.timestamp));
      return tr;
    });
    $("blocks-empty").hidden = blocks.length > 0;
  }

  function renderWords(o) {
    const w = o.pending_words || { shown: [] };
    const list = $("words");
    const fresh = document.createElement("ol");
    fresh.id = "words";
    (w.shown || []).forEach((word) => {
      const li = document.createElement("li");
      li.textContent = word;
      fresh.appendChild(li);
    });
    list.replaceWith(fresh);
    setText("words-count", typeof w.count === "number" ? "(" + w.count + ")" : "");
    // No empty panel: the list shows only when words are queued; otherwise one muted line.
    const any = (w.shown || []).length > 0;
    $("words-panel").hidden = !any;
    $("words-empty").hidden = any;
  }

  function renderActors(o) {
    fillTable("actors", o.actors || [], (a) => {
      const tr = document.createElement("tr");
      const problem = !a.alive || a.details_error;
      if (problem || a.restarts > 0) tr.className = problem ? "problem" : "";
      cell(tr, a.name);
      // Busy (a message running, or a queue) is normal; hung (one message past its budget) is not.
      const activity = a.activity === "hung" ? "hung " + Math.round(a.busy_for || 0) + " s"
        : a.activity === "busy" ? "busy" + (a.busy_for ? " " + a.busy_for.toFixed(1) + " s" : "") : "running";
      cell(tr, a.alive ? activity : o.status === "down" ? "stopped" : "restarting",
           a.alive && a.activity !== "hung" ? "ok" : "bad");
      cell(tr, String(a.restarts ?? 0), a.restarts > 0 ? "num bad" : "num");
      cell(tr, a.details_error || a.last_error || "");
      cell(tr, a.queue_depth === null || a.queue_depth === undefined ? "" : String(a.queue_depth), "num");
      cell(tr, "hashrate" in a ? fmtRate(a.hashrate) : "", "num");
      cell(tr, a.pid ? String(a.pid) : "", "num");
      return tr;
    });
  }

  function renderProbes(o) {
    const probes = o.probes || [];
    fillTable("probes", probes, (p) => {
      const tr = document.createElement("tr");
      if (!p.ok) tr.className = "problem";
      cell(tr, p.name);
      cell(tr, p.part + (p.core ? "" : " (expendable)"));
      cell(tr, p.last_success_age === null || p.last_success_age === undefined ? "never"
               : p.last_success_age.toFixed(1) + " s ago", p.ok ? "ok" : "bad");
      cell(tr, p.last_error || "");
      return tr;
    });
    $("probes-empty").hidden = probes.length > 0;
  }

  // One supervisor or worker of /health's `supervision` tree: name, kind, state, strategy,
  // restarts and restart budget; anything not running, and the last error, highlighted.
  function treeItem(node) {
    const li = document.createElement("li");
    const state = String(node.state ?? (node.alive === false ? "down" : "running"));
    const good = ["running", "ok", "alive", "up"].includes(state.toLowerCase());
    const name = document.createElement("span");
    name.textContent = String(node.name ?? "?");
    if (node.kind === "supervisor") name.style.fontWeight = "600";
    li.appendChild(name);
    const info = document.createElement("span");
    info.className = good ? "state-ok" : "state-bad";
    const bits = [state.replace("_", " ")];
    if (node.strategy) bits.push(node.strategy.replaceAll("_", "-"));
    if (typeof node.restarts === "number" && node.restarts) bits.push(node.restarts + " restarts");
    const budget = node.intensity;
    if (budget && typeof budget.max_restarts === "number") {
      bits.push((budget.recent ?? 0) + "/" + budget.max_restarts + " restarts per " + fmtDuration(budget.period));
    }
    if (node.expendable) bits.push("expendable");
    info.textContent = " " + bits.join(" · ");
    li.appendChild(info);
    const problem = node.reason || (!good && node.last_error) || (node.restarts && node.last_error);
    if (problem) {
      const why = document.createElement("div");
      why.className = "state-bad";
      why.textContent = String(node.reason || node.last_error);
      li.appendChild(why);
    }
    const children = Array.isArray(node.children) ? node.children : [];
    if (children.length) {
      const ul = document.createElement("ul");
      children.forEach((c) => ul.appendChild(treeItem(c || {})));
      li.appendChild(ul);
    }
    return li;
  }

  function renderSupervision(o) {
    const box = $("supervision");
    if (!o.supervision || typeof o.supervision !== "object") return;
    const ul = document.createElement("ul");
    ul.className = "tree";
    ul.appendChild(treeItem(o.supervision));
    box.replaceChildren(ul);
  }

  // ---------------------------------------------------------------- charts (inline SVG)

  function svgEl(name, attrs, text) {
    const el = document.createElementNS(SVG_NS, name);
    Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, String(v)));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // A chart of [time, value] points over the last hour: a labelled y-axis (its unit named),
  // horizontal gridlines with their values, a time axis; `note` (top right) is the figure the
  // matching card shows, so the two always agree.
  function drawChart(id, points, now, fmt, dots, unit, note, minTop) {
    const svg = $(id);
    const W = 320, H = 110, L = 46, R = 316, T = 14, B = 96;
    // The last hour, or since the first sample when the node is younger (at least 5 minutes).
    const first = points.length ? points[0][0] : now;
    const span = Math.min(3600, Math.max(300, now - first));
    const parts = [];
    const values = points.map((p) => p[1]).filter((v) => typeof v === "number" && isFinite(v));
    const max = values.length ? Math.max(...values) : 0;
    const top = Math.max(minTop || 0, niceTop(max * 1.05));
    const x = (t) => L + (R - L) * Math.min(1, Math.max(0, 1 - (now - t) / span));
    const y = (v) => B - (B - T) * (v / top);
    [0, 0.5, 1].forEach((f) => {  // gridlines at 0, half and the top of the scale, labelled
      const v = top * f;
      parts.push(svgEl("line", { x1: L, y1: y(v).toFixed(1), x2: R, y2: y(v).toFixed(1), class: f ? "grid" : "axis" }));
      parts.push(svgEl("text", { x: L - 3, y: (y(v) + 3).toFixed(1), "text-anchor": "end", class: "tick" }, f ? fmt(v) : "0"));
    });
    parts.push(svgEl("line", { x1: L, y1: T, x2: L, y2: B, class: "axis" }));
    parts.push(svgEl("text", { x: 2, y: 10, class: "unit" }, unit));
    if (note) parts.push(svgEl("text", { x: R, y: 10, "text-anchor": "end" }, note));
    if (values.length) {
      const coords = points.filter((p) => typeof p[1] === "number").map((p) => [x(p[0]), y(p[1])]);
      if (!dots && coords.length > 1) {
        const d = coords.map((c, i) => (i ? "L" : "M") + c[0].toFixed(1) + " " + c[1].toFixed(1)).join(" ");
        parts.push(svgEl("path", { d: d + " L" + coords[coords.length - 1][0].toFixed(1) + " " + B + " L" + coords[0][0].toFixed(1) + " " + B + " Z", class: "area" }));
        parts.push(svgEl("path", { d: d, class: "line" }));
      } else {
        coords.forEach((c) => parts.push(svgEl("circle", { cx: c[0].toFixed(1), cy: c[1].toFixed(1), r: 2.2, class: "dot" })));
      }
    } else {
      parts.push(svgEl("text", { x: (L + R) / 2, y: 55, "text-anchor": "middle" }, "no data yet"));
    }
    parts.push(svgEl("text", { x: L, y: H - 2 }, "−" + Math.round(span / 60) + " min"));
    parts.push(svgEl("text", { x: R, y: H - 2, "text-anchor": "end" }, "now"));
    svg.replaceChildren(...parts);
  }

  function renderCharts(o) {
    const c = o.charts || {};
    const m = o.mining || {};
    const rate = fmtRate(m.total);
    setText("chart-hashrate-note", "(" + rate + ", " + windowLabel(m) + ")");
    const unit = rateUnit(c.hashrate || []);
    drawChart("chart-hashrate", c.hashrate || [], o.now, (v) => num(v / unit[1]), false, unit[0], rate);
    drawChart("chart-interval", c.block_interval || [], o.now, num, true, "seconds", "");
    drawChart("chart-peers", c.peers || [], o.now, num, false, "peers", String((o.peers || []).length) + " now", 2);
  }

  // A round top for a y-axis: 1, 2, 2.5 or 5 times a power of ten, at least `max`.
  function niceTop(max) {
    if (!(max > 0)) return 1;
    const e = Math.pow(10, Math.floor(Math.log10(max)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= max) return m * e;
    return 10 * e;
  }

  function num(v) {
    return String(Number(v.toPrecision(3)));
  }

  // The hash-rate chart's unit and its scale: the one fmtRate picks for the largest value.
  function rateUnit(points) {
    const max = points.reduce((b, p) => (typeof p[1] === "number" && p[1] > b ? p[1] : b), 0);
    if (max >= 1e9) return ["GH/s", 1e9];
    if (max >= 1e6) return ["MH/s", 1e6];
    if (max >= 1e3) return ["kH/s", 1e3];
    return ["H/s", 1];
  }

  // ---------------------------------------------------------------- loop

  function render(o) {
    renderHeader(o);
    renderSync(o);
    renderChain(o);
    renderMining(o);
    renderPeers(o);
    renderUptime(o);
    renderBlocks(o);
    renderWords(o);
    renderActors(o);
    renderProbes(o);
    renderSupervision(o);
    renderCharts(o);
    updates += 1;
    document.body.dataset.updates = String(updates);
    document.body.dataset.height = String(o.chain.height);
    setText("updated", new Date(o.now * 1000).toLocaleTimeString());
  }

  async function poll() {
    try {
      const response = await fetch("/api/overview", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      lastOk = Date.now();
    } catch (err) {
      const banner = $("banner");
      banner.textContent = "the node is not answering (" + err.message + "); last update " + fmtDuration((Date.now() - lastOk) / 1000) + " ago";
      banner.className = "banner bad";
      banner.hidden = false;
    } finally {
      setTimeout(poll, REFRESH_MS);
    }
  }

  render(JSON.parse($("initial").textContent));
  setTimeout(poll, REFRESH_MS);
})();
