// The dashboard's script: keeps the tables current from /api/events, draws the charts of
// /api/history as inline SVG, sends the controls' POSTs with the token, and follows an
// instance's log from /api/logs. Builds every element with DOM calls and text nodes only:
// nothing from a unit name, queue name or log line is ever parsed as HTML. Loads nothing
// from the network but this corrald.
(function () {
  "use strict";
  var main = document.getElementById("page");
  if (!main) return;
  var kind = main.dataset.page;
  var controls = main.dataset.controls === "1";
  var live = document.getElementById("live");
  var token = null; // kept in this page's memory only: never stored, never in a URL
  var SVG = "http://www.w3.org/2000/svg";

  function text(v) { return v === null || v === undefined ? "-" : String(v); }
  function el(tag, attrs, content) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (content !== undefined) e.textContent = content;
    return e;
  }
  function dur(ms) {
    if (typeof ms !== "number") return "-";
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
  }
  function exit(e) { return !e ? "-" : ("code" in e ? "exit " + e.code : "signal " + e.signal); }
  function getJSON(url) {
    return fetch(url, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      return r.json();
    });
  }

  // ---- controls: start / stop / restart a unit, cancel a pool job ----------------------
  var status = document.getElementById("token-state");
  function say(msg, bad) {
    if (!status) return;
    status.textContent = msg;
    status.className = bad ? "bad" : "muted";
  }
  function enableButtons() {
    document.querySelectorAll("button.action, button.cancel").forEach(function (b) {
      b.disabled = token === null;
    });
  }
  function post(path, what) {
    say(what + "…");
    return fetch(path, { method: "POST", headers: { "Authorization": "Bearer " + token } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (r.ok) { say(what + ": done"); return; }
          if (r.status === 401) { token = null; enableButtons(); }
          say(what + ": " + (body.message || "HTTP " + r.status), true);
        });
      })
      .catch(function (e) { say(what + ": " + e.message, true); });
  }
  if (controls) {
    var form = document.getElementById("token-form");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var input = document.getElementById("token");
      token = input.value || null;
      input.value = "";
      say(token === null ? "read-only" : "token set (this page only)");
      enableButtons();
    });
    document.addEventListener("click", function (ev) {
      var b = ev.target;
      if (!(b instanceof HTMLButtonElement) || token === null) return;
      if (b.classList.contains("action")) {
        var unit = b.dataset.unit, action = b.dataset.action;
        post("/api/units/" + encodeURIComponent(unit) + "/" + action, action + " " + unit);
      } else if (b.classList.contains("cancel")) {
        post("/api/pools/" + encodeURIComponent(b.dataset.job) + "/cancel", "cancel job " + b.dataset.job);
      }
    });
  }
  function unitButtons(name) {
    var span = document.createElement("span");
    ["start", "stop", "restart"].forEach(function (a) {
      var b = el("button", { "class": "action", "data-unit": name, "data-action": a }, a);
      b.disabled = token === null;
      span.appendChild(b);
    });
    return { node: span };
  }
  function cancelButton(job) {
    var b = el("button", { "class": "cancel", "data-job": String(job) }, "cancel");
    b.disabled = token === null;
    return { node: b };
  }

  // ---- charts: inline SVG line charts of /api/history ---------------------------------
  var W = 320, H = 110, PAD_L = 44, PAD_B = 16, PAD_T = 6;
  function fmt(v, unit) {
    if (unit === "bytes") {
      if (v >= 1073741824) return (v / 1073741824).toFixed(1) + " GiB";
      if (v >= 1048576) return (v / 1048576).toFixed(1) + " MiB";
      return (v / 1024).toFixed(0) + " KiB";
    }
    if (unit === "%") return v.toFixed(v < 10 ? 1 : 0) + "%";
    if (unit === "/s") return v.toFixed(v < 10 ? 1 : 0) + "/s";
    return v >= 100 ? v.toFixed(0) : String(Math.round(v * 10) / 10);
  }
  // lines: [{label, points: [[ms, v]...], cls}], opts: {title, unit, window_ms, now, max}
  function chart(id, title, lines, opts) {
    var box = el("figure", { "class": "chart", "data-chart": id });
    box.appendChild(el("figcaption", {}, title));
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title);
    // The x axis spans the history there is (at least a minute), up to the whole window.
    var first = opts.now;
    lines.forEach(function (l) { if (l.points.length && l.points[0][0] < first) first = l.points[0][0]; });
    var span = Math.min(opts.window_ms, Math.max(60000, opts.now - first));
    var t1 = opts.now, t0 = t1 - span;
    var max = opts.max || 0;
    lines.forEach(function (l) { l.points.forEach(function (p) { if (p[1] > max) max = p[1]; }); });
    if (max <= 0) max = 1;
    var x = function (t) { return PAD_L + (W - PAD_L - 4) * Math.max(0, t - t0) / (t1 - t0); };
    var y = function (v) { return PAD_T + (H - PAD_T - PAD_B) * (1 - v / max); };
    function add(tag, attrs, content) {
      var e = document.createElementNS(SVG, tag);
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      if (content !== undefined) e.textContent = content;
      svg.appendChild(e);
      return e;
    }
    [0, 0.5, 1].forEach(function (f) {
      add("line", { x1: PAD_L, x2: W - 4, y1: y(max * f), y2: y(max * f), "class": "grid" });
      add("text", { x: PAD_L - 4, y: y(max * f) + 4, "text-anchor": "end", "class": "axis" }, fmt(max * f, opts.unit));
    });
    add("text", { x: PAD_L, y: H - 3, "class": "axis" }, "-" + (span >= 120000 ? Math.round(span / 60000) + "m" : Math.round(span / 1000) + "s"));
    add("text", { x: W - 4, y: H - 3, "text-anchor": "end", "class": "axis" }, "now");
    lines.forEach(function (l) {
      if (l.points.length === 0) return;
      var d = l.points.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" ");
      if (l.points.length === 1) {
        var p = l.points[0];
        add("circle", { cx: x(p[0]), cy: y(p[1]), r: 2, "class": "series " + l.cls });
      } else {
        add("polyline", { points: d, "class": "series " + l.cls });
      }
    });
    box.appendChild(svg);
    var legend = el("div", { "class": "legend" });
    lines.forEach(function (l) {
      var last = l.points.length ? l.points[l.points.length - 1][1] : null;
      var item = el("span", { "class": "key " + l.cls });
      item.appendChild(el("i", {}));
      item.appendChild(document.createTextNode(l.label + " " + (last === null ? "-" : fmt(last, opts.unit))));
      legend.appendChild(item);
    });
    box.appendChild(legend);
    return box;
  }
  // A copy of part of /api/history kept current with since_ms, so each refresh moves only
  // the points that are new (a unit with hundreds of instances stays cheap to watch).
  function Cache(query) {
    var series = {}, last = null, window_ms = 600000;
    this.refresh = function () {
      var url = "/api/history?" + query + (last === null ? "" : "&since_ms=" + last);
      return getJSON(url).then(function (h) {
        window_ms = h.window_ms;
        (h.series || []).forEach(function (s) {
          var key = [s.kind, s.name, s.instance, s.metric].join("\u0000");
          var have = series[key] || (series[key] = { name: s.name, instance: s.instance, metric: s.metric, points: [] });
          s.points.forEach(function (p) {
            have.points.push(p);
            if (last === null || p[0] > last) last = p[0];
          });
        });
        var oldest = (last || 0) - window_ms;
        Object.keys(series).forEach(function (k) {
          var pts = series[k].points;
          while (pts.length && pts[0][0] < oldest) pts.shift();
          if (pts.length === 0) delete series[k];
        });
        return { window_ms: window_ms, series: Object.keys(series).map(function (k) { return series[k]; }) };
      });
    };
  }
  // Groups series by name (and instance): {name: {metric: points}}.
  function group(history) {
    var out = {};
    (history.series || []).forEach(function (s) {
      var key = s.instance === null || s.instance === undefined ? s.name : s.name + "." + s.instance;
      (out[key] = out[key] || { name: s.name, instance: s.instance })[s.metric] = s.points;
    });
    return out;
  }
  function place(id, charts) {
    var holder = document.getElementById(id);
    if (!holder) return;
    while (holder.firstChild) holder.removeChild(holder.firstChild);
    charts.forEach(function (c) { holder.appendChild(c); });
  }
  function showCharts(any) {
    var section = document.getElementById("charts");
    if (section) section.hidden = !any;
  }
  var queueHistory = new Cache("kind=queue"), poolHistory = new Cache("kind=pool");
  function dashboardCharts() {
    return Promise.all([queueHistory.refresh(), poolHistory.refresh()])
      .then(function (r) {
        var now = Date.now();
        var q = group(r[0]), p = group(r[1]);
        var qc = Object.keys(q).sort().map(function (name) {
          var s = q[name];
          var pair = el("div", { "class": "pair" });
          pair.appendChild(chart("queue-" + name, "queue " + name + ": depth", [
            { label: "depth", points: s.depth || [], cls: "s0" }], { unit: "", window_ms: r[0].window_ms, now: now }));
          pair.appendChild(chart("queue-rate-" + name, "queue " + name + ": put/get per second", [
            { label: "put", points: s.put_rate || [], cls: "s1" },
            { label: "get", points: s.got_rate || [], cls: "s2" }], { unit: "/s", window_ms: r[0].window_ms, now: now }));
          return pair;
        });
        var pc = Object.keys(p).sort(function (a, b) { return Number(a) - Number(b); }).map(function (id) {
          var s = p[id];
          var total = s.total && s.total.length ? s.total[s.total.length - 1][1] : 0;
          var pair = el("div", { "class": "pair" });
          pair.appendChild(chart("pool-" + id, "pool job " + id + ": items done of " + total, [
            { label: "done", points: s.done || [], cls: "s0" }], { unit: "", window_ms: r[1].window_ms, now: now, max: total }));
          pair.appendChild(chart("pool-rate-" + id, "pool job " + id + ": items per second", [
            { label: "rate", points: s.rate || [], cls: "s1" }], { unit: "/s", window_ms: r[1].window_ms, now: now }));
          return pair;
        });
        place("queue-charts", qc);
        place("pool-charts", pc);
        showCharts(qc.length + pc.length > 0);
      });
  }
  var MAX_INSTANCE_CHARTS = 12;
  var instanceHistory = null;
  function unitCharts(unit) {
    instanceHistory = instanceHistory || new Cache("kind=instance&name=" + encodeURIComponent(unit));
    return instanceHistory.refresh().then(function (h) {
      var now = Date.now();
      var g = group(h);
      var keys = Object.keys(g).sort(function (a, b) { return g[a].instance - g[b].instance; });
      var note = document.getElementById("charts-note");
      if (note) note.textContent = keys.length > MAX_INSTANCE_CHARTS
        ? "the first " + MAX_INSTANCE_CHARTS + " of " + keys.length + " instances" : "";
      var charts = keys.slice(0, MAX_INSTANCE_CHARTS).map(function (key) {
        var s = g[key];
        var pair = el("div", { "class": "pair" });
        pair.appendChild(chart("cpu-" + s.instance, "instance " + s.instance + ": CPU", [
          { label: "cpu", points: s.cpu_pct || [], cls: "s1" }], { unit: "%", window_ms: h.window_ms, now: now, max: 100 }));
        pair.appendChild(chart("rss-" + s.instance, "instance " + s.instance + ": memory (RSS)", [
          { label: "rss", points: s.rss_bytes || [], cls: "s2" }], { unit: "bytes", window_ms: h.window_ms, now: now }));
        return pair;
      });
      place("instance-charts", charts);
      showCharts(charts.length > 0);
    });
  }
  function every(ms, f) {
    var run = function () {
      f().catch(function () { /* shown as stale; tried again */ }).then(function () { setTimeout(run, ms); });
    };
    run();
  }

  // ---- the dashboard's tables, from /api/events ---------------------------------------
  var previous = null; // the last snapshot's queue totals and time, for rates
  function fill(id, rows) {
    var table = document.getElementById(id);
    if (!table) return;
    var body = document.createElement("tbody");
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (c) {
        var td = document.createElement("td");
        if (c && c.node) td.appendChild(c.node); else td.textContent = text(c);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
    if (id !== "units") table.closest("section").hidden = rows.length === 0;
  }
  function badge(state) {
    var span = el("span", { "class": "state " + state }, state);
    return { node: span };
  }
  function link(name, parent) {
    var a = el("a", { href: "/units/" + encodeURIComponent(name) }, name);
    if (!parent) return { node: a };
    // A transient unit started by a program (run's parent): name that program.
    var span = el("span", {}, "");
    span.appendChild(a);
    span.appendChild(el("span", { "class": "muted" },
      " of " + (parent.label || "") + (parent.pid ? " (pid " + parent.pid + ")" : "")));
    return { node: span };
  }
  // Readiness and health in a word, as the server-rendered page shows them.
  function checks(i) {
    if (i.healthy === false) return "failing " + i.health_failures;
    if (i.healthy === true) return "healthy";
    if (i.ready === false) return "not ready";
    if (i.ready === true) return "ready";
    return "-";
  }
  function render(s) {
    var rows = [];
    ((s.status || {}).units || []).forEach(function (u) {
      if (u.loaded === false) {
        var b = badge("not-loaded");
        b.node.textContent = "not loaded";
        rows.push([u.name, "-", b, "-", "-", "-", "-", "-", "-", "-", (u.errors || []).join("; ")]);
      }
      u.instances.forEach(function (i, n) {
        var st = i.pid ? (s.processes || {})[String(i.pid)] : null;
        var row = [link(u.name, u.parent), i.instance, badge(i.state), i.pid, dur(i.uptime_ms), i.restarts,
          exit(i.last_exit), st ? st.cpu_pct + "%" : "-",
          st ? (st.rss_bytes / 1048576).toFixed(1) + " MiB" : "-", checks(i),
          i.reason || (i.check_error ? "check: " + i.check_error : "")];
        if (controls) row.push(n === 0 ? unitButtons(u.name) : "");
        rows.push(row);
      });
    });
    fill("units", rows);
    var now = Date.now();
    var totals = {};
    fill("queues", ((s.queues || {}).queues || []).map(function (q) {
      totals[q.queue] = [q.put_total, q.got_total];
      var rate = function (k) {
        var before = previous && previous.totals[q.queue];
        if (!before) return "-";
        var secs = Math.max(0.001, (now - previous.at) / 1000);
        return ((totals[q.queue][k] - before[k]) / secs).toFixed(1);
      };
      return [q.queue, q.depth, q.in_flight || 0, q.put_total, q.got_total, rate(0), rate(1), q.waiting_getters]; }));
    previous = { at: now, totals: totals };
    fill("counters", ((s.counters || {}).counters || []).map(function (c) { return [c.counter, c.value]; }));
    fill("arrays", ((s.arrays || {}).arrays || []).map(function (a) { return [a.array, a.kind, a.length]; }));
    fill("locks", ((s.locks || {}).locks || []).map(function (l) {
      var h = l.holder || {};
      var who = h.unit ? h.unit + "." + h.instance : (h.pid ? "pid " + h.pid : "-");
      return [l.lock, who, dur(h.held_ms), l.waiters]; }));
    fill("nodes", ((s.nodes || {}).nodes || []).map(function (n) {
      return [n.node, n.alive ? "alive" : "expired", dur(n.heartbeat_age_ms) + " ago", dur(n.lease_ms),
        n.locks.join(", "), n.lock_waiters]; }));
    fill("pools", ((s.pools || {}).jobs || []).map(function (j) {
      var p = document.createElement("progress");
      p.max = Math.max(1, j.total); p.value = j.succeeded + j.failed;
      var end = j.finished_ms || Date.now();
      var rate = (j.succeeded + j.failed) / Math.max(0.001, (end - j.created_ms) / 1000);
      var row = [j.job, j.name || "-", j.state, { node: p }, j.succeeded, j.failed, j.running, j.total,
        rate.toFixed(1)];
      if (controls) row.push(j.state === "running" ? cancelButton(j.job) : "");
      return row; }));
    fill("events", (s.events || []).map(function (e) {
      var who = e.unit ? (e.instance !== null && e.instance !== undefined ? e.unit + "." + e.instance : e.unit) : "corrald";
      return [who, e.kind, e.detail]; }));
  }

  // ---- an instance's log, followed --------------------------------------------------
  var MAX_LINES = 2000; // lines kept on the page; older ones are dropped
  function followLog(unit, instance) {
    var pre = document.getElementById("log");
    var follow = document.getElementById("follow");
    var offset = null;
    var url = "/api/logs/" + encodeURIComponent(unit) + "/" + encodeURIComponent(instance);
    function append(lines) {
      if (lines.length === 0) return;
      pre.appendChild(document.createTextNode(lines.join("\n") + "\n"));
      // Text nodes are appended; when the page holds too many lines, keep the newest.
      var all = pre.textContent.split("\n");
      if (all.length > MAX_LINES + 1) pre.textContent = all.slice(all.length - MAX_LINES - 1).join("\n");
      if (follow.checked) window.scrollTo(0, document.body.scrollHeight);
    }
    function poll() {
      return getJSON(url + (offset === null ? "" : "?offset=" + offset)).then(function (c) {
        if (c.reset) append(["-- the log was rotated; reading on from its new end --"]);
        append(c.lines);
        offset = c.next;
        live.textContent = "following · " + c.size + " bytes · " + new Date().toLocaleTimeString();
        if (c.more) return poll();
      }, function (e) { live.textContent = "retrying: " + e.message; });
    }
    every(1000, poll);
  }

  if (kind === "dashboard" && window.EventSource) {
    var source = new EventSource("/api/events");
    source.addEventListener("snapshot", function (ev) {
      render(JSON.parse(ev.data));
      live.textContent = "live · " + new Date().toLocaleTimeString();
    });
    source.onerror = function () { live.textContent = "reconnecting…"; };
    every(2000, dashboardCharts);
  } else if (kind === "unit") {
    every(2000, function () { return unitCharts(main.dataset.unit); });
  } else if (kind === "log") {
    followLog(main.dataset.unit, main.dataset.instance);
  }
})();
