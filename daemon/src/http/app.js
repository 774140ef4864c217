// Keeps the dashboard current from /api/events. Builds cells with text nodes only:
// nothing from a unit name, queue name or log line is ever parsed as HTML.
(function () {
  "use strict";
  if (!document.getElementById("units") || !window.EventSource) return;
  var live = document.getElementById("live");
  var previous = null; // the last snapshot's queue totals and time, for rates

  function text(v) { return v === null || v === undefined ? "-" : String(v); }
  function dur(ms) {
    if (typeof ms !== "number") return "-";
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
  }
  function exit(e) { return !e ? "-" : ("code" in e ? "exit " + e.code : "signal " + e.signal); }
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
    var span = document.createElement("span");
    span.className = "state " + state;
    span.textContent = state;
    return { node: span };
  }
  function link(name) {
    var a = document.createElement("a");
    a.href = "/units/" + encodeURIComponent(name);
    a.textContent = name;
    return { node: a };
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
      u.instances.forEach(function (i) {
        var st = i.pid ? (s.processes || {})[String(i.pid)] : null;
        rows.push([link(u.name), i.instance, badge(i.state), i.pid, dur(i.uptime_ms), i.restarts,
          exit(i.last_exit), st ? st.cpu_pct + "%" : "-",
          st ? (st.rss_bytes / 1048576).toFixed(1) + " MiB" : "-", checks(i),
          i.reason || (i.check_error ? "check: " + i.check_error : "")]);
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
      return [q.queue, q.depth, q.put_total, q.got_total, rate(0), rate(1), q.waiting_getters]; }));
    previous = { at: now, totals: totals };
    fill("counters", ((s.counters || {}).counters || []).map(function (c) { return [c.counter, c.value]; }));
    fill("arrays", ((s.arrays || {}).arrays || []).map(function (a) { return [a.array, a.kind, a.length]; }));
    fill("locks", ((s.locks || {}).locks || []).map(function (l) {
      var h = l.holder || {};
      var who = h.unit ? h.unit + "." + h.instance : (h.pid ? "pid " + h.pid : "-");
      return [l.lock, who, dur(h.held_ms), l.waiters]; }));
    fill("pools", ((s.pools || {}).jobs || []).map(function (j) {
      var p = document.createElement("progress");
      p.max = Math.max(1, j.total); p.value = j.succeeded + j.failed;
      var end = j.finished_ms || Date.now();
      var rate = (j.succeeded + j.failed) / Math.max(0.001, (end - j.created_ms) / 1000);
      return [j.job, j.name || "-", j.state, { node: p }, j.succeeded, j.failed, j.running, j.total,
        rate.toFixed(1)]; }));
    fill("events", (s.events || []).map(function (e) {
      var who = e.unit ? (e.instance !== null && e.instance !== undefined ? e.unit + "." + e.instance : e.unit) : "corrald";
      return [who, e.kind, e.detail]; }));
  }
  var source = new EventSource("/api/events");
  source.addEventListener("snapshot", function (ev) {
    render(JSON.parse(ev.data));
    live.textContent = "live · " + new Date().toLocaleTimeString();
  });
  source.onerror = function () { live.textContent = "reconnecting…"; };
})();
