// actionhub dashboard. Everything that comes from the bus is put on the page as text (text
// nodes, textContent, attribute values), never parsed as markup.
"use strict";

(() => {
  const PAGE = location.pathname.replace(/.*\//, "") || "overview";
  const PARAMS = new URLSearchParams(location.search);
  const TOKEN_KEY = "actionhub-dashboard-token";
  const SVG = "http://www.w3.org/2000/svg";
  const main = document.getElementById("main");
  const status = document.getElementById("status");
  const result = document.getElementById("result");
  let readOnly = true;
  let interval = 2;

  // ------------------------------------------------------------------ building the page

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const link = (href, text) => el("a", { href }, text);
  const groupLink = (name) => link("group?name=" + encodeURIComponent(name), name);
  const topicLink = (name) => link("topic?name=" + encodeURIComponent(name), name);
  const deadLink = (topic, text) => link("dead-letters?topic=" + encodeURIComponent(topic), text);
  const when = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : "");
  const ago = (epoch) => (epoch ? Math.max(0, Math.round(Date.now() / 1000 - epoch)) + " s ago" : "");
  const rate = (value) => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
  const minutes = (seconds) => (seconds >= 120 ? Math.round(seconds / 60) + " minutes" : seconds + " seconds");
  const pretty = (value) => el("pre", {}, JSON.stringify(value, null, 2));

  function table(columns, rows, rowAttributes) {
    const head = el("tr", {}, columns.map(([title, , cls]) => el("th", { class: cls }, title)));
    const body = rows.map((row) =>
      el(
        "tr",
        rowAttributes ? rowAttributes(row) : {},
        columns.map(([, cell, cls]) => el("td", { class: cls }, cell(row))),
      ),
    );
    return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
  }

  // A table kept in place across refreshes: rows by key, cells rewritten only when they changed
  // (a page of 50 hubs x 20 groups refreshes without rebuilding a thousand rows). A column is
  // [title, cell, class, signature]: with a signature, the cell is built only when it changes.
  class LiveTable {
    constructor(columns, key, rowAttributes) {
      this.columns = columns;
      this.key = key;
      this.rowAttributes = rowAttributes;
      this.rows = new Map();
      this.body = el("tbody");
      const head = el("tr", {}, columns.map(([title, , cls]) => el("th", { class: cls }, title)));
      this.node = el("table", {}, el("thead", {}, head), this.body);
    }

    update(items) {
      const seen = new Set();
      let previous = null;
      for (const item of items) {
        const key = this.key(item);
        seen.add(key);
        let row = this.rows.get(key);
        if (!row) {
          row = el("tr", this.rowAttributes(item), this.columns.map(([, , cls]) => el("td", { class: cls })));
          this.rows.set(key, row);
        }
        this.columns.forEach(([, cell, , signature], i) => {
          const td = row.children[i];
          if (signature) {  // a cell of markup: built again only when what it shows changed
            const now = signature(item);
            if (td.signature === now) return;
            td.signature = now;
          }
          setCell(td, cell(item));
        });
        const next = previous ? previous.nextSibling : this.body.firstChild;
        if (next !== row) this.body.insertBefore(row, next);
        previous = row;
      }
      for (const [key, row] of this.rows) {
        if (!seen.has(key)) {
          row.remove();
          this.rows.delete(key);
        }
      }
      return this.node;
    }
  }

  function setCell(cell, value) {
    if (Array.isArray(value)) value = el("span", {}, value);
    if (!(value instanceof Node)) {
      const text = String(value ?? "");
      if (cell.textContent !== text || cell.firstElementChild) cell.textContent = text;
    } else if (cell.childNodes.length !== 1 || !cell.firstChild.isEqualNode(value)) {
      cell.replaceChildren(value);
    }
  }

  function stateCell(row) {
    const states = row.states || [row.state];
    return states.map((state, i) => {
      let text = state.replace("_", " ");
      if (state === "cooling_down" && row.cool_down_until) {
        text += " (" + Math.max(0, Math.round(row.cool_down_until - Date.now() / 1000)) + " s)";
      }
      return el("span", { class: "state-" + state }, (i ? ", " : "") + text);
    });
  }

  const GROUP_COLUMNS = [
    ["state", stateCell, "text state", (r) => (r.states || [r.state]).join() + (r.cool_down_until ? Date.now() : "")],
    ["workers", (r) => `${r.workers} (${r.min_workers}..${r.max_workers})`, "workers"],
    ["busy", (r) => r.busy, "busy"],
    ["buffered", (r) => r.buffered, "buffered"],
    ["processed", (r) => r.processed, "processed"],
    ["failed", (r) => r.failed, "failed"],
    ["dead", (r) => r.dead_lettered, "dead"],
    ["panics", (r) => r.panics, "panics"],
    ["restarts", (r) => r.restarts, "restarts"],
    ["escalations", (r) => r.escalations, "escalations"],
    ["msg/s", (r) => rate(r.processed_rate), "processed-rate"],
    ["failed/s", (r) => rate(r.failed_rate), "failed-rate"],
  ];

  // ------------------------------------------------------------------ charts (SVG, no library)

  function plot(series, keys, width, height, labels) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "plot");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const pad = labels ? 16 : 2;
    const points = series.at ? series.at.length : 0;
    let top = 0;
    for (const key of keys) for (const v of series[key] || []) top = Math.max(top, v);
    top = top || 1;
    for (const key of keys) {
      const values = series[key] || [];
      if (values.length < 2) continue;
      const line = document.createElementNS(SVG, "polyline");
      const xs = (i) => pad + (i / (values.length - 1)) * (width - 2 * pad);
      const ys = (v) => height - pad - (v / top) * (height - 2 * pad);
      line.setAttribute("points", values.map((v, i) => `${xs(i).toFixed(1)},${ys(v).toFixed(1)}`).join(" "));
      line.setAttribute("class", key);
      svg.append(line);
    }
    if (labels) {
      const label = (x, y, text, anchor) => {
        const t = document.createElementNS(SVG, "text");
        t.setAttribute("x", x);
        t.setAttribute("y", y);
        t.setAttribute("text-anchor", anchor);
        t.textContent = text;
        svg.append(t);
      };
      label(pad, 11, "max " + rate(top), "start");
      const span = points > 1 ? series.at[points - 1] - series.at[0] : 0;
      label(pad, height - 3, points > 1 ? `${minutes(Math.round(span))} ago` : "collecting…", "start");
      label(width - pad, height - 3, "now", "end");
    }
    return svg;
  }

  function legend(keys, series) {
    return el(
      "div",
      { class: "legend" },
      keys.map((key) => {
        const values = series[key] || [];
        const last = values.length ? values[values.length - 1] : 0;
        return el("span", { class: key }, `■ ${key.replace("_", " ")} ${rate(last)}`);
      }),
    );
  }

  // ------------------------------------------------------------------ talking to the server

  // The server's document, or an Error saying why there is none.
  async function answerOf(response) {
    const json = (response.headers.get("content-type") || "").startsWith("application/json");
    const body = json ? await response.json() : {};
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }

  async function get(path) {
    return answerOf(await fetch(path, { headers: { accept: "application/json" } }));
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || ""),
      },
      body: JSON.stringify(body),
    });
    return answerOf(response);
  }

  // ``say``: how the page's reads go; ``tell``: how the last change went (it stays until the next)
  function say(text, bad) {
    status.replaceChildren(el("span", { class: bad ? "bad" : "" }, text));
  }

  function tell(text, bad) {
    result.replaceChildren(el("span", { class: bad ? "bad" : "" }, text));
  }

  function setMode(isReadOnly) {
    readOnly = isReadOnly;
    const mode = document.getElementById("mode");
    const hasToken = Boolean(sessionStorage.getItem(TOKEN_KEY));
    mode.textContent = readOnly ? "read-only" : hasToken ? "token set" : "token needed";
    document.getElementById("token").hidden = readOnly;
    document.querySelector("#token-form button").hidden = readOnly;
    for (const button of document.querySelectorAll("button.change")) button.disabled = readOnly;
  }

  // A change: post it, show what came back (``shown`` may say it in a line), then refresh.
  async function change(path, body, shown, refresh) {
    try {
      const answer = await post(path, body);
      tell((shown(answer) || "done") + " at " + new Date().toLocaleTimeString());
    } catch (error) {
      tell(String(error.message || error), true);
    }
    try {
      if (refresh) await refresh();
    } catch (error) {
      say(String(error.message || error), true);
    }
  }

  // Poll ``load`` every interval (the server reads the bus once per interval whoever asks).
  function every(load) {
    const tick = async () => {
      try {
        await load();
        say("updated " + new Date().toLocaleTimeString());
      } catch (error) {
        say(String(error.message || error), true);
      }
      setTimeout(tick, interval * 1000);
    };
    tick();
  }

  // ------------------------------------------------------------------ pages

  async function overview() {
    const rates = el("section", { class: "card", id: "rates" });
    const groupsTitle = el("h2");
    const hubs = el("div", { id: "hubs" });
    const shownHubs = new Map(); // hub -> {section, about, table}
    let groups = null;
    main.replaceChildren(el("h1", {}, "Overview"), rates, el("section", { class: "card", id: "groups" }, groupsTitle), hubs);
    every(async () => {
      const data = await get("api/overview");
      interval = data.interval;
      setMode(data.read_only);
      document.getElementById("bus").textContent = data.bus;
      rates.replaceChildren(
        el("h2", {}, `Messages per second, every group, last ${minutes(data.window)}`),
        el("div", { class: "chart" }, plot(data.history, ["processed", "failed"], 640, 140, true),
          legend(["processed", "failed"], data.history)),
      );
      groupsTitle.textContent = `${data.groups.length} group(s) over ${data.hubs.length} live hub(s)`;
      if (!groups) {
        groups = new LiveTable(
          [
            ["group", (r) => groupLink(r.group), "text", (r) => r.group],
            ["topic", (r) => topicLink(r.topic), "text", (r) => r.topic],
            ["hubs", (r) => r.hubs, "hubs"],
            ...GROUP_COLUMNS,
            [`last ${minutes(data.window)}`, (r) => plot({ at: r.spark, processed: r.spark }, ["processed"], 96, 22, false),
              "spark", (r) => r.spark.join()],
          ],
          (r) => r.group,
          (r) => ({ "data-group": r.group }),
        );
        groupsTitle.after(groups.node);
      }
      groups.update(data.groups);
      let previous = null;
      for (const hub of data.hubs) {
        let shown = shownHubs.get(hub.hub);
        if (!shown) {
          const about = el("span", { class: "muted" });
          const table = new LiveTable([["group", (r) => groupLink(r.group), "text", (r) => r.group], ...GROUP_COLUMNS], (r) => r.group,
            (r) => ({ "data-group": r.group }));
          const section = el("section", { class: "card hub", "data-hub": hub.hub },
            el("div", { class: "hub-title" }, el("h2", {}, hub.hub), about), table.node);
          shown = { section, about, table };
          shownHubs.set(hub.hub, shown);
        }
        shown.about.textContent = `${hub.host} pid ${hub.pid}, up since ${when(hub.started_at)}, seen ${ago(hub.at)}`
          + (hub.groups.length ? "" : ", no running group");
        shown.table.update(hub.groups);
        const next = previous ? previous.nextSibling : hubs.firstChild;
        if (next !== shown.section) hubs.insertBefore(shown.section, next);
        previous = shown.section;
      }
      const live = new Set(data.hubs.map((hub) => hub.hub));
      for (const [name, shown] of shownHubs) {
        if (!live.has(name)) {
          shown.section.remove();
          shownHubs.delete(name);
        }
      }
    });
  }

  async function group() {
    const name = PARAMS.get("name") || "";
    const answers = el("div", { id: "answers" });
    const low = el("input", { type: "number", min: 0, id: "min-workers", "aria-label": "min workers" });
    const high = el("input", { type: "number", min: 0, id: "max-workers", "aria-label": "max workers" });
    const showAnswers = (answer) =>
      answers.replaceChildren(
        table(
          [["hub", (a) => a.hub, "text"], ["outcome", (a) => a.outcome, "text outcome"], ["detail", (a) => a.detail, "text"]],
          answer.answers,
          (a) => ({ "data-hub": a.hub }),
        ),
      );
    const command = (verb, extra) => () => change("api/command", { command: verb, group: name, ...extra }, showAnswers, load);
    const controls = el(
      "section",
      { class: "card", id: "controls" },
      el("h2", {}, "Controls (every live hub)"),
      el(
        "div",
        { class: "controls" },
        el("button", { class: "change", id: "pause", onclick: command("pause") }, "Pause"),
        el("button", { class: "change", id: "resume", onclick: command("resume") }, "Resume"),
        el("button", { class: "change", id: "restart", onclick: command("restart") }, "Restart"),
        el("span", {}, " min"), low, el("span", {}, "max"), high,
        el("button", {
          class: "change", id: "scale",
          onclick: () => command("scale", { min_workers: Number(low.value), max_workers: Number(high.value) })(),
        }, "Scale"),
      ),
      answers,
    );
    const charts = el("section", { class: "card", id: "charts" });
    const hubs = el("section", { class: "card", id: "group-hubs" });
    const title = el("h1", {}, "Group ", name);
    main.replaceChildren(title, controls, charts, hubs);
    let first = true;
    async function load() {
      const data = await get("api/group?name=" + encodeURIComponent(name));
      setMode(data.read_only);
      if (data.topic) title.replaceChildren("Group ", name, el("span", { class: "muted" }, " on topic "), topicLink(data.topic));
      if (first && data.hubs.length) {
        low.value = data.hubs[0].min_workers;
        high.value = data.hubs[0].max_workers;
        first = false;
      }
      charts.replaceChildren(
        el("h2", {}, `Last ${minutes(data.window)}`),
        el("div", { class: "chart" },
          plot(data.history, ["processed", "failed"], 480, 120, true), legend(["processed", "failed"], data.history),
          plot(data.history, ["workers", "buffered"], 480, 120, true), legend(["workers", "buffered"], data.history)),
      );
      hubs.replaceChildren(
        el("h2", {}, `Run by ${data.hubs.length} live hub(s)`),
        table([["hub", (r) => r.hub, "text"], ["host", (r) => r.host, "text"], ...GROUP_COLUMNS], data.hubs,
          (r) => ({ "data-hub": r.hub })),
      );
    }
    every(load);
  }

  async function topic() {
    const name = PARAMS.get("name") || "";
    const from = el("input", { id: "from", value: "-", "aria-label": "from id" });
    const to = el("input", { id: "to", value: "+", "aria-label": "to id" });
    const state = el("section", { class: "card", id: "topic-state" });
    const browser = el("section", { class: "card", id: "messages" });
    main.replaceChildren(el("h1", {}, "Topic ", name), state, browser);
    async function loadState() {
      const data = await get("api/topic?name=" + encodeURIComponent(name));
      const info = data.info;
      setMode(data.read_only);
      const next = info.next_due_in === null ? "" : `, next due in ${info.next_due_in.toFixed(1)} s`;
      state.replaceChildren(
        el("div", { class: "figures" },
          el("div", { class: "figure" }, el("b", { id: "length" }, info.length), "messages retained"),
          el("div", { class: "figure" }, el("b", {}, info.partitions || "—"), "partitions"),
          el("div", { class: "figure" }, el("b", { id: "delayed" }, info.delayed + (info.delayed_complete ? "" : "+")),
            `delayed (${info.delayed_due} due${next})`),
          el("div", { class: "figure" }, el("b", { id: "dead" }, deadLink(name, String(info.dead_letters))), "dead letters")),
        el("h2", {}, "Consumer groups"),
        info.groups.length
          ? table(
            [
              ["group", (g) => g.name, "text"],
              ["consumers", (g) => g.consumers, ""],
              ["pending", (g) => g.pending, "pending"],
              ["lag", (g) => (g.lag === null ? "?" : g.lag), "lag"],
              ["oldest pending", (g) => (g.oldest_pending_age === null ? "—" : g.oldest_pending_age.toFixed(1) + " s"), ""],
            ],
            info.groups,
            (g) => ({ "data-group": g.name }),
          )
          : el("p", { class: "muted" }, "no consumer group"),
      );
    }
    // the browser keeps its page: it reads again only when asked
    async function loadMessages(first) {
      const query = new URLSearchParams({ name, from: first || from.value, to: to.value, count: "50" });
      const data = await get("api/topic/messages?" + query);
      if (!data.keeps_history) {
        browser.replaceChildren(el("p", { class: "muted" }, "This bus keeps no history of its messages."));
        return;
      }
      const show = (start) => () => loadMessages(start).catch((error) => say(error.message, true));
      browser.replaceChildren(
        el("h2", {}, "Messages"),
        el("div", { class: "controls" }, "from", from, "to", to, el("button", { id: "show", onclick: show() }, "Show"),
          data.next ? el("button", { id: "next", onclick: show(data.next) }, "Next page") : null),
        data.messages.length
          ? table([["entry", (m) => m.id, "text"], ["envelope", (m) => pretty(m.envelope), "wrap envelope"]], data.messages,
            (m) => ({ "data-id": m.id }))
          : el("p", { class: "muted" }, "no message in this range"),
      );
    }
    every(loadState);
    await loadMessages();
  }

  async function deadLetters() {
    const name = PARAMS.get("topic");
    if (!name) {
      const data = await get("api/overview");
      setMode(data.read_only);
      const topics = [...new Set(data.groups.map((g) => g.topic))].sort();
      const input = el("input", { id: "topic", "aria-label": "topic", placeholder: "topic" });
      main.replaceChildren(
        el("h1", {}, "Dead letters"),
        el("section", { class: "card" },
          el("h2", {}, "Topics the live hubs serve"),
          topics.length ? el("ul", {}, topics.map((t) => el("li", {}, deadLink(t, t)))) : el("p", { class: "muted" }, "none"),
          el("form", { class: "controls", onsubmit: (event) => {
            event.preventDefault();
            location.search = "?topic=" + encodeURIComponent(input.value);
          } }, "or any topic:", input, el("button", { type: "submit" }, "Show"))),
      );
      return;
    }
    const listing = el("section", { class: "card", id: "letters" });
    main.replaceChildren(el("h1", {}, "Dead letters of ", topicLink(name)), listing);
    const selected = () => [...listing.querySelectorAll("input.pick:checked")].map((box) => box.value);
    const act = (verb, ids) => change(`api/dead-letters/${verb}`, { topic: name, ids },
      (answer) => `${verb}d ${answer.count} dead letter(s)`, load);
    let limit = 100;
    async function load() {
      const data = await get("api/dead-letters?" + new URLSearchParams({ topic: name, limit: String(limit) }));
      const more = data.total > data.letters.length && limit < 1000;
      listing.replaceChildren(
        el("div", { class: "controls" },
          el("span", { id: "count" }, data.total > data.letters.length
            ? `the oldest ${data.letters.length} of ${data.total} dead letter(s)` : `${data.total} dead letter(s)`),
          more ? el("button", { id: "more", onclick: () => { limit = 1000; load().catch((e) => say(e.message, true)); } },
            "Show up to 1,000") : null,
          el("button", { class: "change", id: "requeue-selected", onclick: () => act("requeue", selected()) }, "Requeue selected"),
          el("button", { class: "change danger", id: "purge-selected", onclick: () => act("purge", selected()) }, "Purge selected"),
          el("button", { class: "change", id: "requeue-all", onclick: () => act("requeue", null) }, "Requeue all"),
          el("button", { class: "change danger", id: "purge-all", onclick: () => {
            if (confirm(`Purge every dead letter of ${name}?`)) act("purge", null);
          } }, "Purge all")),
        data.letters.length
          ? table(
            [
              ["", (d) => el("input", { type: "checkbox", class: "pick", value: d.id, "aria-label": "select " + d.id }), ""],
              ["id", (d) => d.id, "text"],
              ["failed at", (d) => when(d.at), "text"],
              ["attempts", (d) => d.attempts, ""],
              ["group", (d) => d.group || "", "text"],
              ["reason", (d) => d.reason, "wrap reason"],
              ["error", (d) => d.error || "", "wrap error"],
              ["message", (d) => [pretty(d.envelope),
                d.traceback ? el("details", {}, el("summary", {}, "traceback"), el("pre", { class: "traceback" }, d.traceback)) : null], "wrap message"],
              ["", (d) => [
                el("button", { class: "change requeue", onclick: () => act("requeue", [d.id]) }, "Requeue"), " ",
                el("button", { class: "change danger purge", onclick: () => act("purge", [d.id]) }, "Purge")], ""],
            ],
            data.letters,
            (d) => ({ "data-id": d.id }),
          )
          : el("p", { class: "muted" }, "no dead letter"),
      );
      setMode(data.read_only);
    }
    await load().catch((error) => say(error.message, true));
  }

  async function escalations() {
    const listing = el("section", { class: "card", id: "escalations" });
    main.replaceChildren(el("h1", {}, "Escalations, newest first"), listing);
    every(async () => {
      const data = await get("api/escalations");
      setMode(data.read_only);
      listing.replaceChildren(
        data.escalations.length
          ? table(
            [
              ["at", (e) => when(e.at), "text"],
              ["hub", (e) => e.hub, "text"],
              ["group", (e) => groupLink(e.group), "text"],
              ["reason", (e) => e.reason, "text"],
              ["error", (e) => e.error, "wrap error"],
              ["details", (e) => [
                e.traceback ? el("details", {}, el("summary", {}, "traceback"), el("pre", {}, e.traceback)) : null,
                e.offending_message ? el("details", {}, el("summary", {}, "offending message"), pretty(e.offending_message)) : null,
              ], "wrap"],
            ],
            data.escalations,
          )
          : el("p", { class: "muted" }, "no escalation recorded (hubs record them with actionhub.alerts.EscalationStream)"),
      );
    });
  }

  // ------------------------------------------------------------------ start

  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = "";
    setMode(readOnly);
  });
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === PAGE) a.classList.add("current");
  }
  const pages = { overview, group, topic, "dead-letters": deadLetters, escalations };
  (pages[PAGE] || overview)().catch((error) => say(String(error.message || error), true));
})();
