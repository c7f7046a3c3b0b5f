// The trio_bg dashboard page. No library, no build step, no network access but its own server.
// Live through server-sent events (api/events): every snapshot re-renders the page; there is
// no polling loop. Every value from the server goes into the page through textContent or an
// attribute, never through innerHTML, so a task named "<img src=x onerror=...>" is shown as text.
"use strict";

(function () {
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const authHeaders = token ? { Authorization: "Bearer " + token } : {};
  const $ = (id) => document.getElementById(id);
  const closedRecent = new Set();  // managers whose "recently finished" the user closed

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return Math.round(value * 1000) + " ms";
    if (value < 120) return value.toFixed(1) + " s";
    return Math.round(value / 60) + " min";
  }

  // -- counters and chart ---------------------------------------------------------------------

  function renderCounters(data) {
    const box = $("counters");
    box.replaceChildren();
    const t = data.totals;
    const items = [
      ["running", t.running], ["pending", t.pending], ["succeeded", t.succeeded],
      ["failed", t.failed], ["cancelled", t.cancelled], ["rejected", t.rejected],
      ["open requests", data.requests.open],
    ];
    for (const [label, value] of items) {
      box.append(el("div", { class: "counter", "data-counter": label },
        el("b", { text: value }), el("span", { text: label })));
    }
  }

  function renderChart(rate) {
    const svg = $("chart");
    svg.replaceChildren();
    const ns = "http://www.w3.org/2000/svg";
    const width = 600, height = 90, slot = width / Math.max(rate.length, 1);
    let top = 1;
    for (const p of rate) top = Math.max(top, p.started, p.succeeded + p.failed + p.cancelled);
    rate.forEach((p, i) => {
      const finished = p.succeeded + p.cancelled;
      const bars = [
        ["bar-started", p.started, 0],
        ["bar-finished", finished, slot / 2],
        ["bar-failed", p.failed, slot / 2],
      ];
      let stacked = 0;
      for (const [cls, value, dx] of bars) {
        if (!value) continue;
        const h = (value / top) * (height - 4);
        const rect = document.createElementNS(ns, "rect");
        const base = cls === "bar-failed" ? stacked : 0;
        rect.setAttribute("class", cls);
        rect.setAttribute("x", String(i * slot + dx));
        rect.setAttribute("width", String(Math.max(slot / 2 - 1, 1)));
        rect.setAttribute("y", String(height - h - base));
        rect.setAttribute("height", String(h));
        const title = document.createElementNS(ns, "title");
        title.textContent = value + " " + cls.slice(4);
        rect.append(title);
        svg.append(rect);
        if (cls === "bar-finished") stacked = h;
      }
    });
  }

  // -- tasks ------------------------------------------------------------------------------------

  function taskTable(tasks, showArgs, active) {
    if (!tasks.length) return el("p", { class: "empty", text: active ? "no active tasks" : "none" });
    const head = ["id", "name", "state", "age", "wait", "duration", "attempts", "where / error"];
    if (showArgs) head.push("args / result");
    if (active) head.push("");
    const table = el("table", { class: "tasks" },
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))));
    const body = el("tbody");
    for (const t of tasks) body.append(taskRow(t, showArgs, active));
    table.append(body);
    return table;
  }

  function taskRow(t, showArgs, active) {
    const name = el("td", { class: "name" }, el("span", { class: "task-name", text: t.name }));
    if (t.key !== null) name.append(el("span", { class: "badge", text: "key " + t.key }));
    if (t.group !== null) name.append(el("span", { class: "badge", text: "group " + t.group }));
    if (t.timing !== "immediate") name.append(el("span", { class: "badge", text: t.timing }));
    if (t.shielded) {
      const cap = t.cap_in !== null ? " · cap in " + seconds(t.cap_in) : "";
      name.append(el("span", { class: "badge" + (cap ? " warn" : ""), text: "shielded" + cap }));
    }
    if (t.cancel_in !== null) {
      name.append(el("span", { class: "badge warn", text: "cancelled in " + seconds(t.cancel_in) }));
    }
    const detail = el("td", { class: "detail" });
    const file = t.where ? t.where.file.split("/").slice(-2).join("/") + ":" + t.where.line : "";
    if (t.waiting) {  // a worker thread or a retry backoff: no line of the task's own to show
      detail.append(el("div", { class: "where waiting", title: t.stack.join("\n"),
        text: t.waiting + (file ? " (" + file + ")" : "") }));
    } else if (t.where) {
      detail.append(el("div", { class: "where", title: t.stack.join("\n"),
        text: "at " + t.where.function + " (" + file + ")" }));
    }
    if (t.progress) {  // what the task last said of how far it is: a bar and its message
      const p = t.progress;
      const bar = el("div", { class: "progress", "data-progress": p.fraction === null ? "" : String(p.fraction) });
      if (p.fraction !== null) {
        bar.append(el("progress", { max: "1", value: String(p.fraction) }),
          el("span", { class: "percent", text: Math.round(p.fraction * 100) + "%" }));
      }
      if (p.message !== null) bar.append(el("span", { class: "progress-message", text: p.message }));
      detail.append(bar);
    }
    if (t.error) detail.append(el("div", { class: "error", text: t.error.type + ": " + t.error.message }));
    if (t.retries.length) {
      const steps = t.retries.map((r) =>
        "#" + r.attempt + " " + r.error + " at " + r.at.slice(11, 23) + ", retry in " + seconds(r.delay));
      detail.append(el("div", { class: "retries", text: steps.join(" → ") }));
    }
    const cells = [
      el("td", { class: "id", text: t.id }),
      name,
      el("td", { class: "state state-" + t.state, text: t.state }),
      el("td", { class: "num", text: seconds(t.age) }),
      el("td", { class: "num", text: seconds(t.wait) }),
      el("td", { class: "num", text: seconds(t.duration) }),
      el("td", { class: "num", text: t.attempts }),
      detail,
    ];
    if (showArgs) {
      const args = el("td", { class: "args" });
      if (t.args !== null && t.args !== undefined) args.append(el("div", { text: t.args }));
      if (t.result !== null && t.result !== undefined) args.append(el("div", { text: "→ " + t.result }));
      cells.push(args);
    }
    if (active) {
      cells.push(el("td", {}, el("button", {
        class: "cancel", type: "button", "data-cancel": t.id, text: "cancel",
        onclick: () => cancel(t.id),
      })));
    }
    return el("tr", { "data-task-id": t.id, "data-state": t.state }, ...cells);
  }

  async function cancel(id) {
    const message = $("message");
    try {
      const r = await fetch("api/tasks/" + encodeURIComponent(id) + "/cancel",
        { method: "POST", headers: authHeaders, credentials: "same-origin" });
      const body = await r.json();
      message.textContent = r.ok
        ? (body.cancelled ? "cancelled " + id : id + " was already " + body.state)
        : "cancel failed: " + (body.error || r.status);
    } catch (err) {
      message.textContent = "cancel failed: " + err;
    }
  }

  // -- managers and requests --------------------------------------------------------------------

  function statsLine(s) {
    return "started " + s.started + " · running " + s.running + " · pending " + s.pending +
      " · succeeded " + s.succeeded + " · failed " + s.failed + " · cancelled " + s.cancelled +
      " · rejected " + s.rejected;
  }

  function managerCard(m, showArgs) {
    const head = el("div", { class: "card-head" });
    if (m.request) {
      const r = m.request;
      head.append(el("h3", { text: r.method + " " + (r.route === null ? "(no route)" : r.route) }),
        el("span", { class: "muted", text: "status " + (r.status === null ? "–" : r.status) +
          " · age " + seconds(r.age) }));
    } else {
      head.append(el("h3", { text: m.name }));
    }
    head.append(el("span", { class: "muted", text: statsLine(m.statistics) }));
    if (m.closing) {
      head.append(el("span", { class: "badge warn", text: "closing for " + seconds(m.closing.since) }));
    }
    const card = el("div", { class: "card" + (m.closing ? " closing" : ""), "data-manager": m.name },
      head, taskTable(m.active, showArgs, true));
    if (m.active_more) card.append(el("p", { class: "muted", text: "and " + m.active_more + " more" }));
    if (m.recent.length) {
      // Open for named managers unless the user closed it; kept across re-renders.
      const open = m.kind !== "request" && !closedRecent.has(m.name);
      const details = el("details", { open: open },
        el("summary", { class: "muted", text: "recently finished (" + m.recent.length + ")" }),
        taskTable(m.recent, showArgs, false));
      details.addEventListener("toggle", () => {
        if (details.open) closedRecent.delete(m.name); else closedRecent.add(m.name);
      });
      card.append(details);
    }
    return card;
  }

  function renderShutdown(shutdown, notice) {
    const section = $("shutdown");
    const body = $("shutdown-body");
    body.replaceChildren();
    section.hidden = shutdown.length === 0 && !notice;
    if (notice) {
      // The server was told to stop: the stream has ended with this forecast.
      const requests = notice.requests_cancel_in === null ? ""
        : "; requests still open are cancelled in " + seconds(notice.requests_cancel_in) +
          " at the latest";
      body.append(el("p", { id: "shutdown-notice", class: "notice",
        text: "The server was told to stop (" + notice.reason + ") at " +
          notice.announced_at.slice(11, 19) + " UTC" + requests +
          ". This page no longer updates." }));
      if (!shutdown.length) body.append(el("p", { class: "empty", text: "no active task: nothing to wait for" }));
    }
    for (const s of shutdown) {
      const grace = s.grace_left === null ? (notice ? "only when its tasks end" : "until the server cancels the request") : "in " + seconds(s.grace_left);
      const lines = el("ul");
      for (const t of s.will_cancel) lines.append(el("li", { text: t.name + " (" + t.id + ") is cancelled " + (t.in === null ? (notice ? "only if it outlives the server" : "when the server cancels the request") : "in " + seconds(t.in) + (notice ? " unless it ends first" : "")) }));
      for (const t of s.shielded) lines.append(el("li", { text: t.name + " (" + t.id + ") is shielded; cap " + (t.cap_in === null ? "not set yet" : "in " + seconds(t.cap_in)) }));
      body.append(el("div", { class: "card closing", "data-shutdown-manager": s.manager },
        el("h3", { text: s.manager + ": grace period ends " + grace }), lines));
    }
  }

  // -- durable queues ---------------------------------------------------------------------------

  function renderQueues(queues) {
    $("durable").hidden = queues.length === 0;
    const head = ["queue", "status", "waiting", "delayed", "in flight", "succeeded", "failed",
      "cancelled", "workers", "dead letters"];
    const table = el("table", { class: "queues" },
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))));
    const body = el("tbody");
    for (const q of queues) {
      const status = el("td", { class: "queue-status status-" + q.status, text: q.status });
      if (q.error) status.append(el("div", { class: "error", text: q.error }));
      const number = (value) => el("td", { class: "num", text: value === null ? "–" : value });
      body.append(el("tr", { "data-queue": q.name, "data-status": q.status },
        el("td", { class: "name", title: q.redis, text: q.name }), status,
        number(q.depth), number(q.delayed), number(q.in_flight), number(q.succeeded),
        number(q.failed), number(q.cancelled), number(q.workers), number(q.dead)));
      const extra = queueDetail(q);
      if (extra) body.append(el("tr", { class: "queue-detail", "data-queue-detail": q.name },
        el("td", { colspan: String(head.length) }, extra)));
    }
    table.append(body);
    $("queues").replaceChildren(table);
  }

  function queueDetail(q) {  // its periodic jobs and its running jobs with their progress
    if (!q.schedules.length && !q.running.length) return null;
    const box = el("div", { class: "queue-extra" });
    for (const s of q.schedules) {
      const last = s.last_at === null ? "never run" : "last " + s.last_at.slice(0, 19).replace("T", " ") +
        (s.last_state ? " (" + s.last_state + (s.last_error ? ": " + s.last_error : "") + ")" : "");
      box.append(el("div", { class: "schedule", "data-schedule": s.job,
        text: s.job + " · " + s.schedule + " · next " + s.next_at.slice(0, 19).replace("T", " ") + " UTC · " + last }));
    }
    for (const j of q.running) {
      const row = el("div", { class: "running-job", "data-job-id": j.id }, el("span", { class: "task-name", text: j.name + " (" + j.id + ")" }));
      if (j.progress) {
        const p = j.progress;
        const bar = el("span", { class: "progress", "data-progress": p.fraction === null ? "" : String(p.fraction) });
        if (p.fraction !== null) {
          bar.append(el("progress", { max: "1", value: String(p.fraction) }),
            el("span", { class: "percent", text: Math.round(p.fraction * 100) + "%" }));
        }
        if (p.message !== null) bar.append(el("span", { class: "progress-message", text: p.message }));
        row.append(bar);
      }
      box.append(row);
    }
    return box;
  }

  function render(data, notice) {
    renderCounters(data);
    renderChart(data.rate);
    renderShutdown(notice ? notice.managers : data.shutdown, notice);
    renderQueues(data.queues);
    const managers = $("managers"), requests = $("requests");
    managers.replaceChildren();
    requests.replaceChildren();
    for (const m of data.managers) {
      (m.kind === "request" ? requests : managers).append(managerCard(m, data.show_args));
    }
    if (!managers.children.length) managers.append(el("p", { class: "empty", text: "no open manager" }));
    if (!requests.children.length) requests.append(el("p", { class: "empty", text: "no request has active tasks" }));
    $("request-count").textContent = data.requests.open + " open, " + data.requests.with_tasks + " with tasks";
    $("history").replaceChildren(taskTable(data.history, data.show_args, false));
    $("clock").textContent = "pid " + data.pid + " · " + data.now.slice(0, 19).replace("T", " ") + " UTC";
  }

  // -- the stream -------------------------------------------------------------------------------

  function connect() {
    const url = "api/events" + (token ? "?token=" + encodeURIComponent(token) : "");
    const source = new EventSource(url);
    const status = $("status");
    source.addEventListener("snapshot", (event) => {
      status.textContent = "live";
      status.className = "status live";
      render(JSON.parse(event.data));
    });
    source.addEventListener("shutdown", (event) => {
      // The last event: the server is stopping and has ended the stream. No reconnecting.
      source.close();
      const notice = JSON.parse(event.data);
      status.textContent = "server stopping (" + notice.reason + ")";
      status.className = "status stopping";
      render(notice.snapshot, notice);
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) return;  // closed after "shutdown"
      status.textContent = "disconnected, reconnecting…";
      status.className = "status lost";
    });
  }

  connect();
})();
