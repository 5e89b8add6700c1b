// kling-budget dashboard: reads /admin/api with the admin token kept in sessionStorage and draws
// everything with DOM calls (textContent only, so names from the ledger can never inject markup).
// Amounts are shown exactly as the API sends them; numbers are parsed only to place chart geometry.
(function () {
  "use strict";

  var API = "/admin/api";
  var TOKEN_KEY = "kling-budget.admin-token";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var query = new URLSearchParams(window.location.search);
  var refreshSeconds = Math.min(3600, Math.max(1, parseInt(query.get("refresh") || "5", 10) || 5));
  var timeZone = (Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
  var timer = null;
  var paused = false;
  var busy = false;
  var pending = false;
  var optionsLoadedAt = 0;
  var last = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, children) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, String(value));
    });
  }

  function append(node, children) {
    if (children === null || children === undefined) return;
    (Array.isArray(children) ? children : [children]).forEach(function (child) {
      if (child === null || child === undefined || child === false) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function usd(value) { return value === null || value === undefined ? "–" : "$" + value; }
  function units(value) { return value === null || value === undefined ? "–" : value + " units"; }
  function num(value) { var n = parseFloat(value); return isFinite(n) ? n : 0; }

  var dateTime = new Intl.DateTimeFormat(undefined, {
    timeZone: timeZone, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23"
  });
  var dayOnly = new Intl.DateTimeFormat(undefined, { timeZone: timeZone, month: "short", day: "numeric" });
  var hourOnly = new Intl.DateTimeFormat(undefined, {
    timeZone: timeZone, hour: "2-digit", minute: "2-digit", hourCycle: "h23"
  });
  var clock = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
  });

  var dateTimeYear = new Intl.DateTimeFormat(undefined, {
    timeZone: timeZone, year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23"
  });

  function when(iso) {
    if (!iso) return "never";
    var date = new Date(iso);
    return (date.getFullYear() === new Date().getFullYear() ? dateTime : dateTimeYear).format(date);
  }

  function timeEl(iso) {
    return el("time", { datetime: iso, text: when(iso) });
  }

  // ------------------------------------------------------------------------------------ token and API

  function token() { return window.sessionStorage.getItem(TOKEN_KEY) || ""; }

  function AuthError(message) { this.message = message; }

  function api(path, params) {
    var url = new URL(API + path, window.location.origin);
    Object.keys(params || {}).forEach(function (name) {
      var value = params[name];
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, String(value));
    });
    return fetch(url.toString(), {
      headers: { "Authorization": "Bearer " + token(), "Accept": "application/json" },
      cache: "no-store",
      credentials: "omit"
    }).then(function (response) {
      if (response.status === 401) throw new AuthError("The admin token was refused. Enter it again.");
      return response.json().catch(function () { return null; }).then(function (body) {
        if (!response.ok) {
          var message = body && body.error && body.error.message ? body.error.message : "HTTP " + response.status;
          throw new Error(message);
        }
        return body;
      });
    });
  }

  function showLogin(message) {
    var dialog = $("login");
    var error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("token").value = "";
    if (!dialog.open) dialog.showModal();
    $("token").focus();
  }

  function signOut(message) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    last = null;
    showLogin(message);
  }

  // ------------------------------------------------------------------------------------ filters

  function filters() {
    return {
      project: $("f-project").value,
      user: $("f-user").value,
      model: $("f-model").value,
      period: $("f-period").value,
      metric: $("f-metric").value
    };
  }

  function restoreFilters() {
    ["project", "user", "model"].forEach(function (name) {
      var value = query.get(name);
      if (value) ensureOption($("f-" + name), value);
    });
    ["period", "metric"].forEach(function (name) {
      var value = query.get(name);
      var select = $("f-" + name);
      if (value && Array.prototype.some.call(select.options, function (o) { return o.value === value; })) {
        select.value = value;
      }
    });
  }

  function saveFilters() {
    var f = filters();
    var next = new URLSearchParams();
    if (query.get("refresh")) next.set("refresh", query.get("refresh"));
    Object.keys(f).forEach(function (name) {
      var isDefault = (name === "period" && f[name] === "month") || (name === "metric" && f[name] === "usd");
      if (f[name] && !isDefault) next.set(name, f[name]);
    });
    var search = next.toString();
    window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  }

  function ensureOption(select, value) {
    var found = Array.prototype.some.call(select.options, function (o) { return o.value === value; });
    if (!found) select.appendChild(el("option", { value: value, text: value }));
    select.value = value;
  }

  function fillOptions(select, values) {
    var current = select.value;
    var first = select.options[0];
    clear(select);
    select.appendChild(first);
    values.forEach(function (value) { select.appendChild(el("option", { value: value, text: value })); });
    if (current) ensureOption(select, current);
    else select.value = "";
  }

  function updateOptions(usage) {
    var sets = { project: {}, user: {}, model: {} };
    usage.rows.forEach(function (row) {
      Object.keys(sets).forEach(function (name) {
        if (row.group[name]) sets[name][row.group[name]] = true;
      });
    });
    Object.keys(sets).forEach(function (name) {
      fillOptions($("f-" + name), Object.keys(sets[name]).sort());
    });
  }

  // ------------------------------------------------------------------------------------ refresh

  function refresh() {
    if (!token()) return Promise.resolve();
    if (busy) { pending = true; return Promise.resolve(); }
    busy = true;
    var f = filters();
    var scope = { project: f.project, user: f.user, model: f.model };
    var needOptions = Date.now() - optionsLoadedAt > 60000;
    var requests = [
      api("/budgets", scope),
      api("/usage/series", Object.assign({ period: f.period, timezone: timeZone,
        pack_type: f.metric === "units" ? "video" : "" }, scope)),
      api("/usage", Object.assign({ group_by: "pack_type", period: f.period, timezone: timeZone }, scope)),
      api("/reservations", Object.assign({ limit: 15 }, scope)),
      api("/holds", Object.assign({ limit: 50 }, scope)),
      api("/alerts", { limit: 15 }),
      needOptions ? api("/usage", { group_by: "project,user,model", period: "last-90d", timezone: timeZone }) : null
    ];
    return Promise.all(requests).then(function (r) {
      last = { budgets: r[0].budgets, series: r[1], usage: r[2], jobs: r[3].reservations, holds: r[4],
        alerts: r[5].alerts, metric: f.metric };
      if (r[6]) { updateOptions(r[6]); optionsLoadedAt = Date.now(); }
      render(last);
      hideError();
      $("updated").textContent = "Updated at " + clock.format(new Date()) +
        (paused ? " · auto-refresh paused" : " · every " + refreshSeconds + " s");
      document.body.setAttribute("data-loaded", String(Date.now()));
    }).catch(function (error) {
      if (error instanceof AuthError) signOut(error.message);
      else showError("Could not refresh: " + (error && error.message ? error.message : String(error)));
    }).then(function () {
      busy = false;
      if (pending) { pending = false; refresh(); }
    });
  }

  function showError(message) { var e = $("error"); e.textContent = message; e.hidden = false; }
  function hideError() { $("error").hidden = true; }

  function startTimer() {
    if (timer) window.clearInterval(timer);
    timer = window.setInterval(function () { if (!paused && !document.hidden) refresh(); }, refreshSeconds * 1000);
  }

  // ------------------------------------------------------------------------------------ rendering

  function render(data) {
    renderTiles(data);
    renderChart(data);
    renderBudgets(data.budgets);
    renderJobs(data.jobs);
    renderHolds(data.holds);
    renderAlerts(data.alerts);
  }

  function field(name, value, text) {
    return el("span", { "data-field": name, "data-value": value === null ? "" : value, text: text });
  }

  function renderTiles(data) {
    var totals = data.usage.totals;
    setTile("t-committed", "committed_usd", totals.committed_usd, usd(totals.committed_usd));
    setTile("t-held", "held_usd", totals.held_usd, usd(totals.held_usd));
    setTile("t-holds", "holds_usd", data.holds.held_usd, usd(data.holds.held_usd));
    setTile("t-jobs", "jobs", String(totals.jobs), String(totals.jobs) + " committed");
    var byPack = data.usage.rows.filter(function (row) { return num(row.committed_units) || num(row.held_units); });
    $("t-committed-units").textContent = byPack.map(function (row) {
      return row.committed_units + " " + row.group.pack_type + " units";
    }).join(" · ") || "no units";
    $("t-held-units").textContent = byPack.map(function (row) {
      return row.held_units + " " + row.group.pack_type + " units";
    }).join(" · ") || "no units";
    $("t-holds-count").textContent = data.holds.count + (data.holds.count === 1 ? " job running" : " jobs running") +
      (data.holds.truncated ? " (more not shown)" : "");
    $("t-range").textContent = when(data.usage.start) + " – " + when(data.usage.end);
  }

  function setTile(id, name, value, text) {
    var node = $(id);
    clear(node);
    node.appendChild(field(name, value, text));
  }

  function amountLines(b, kind) {
    var lines = [];
    if (b.limit_usd !== null) lines.push(field(kind + "_usd", b[kind + "_usd"], usd(b[kind + "_usd"])));
    if (b.limit_units !== null) {
      var units_ = field(kind + "_units", b[kind + "_units"], units(b[kind + "_units"]));
      if (lines.length) units_.className = "line2";
      lines.push(units_);
    }
    return lines;
  }

  function renderBudgets(budgets) {
    var body = $("budgets").tBodies[0];
    clear(body);
    if (!budgets.length) {
      body.appendChild(el("tr", null, el("td", { colspan: 10, "class": "empty", text: "No budget applies to this filter." })));
      return;
    }
    budgets.forEach(function (b) {
      var pct = num(b.percent);
      var bar = el("div", { "class": "bar", "aria-hidden": "true" });
      var useUsd = b.limit_usd !== null && (b.limit_units === null ||
        num(b.committed_usd) / num(b.limit_usd) >= num(b.committed_units) / num(b.limit_units));
      var limit = num(useUsd ? b.limit_usd : b.limit_units);
      var c = Math.min(100, 100 * num(useUsd ? b.committed_usd : b.committed_units) / limit);
      var h = Math.min(100 - c, 100 * num(useUsd ? b.held_usd : b.held_units) / limit);
      var cBar = el("span", { "class": "c" });
      var hBar = el("span", { "class": "h" });
      cBar.style.width = c + "%";
      hBar.style.left = c + "%";
      hBar.style.width = h + "%";
      bar.appendChild(cBar);
      bar.appendChild(hBar);
      var name = [el("strong", { text: b.name })];
      if (!b.hard) name.push(" ", el("span", { "class": "badge st-soft", text: "soft", title: "Alerts only; never denies" }));
      var row = el("tr", { "data-budget": b.name }, [
        el("th", { scope: "row" }, name),
        el("td", { text: b.scope }),
        el("td", null, [b.period, b.timezone !== "UTC" ? el("span", { "class": "line2", text: b.timezone }) : null]),
        el("td", { "class": "num" }, amountLines(b, "limit")),
        el("td", { "class": "num" }, amountLines(b, "committed")),
        el("td", { "class": "num" }, amountLines(b, "held")),
        el("td", { "class": "num" }, amountLines(b, "remaining")),
        el("td", null, [
          el("span", { "class": "pct" + (pct >= 80 ? " hot" : "") }, field("percent", b.percent, b.percent + "%")),
          bar
        ]),
        el("td", null, b.resets_at ? timeEl(b.resets_at) : "never"),
        el("td", null, forecastCell(b))
      ]);
      body.appendChild(row);
    });
  }

  function forecastCell(b) {
    var f = b.forecast;
    if (!f) return "–";
    var parts = [];
    f.limits.forEach(function (l) {
      var show = l.limit_kind === "usd" ? usd : units;
      if (l.projected !== null) {
        parts.push(el("span", { "class": "line1" }, [
          field("projected_" + l.limit_kind, l.projected, show(l.projected)),
          " by window end" + (l.projected_percent !== null ? " (" + l.projected_percent + "%)" : "")
        ]));
      } else {
        parts.push(el("span", { text: show(l.used) + " used" }));
      }
      parts.push(el("br"));
    });
    if (f.exhaustion_at) {
      parts.push(el("span", { "class": "warnline" }, ["runs out ", timeEl(f.exhaustion_at)]));
    } else if (f.will_exceed) {
      parts.push(el("span", { "class": "warnline", text: "limit reached" }));
    }
    if (!f.confident) parts.push(el("span", { "class": "line2", text: "early in the window: rough" }));
    return parts;
  }

  function who(job) {
    return [job.project || "–", el("span", { "class": "line2", text: job.user || "no user" })];
  }

  // A job by the id its client holds: Kling's task id (and the client's own external id, through the
  // gateway), with the ledger's reservation id beside it. Before Kling answered there is only the reservation.
  function jobRef(job) {
    if (!job.task_id) {
      return [el("code", { "class": "job-ref", "data-reservation": job.id, text: job.id }),
        el("span", { "class": "line2",
          text: job.kind === "record" ? "recorded usage" : job.open ? "no Kling task yet" : "no Kling task id" })];
    }
    var beside = ["reservation ", el("code", { "data-reservation": job.id, text: job.id })];
    if (job.external_task_id) beside.push(" · yours: " + job.external_task_id);
    return [el("code", { "class": "job-ref", "data-task": job.task_id, text: job.task_id }),
      el("span", { "class": "line2" }, beside)];
  }

  function renderJobs(jobs) {
    var body = $("jobs").tBodies[0];
    clear(body);
    if (!jobs.length) {
      body.appendChild(el("tr", null, el("td", { colspan: 6, "class": "empty", text: "No jobs yet." })));
      return;
    }
    jobs.forEach(function (job) {
      var label = job.open ? "held" : job.state === "committed" ? "" : "";
      body.appendChild(el("tr", { "data-job": job.id }, [
        el("td", { "class": "nowrap" }, timeEl(job.reserved_at)),
        el("td", { "class": "ids" }, jobRef(job)),
        el("td", null, who(job)),
        el("td", { "class": "nowrap", text: job.model }),
        el("td", null, el("span", { "class": "badge st-" + job.state, text: job.state })),
        el("td", { "class": "num" }, [
          field("cost_usd", job.cost_usd, usd(job.cost_usd)),
          el("span", { "class": "line2" }, [field("cost_units", job.cost_units, units(job.cost_units)),
            label ? " " + label : ""])
        ])
      ]));
    });
  }

  function renderHolds(holds) {
    var body = $("holds").tBodies[0];
    clear(body);
    if (!holds.holds.length) {
      body.appendChild(el("tr", null, el("td", { colspan: 6, "class": "empty", text: "No open holds." })));
      return;
    }
    holds.holds.forEach(function (job) {
      body.appendChild(el("tr", { "data-hold": job.id }, [
        el("td", { "class": "nowrap" }, timeEl(job.reserved_at)),
        el("td", { "class": "ids" }, jobRef(job)),
        el("td", null, who(job)),
        el("td", { "class": "nowrap", text: job.model }),
        el("td", null, el("span", { "class": "badge st-" + job.state, text: job.state })),
        el("td", { "class": "num" }, [
          field("held_usd", job.held_usd, usd(job.held_usd)),
          el("span", { "class": "line2" }, field("held_units", job.held_units, units(job.held_units)))
        ])
      ]));
    });
    body.appendChild(el("tr", { "class": "total" }, [
      el("th", { scope: "row", colspan: 5, text: "Total held (" + holds.count + ")" }),
      el("td", { "class": "num" }, field("holds_total_usd", holds.held_usd, usd(holds.held_usd)))
    ]));
  }

  function renderAlerts(alerts) {
    var list = $("alerts");
    clear(list);
    if (!alerts.length) {
      list.appendChild(el("li", { "class": "empty", text: "No alerts." }));
      return;
    }
    alerts.forEach(function (a) {
      list.appendChild(el("li", { "data-alert": a.id }, [
        a.created_at ? timeEl(a.created_at) : el("span", { text: "" }),
        el("span", null, el("span", { "class": "badge k-" + a.kind, text: a.kind.replace(/_/g, " ") })),
        el("span", { text: a.message })
      ]));
    });
  }

  // ------------------------------------------------------------------------------------ chart

  function niceStep(max, count) {
    var raw = max / count;
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= raw) return steps[i] * power;
    return 10 * power;
  }

  function renderChart(data) {
    var box = $("chart");
    clear(box);
    var s = data.series;
    var metric = data.metric;
    var W = Math.max(520, Math.round(box.clientWidth || 900));
    var H = 320;
    var m = { left: 68, right: 150, top: 18, bottom: 34 };
    var pw = W - m.left - m.right;
    var ph = H - m.top - m.bottom;
    var t0 = Date.parse(s.start), t1 = Date.parse(s.end);
    var tNow = Math.max(t0, Math.min(Date.parse(s.now), t1));
    var cKey = metric === "usd" ? "cumulative_committed_usd" : "cumulative_committed_units";
    var tKey = metric === "usd" ? "cumulative_usd" : "cumulative_units";
    var show = metric === "usd" ? usd : units;

    var pts = [{ t: t0, c: 0, tot: 0 }];
    s.points.forEach(function (p, i) {
      var start = Date.parse(p.start);
      if (start >= tNow) return;
      var next = i + 1 < s.points.length ? Date.parse(s.points[i + 1].start) : t1;
      pts.push({ t: Math.min(next, tNow), c: num(p[cKey]), tot: num(p[tKey]) });
    });
    var lastPoint = pts[pts.length - 1];

    var lines = s.budget_lines.map(function (line) {
      var limit = metric === "usd" ? line.limit_usd : (line.unit_pack === "video" ? line.limit_units : null);
      if (limit === null) return null;
      var budget = data.budgets.filter(function (b) { return b.name === line.budget; })[0];
      var projected = null;
      if (budget && budget.forecast) {
        var kind = metric === "usd" ? "usd" : "units";
        var lf = budget.forecast.limits.filter(function (l) { return l.limit_kind === kind; })[0];
        if (lf && lf.projected !== null) projected = lf.projected;
      }
      return { name: line.budget, limit: limit, projected: projected };
    }).filter(Boolean);

    var ymax = lastPoint.tot;
    lines.forEach(function (l) { ymax = Math.max(ymax, num(l.limit), l.projected ? num(l.projected) : 0); });
    ymax = ymax > 0 ? ymax * 1.08 : 1;
    var step = niceStep(ymax, 5);
    ymax = Math.ceil(ymax / step) * step;

    function x(t) { return m.left + (t1 > t0 ? (t - t0) / (t1 - t0) : 0) * pw; }
    function y(v) { return m.top + ph - (v / ymax) * ph; }

    var summary = "Spend from " + when(s.start) + " to " + when(s.end) + ": " +
      show(metric === "usd" ? s.totals.committed_usd : s.totals.committed_units) + " committed, " +
      show(metric === "usd" ? s.totals.held_usd : s.totals.held_units) + " held." +
      lines.map(function (l) { return " Budget " + l.name + " limit " + show(l.limit) + "."; }).join("");

    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": "chart-svg-title chart-svg-desc",
      preserveAspectRatio: "xMidYMid meet" });
    root.appendChild(svg("title", { id: "chart-svg-title", text: "Cumulative spend over the period" }));
    root.appendChild(svg("desc", { id: "chart-svg-desc", text: summary }));

    for (var v = 0; v <= ymax + step / 2; v += step) {
      root.appendChild(svg("line", { "class": "grid", x1: m.left, x2: m.left + pw, y1: y(v), y2: y(v) }));
      var label = metric === "usd" ? "$" + (step < 1 ? v.toFixed(2) : String(Math.round(v))) : String(+v.toFixed(3));
      root.appendChild(svg("text", { "class": "tick", x: m.left - 8, y: y(v) + 4, "text-anchor": "end", text: label }));
    }
    var span = t1 - t0;
    var hourly = s.bucket === "hour";
    var ticks = 6;
    for (var i = 0; i <= ticks; i++) {
      var t = t0 + (span * i) / ticks;
      var tx = x(t);
      root.appendChild(svg("line", { "class": "axis", x1: tx, x2: tx, y1: m.top + ph, y2: m.top + ph + 4 }));
      root.appendChild(svg("text", { "class": "tick", x: tx, y: m.top + ph + 18, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle",
        text: (hourly ? hourOnly : dayOnly).format(new Date(t)) }));
    }
    root.appendChild(svg("line", { "class": "axis", x1: m.left, x2: m.left + pw, y1: m.top + ph, y2: m.top + ph }));
    root.appendChild(svg("line", { "class": "axis", x1: m.left, x2: m.left, y1: m.top, y2: m.top + ph }));

    if (lastPoint.tot > 0) {
      var top = pts.map(function (p) { return x(p.t) + "," + y(p.tot); });
      var mid = pts.map(function (p) { return x(p.t) + "," + y(p.c); });
      var heldArea = top.concat(mid.slice().reverse());
      root.appendChild(svg("polygon", { "class": "area-held", points: heldArea.join(" ") }));
      var committedArea = mid.concat([x(lastPoint.t) + "," + y(0), x(t0) + "," + y(0)]);
      root.appendChild(svg("polygon", { "class": "area-committed", points: committedArea.join(" ") }));
    } else {
      root.appendChild(svg("text", { "class": "empty", x: m.left + pw / 2, y: m.top + ph / 2, "text-anchor": "middle",
        text: "No spend in this period" }));
    }

    lines.forEach(function (l, index) {
      var ly = y(num(l.limit));
      root.appendChild(svg("line", { "class": "limit", x1: m.left, x2: m.left + pw, y1: ly, y2: ly }));
      root.appendChild(svg("text", { "class": "limit-label", x: m.left + pw + 6, y: ly + 4 + index * 13 * 0,
        text: l.name + " " + show(l.limit) }));
      if (l.projected !== null && tNow < t1) {
        root.appendChild(svg("line", { "class": "forecast", x1: x(tNow), y1: y(lastPoint.tot), x2: x(t1), y2: y(num(l.projected)) }));
        root.appendChild(svg("text", { "class": "tick", x: m.left + pw + 6, y: y(num(l.projected)) + 16,
          text: "→ " + show(l.projected) }));
      }
    });

    if (tNow < t1) {
      root.appendChild(svg("line", { "class": "now", x1: x(tNow), x2: x(tNow), y1: m.top, y2: m.top + ph }));
      root.appendChild(svg("text", { "class": "now-label", x: x(tNow) + 4, y: m.top + 10, text: "now" }));
    }
    box.appendChild(root);
    $("chart-summary").textContent = summary + (lines.length ? "" :
      " Budget lines appear when the filter and period match a budget's scope and window.");
  }

  // ------------------------------------------------------------------------------------ start

  function start() {
    restoreFilters();
    $("login-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var value = $("token").value.trim();
      if (!value) return;
      window.sessionStorage.setItem(TOKEN_KEY, value);
      $("login").close();
      optionsLoadedAt = 0;
      refresh();
    });
    $("login").addEventListener("cancel", function (event) { if (!token()) event.preventDefault(); });
    $("filters").addEventListener("change", function () { saveFilters(); refresh(); });
    $("filters").addEventListener("submit", function (event) { event.preventDefault(); });
    $("refresh").addEventListener("click", function () { refresh(); });
    $("signout").addEventListener("click", function () { signOut(""); });
    $("pause").addEventListener("click", function () {
      paused = !paused;
      $("pause").setAttribute("aria-pressed", String(paused));
      $("pause").textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
      if (!paused) refresh();
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      window.clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(function () { if (last) renderChart(last); }, 150);
    });
    startTimer();
    if (token()) refresh();
    else showLogin("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
