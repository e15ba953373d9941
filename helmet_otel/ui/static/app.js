// helmet-otel ui: the single page. Plain JavaScript, no build step, no request leaves the
// machine. Every value from the store is put in the page as text (textContent, text nodes),
// never parsed as HTML; links are built from encodeURIComponent'd values.
"use strict";

(() => {
  const MAX_ROWS = 1000; // rows the log view keeps; older ones are paged back in on demand
  const { FILTERS, PAGE, parseHash } = window.helmetBoot;
  const POLL_MS = 400;
  const SCREEN_ROWS = 40; // log rows built before the first paint; the rest of the page follows
  const TYPING_MS = 90; // typing pauses this long before a search or filter is asked for
  const main = document.getElementById("main");
  let generation = 0; // bumped on every navigation: late answers for an old view are dropped
  // the page comes with its metadata (no round trip before the first view's query)
  const meta = JSON.parse(document.getElementById("meta").textContent);
  let painted = false;

  // --- DOM helpers -----------------------------------------------------------------------
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function link(hash, text, title) {
    return h("a", { href: hash, title: title }, text);
  }

  function show(...nodes) {
    main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
  }

  function markPainted() {
    if (painted) return;
    painted = true;
    performance.mark("helmet:painted");
    document.body.dataset.painted = "1";
  }

  function empty(text, detail) {
    return h("div", { class: "empty" }, h("p", {}, text), detail ? h("p", { class: "dim" }, detail) : null);
  }

  function failure(error) {
    return h("div", { class: "empty error-box" }, h("p", {}, String(error.message || error)));
  }

  // --- formatting --------------------------------------------------------------------------
  const pad = (n, w = 2) => String(n).padStart(w, "0");

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return "";
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fmtAgo(ms) {
    if (!ms) return "";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
    return `${(s / 86400).toFixed(1)} d ago`;
  }

  function fmtDur(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
    if (ms < 1000) return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
    return `${(ms / 60000).toFixed(1)} min`;
  }

  const fmtRate = (r) => (r ? `${(r * 100).toFixed(r < 0.1 ? 1 : 0)}%` : "0%");
  const fmtInt = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"));
  const shortEvent = (e) => (e || "").replace(/^helmet\./, "");
  const arrow = (d) => (d === "client->server" ? "→" : d === "server->client" ? "←" : "");

  // Search terms as the store matches them: words, the last one also as a prefix.
  function terms(q) {
    return (q || "").toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  }

  function highlight(text, words) {
    const value = text === null || text === undefined ? "" : String(text);
    if (!words || !words.length) return document.createTextNode(value);
    // whole words, and the last one as a prefix to the end of its word (as the search matches)
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const prefix = escaped.pop();
    const whole = escaped.map((w) => `${w}(?![\\p{L}\\p{N}])`);
    const re = new RegExp(`(?<![\\p{L}\\p{N}])(?:${[...whole, `${prefix}[\\p{L}\\p{N}]*`].join("|")})`, "giu");
    const out = document.createDocumentFragment();
    let last = 0;
    for (const m of value.matchAll(re)) {
      if (m.index > last) out.append(value.slice(last, m.index));
      out.append(h("mark", {}, m[0]));
      last = m.index + m[0].length;
    }
    out.append(value.slice(last));
    return out;
  }

  // --- the API -------------------------------------------------------------------------------
  async function api(path, params, signal) {
    const query = params && params.toString();
    const url = path + (query ? `?${query}` : "");
    const first = window.helmetBoot.first; // started by boot.js for the first view: used once
    if (first && first.url === url) window.helmetBoot.first = null;
    const res = await (first && first.url === url ? first.response : fetch(url, {
      credentials: "same-origin",
      headers: { accept: "application/json" },
      signal,
    }));
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = { error: `${res.status} ${res.statusText}` };
    }
    if (!res.ok) {
      const err = new Error(body.error || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function table(headers, rows, cls) {
    return h("table", { class: cls || "" },
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.endsWith("#") ? "num" : "" }, x.replace(/#$/, ""))))),
      h("tbody", {}, rows));
  }

  function cells(values, numeric) {
    return values.map((v, i) => h("td", { class: numeric && numeric.includes(i) ? "num" : "" }, v));
  }

  function windowSelect(current, onChange) {
    return h("select", { onchange: (ev) => onChange(ev.target.value), "aria-label": "window" },
      meta.windows.map((w) => h("option", { value: w, selected: w === current }, w === "all" ? "all time" : `last ${w}`)));
  }

  function setHash(path, params) {
    const query = params.toString();
    history.replaceState(null, "", `#${path}${query ? `?${query}` : ""}`);
  }

  // --- Servers -------------------------------------------------------------------------------
  async function viewServers(gen) {
    const data = await api("/api/servers");
    if (gen !== generation) return;
    if (!data.servers.length) {
      show(h("h1", {}, "Servers"), empty("No servers in this store yet.",
        "Wrap a server with `helmet-otel CMD` (or serve it with `helmet-otel serve -- CMD`): its sessions appear here."));
      markPainted();
      return;
    }
    const rows = data.servers.map((s) => h("tr", { class: "server", dataset: { server: s.name } },
      h("td", { class: "name" }, s.name),
      h("td", { class: "command" }, h("code", {}, s.command || "")),
      h("td", { class: "num" }, fmtInt(s.sessions), s.active ? h("span", { class: "badge live" }, `${s.active} active`) : null),
      h("td", { class: "num" }, fmtInt(s.calls)),
      h("td", { class: "num" + (s.error_rate >= 0.05 ? " bad" : "") }, fmtRate(s.error_rate)),
      h("td", { class: "num p95", dataset: { server: s.name } }, "…"),
      h("td", { title: fmtTime(s.last) }, fmtAgo(s.last)),
      h("td", { class: "num" + (s.findings ? " bad" : "") }, fmtInt(s.findings)),
      h("td", { class: "actions" },
        link(`#/logs?server=${encodeURIComponent(s.name)}`, "View logs"), " ",
        link(`#/sessions?server=${encodeURIComponent(s.name)}`, "Sessions"))));
    show(h("h1", {}, "Servers"),
      table(["Server", "Command or URL", "Sessions#", "Calls#", "Errors#", "p95#", "Last seen", "Findings#", ""], rows, "servers"),
      h("p", { class: "dim" }, "p95 over each server's latest 1,000 answered calls."));
    markPainted();
    const latency = await api("/api/servers/p95");
    if (gen !== generation) return;
    for (const td of main.querySelectorAll("td.p95")) td.textContent = fmtDur(latency.p95_ms[td.dataset.server]) || "–";
  }

  // --- Logs ------------------------------------------------------------------------------------
  function filterParams(state) {
    const p = new URLSearchParams();
    for (const name of FILTERS) if (state[name]) p.set(name, state[name]);
    return p;
  }

  async function viewLogs(gen, params) {
    const state = {};
    for (const name of FILTERS) state[name] = params.get(name) || "";
    const words = () => terms(state.q);
    const view = { cursor: 0, oldest: null, more: false, paused: false, loading: false, timer: 0, count: 0 };
    let requests = new AbortController(); // this view's requests for the current filters

    const serverSelect = h("select", { name: "server", "aria-label": "server" },
      h("option", { value: "" }, "any server"),
      state.server ? h("option", { value: state.server, selected: true }, state.server) : null);
    const listServers = () => api("/api/servers").then((data) => {
      for (const s of data.servers) {
        if (s.name !== state.server) serverSelect.append(h("option", { value: s.name }, s.name));
      }
    }).catch(() => {});
    const eventSelect = h("select", { name: "event", "aria-label": "event" }, h("option", { value: "" }, "any event"),
      state.event ? h("option", { value: state.event, selected: true }, shortEvent(state.event)) : null);
    for (const e of meta.events) {
      if (e !== state.event) eventSelect.append(h("option", { value: e }, shortEvent(e)));
    }
    const input = (name, placeholder, size) => h("input", { name, placeholder, value: state[name], size: size || 12, "aria-label": name });
    const form = h("form", { class: "filters", onsubmit: (ev) => ev.preventDefault() },
      serverSelect,
      input("session", "session id", 14),
      eventSelect,
      h("select", { name: "direction", "aria-label": "direction" },
        h("option", { value: "" }, "both directions"),
        h("option", { value: "client->server", selected: state.direction === "client->server" }, "client → server"),
        h("option", { value: "server->client", selected: state.direction === "server->client" }, "server → client")),
      input("method", "method"),
      input("tool", "tool"),
      h("label", {}, h("input", { type: "checkbox", name: "errors", checked: state.errors === "1" }), " errors only"),
      input("since", "since (1h, 2026-…)", 14),
      input("until", "until", 10),
      h("input", { type: "search", name: "q", placeholder: "search bodies", value: state.q, size: 22, "aria-label": "search" }));

    const liveButton = h("button", { type: "button", class: "live-toggle" }, "Pause");
    const status = h("span", { class: "status-line" });
    const exports = h("span", { class: "exports" }, "Export: ");
    const tbody = h("tbody", { id: "log-rows" });
    const older = h("button", { type: "button", class: "older" }, "Load older");
    const note = h("p", { class: "dim note" });
    show(h("h1", {}, "Logs"), form,
      h("div", { class: "toolbar" }, liveButton, status, exports),
      h("table", { class: "logs" },
        h("thead", {}, h("tr", {}, ["Time", "Session", "Event", "", "Method / tool", "Latency", "Status", "Body"].map((x) => h("th", {}, x)))),
        tbody),
      note, older);

    function updateExports() {
      const p = filterParams(state);
      exports.replaceChildren("Export: ", ...["json", "ndjson", "csv"].flatMap((fmt, i) => {
        const q = new URLSearchParams(p);
        q.set("format", fmt);
        return [i ? " · " : "", h("a", { href: `/api/export?${q}`, download: `helmet-logs.${fmt}`, class: `export-${fmt}` }, fmt.toUpperCase())];
      }));
    }

    function updateStatus(text) {
      const mode = view.paused ? "paused" : "live";
      status.replaceChildren(h("span", { class: `dot ${mode}` }), ` ${mode} · ${fmtInt(view.count)} shown`, text ? ` · ${text}` : "");
      liveButton.textContent = view.paused ? "Resume" : "Pause";
    }

    function recordRows(records) {
      const frag = document.createDocumentFragment();
      const w = words();
      for (const r of records) {
        const ev = shortEvent(r.event);
        const tr = h("tr", { class: `rec${r.error ? " err" : ""}`, dataset: { id: r.id, ts: r.ts } },
          h("td", { class: "time" }, fmtTime(r.t)),
          h("td", { class: "sid" }, r.session ? link(`#/sessions/${encodeURIComponent(r.session)}`, r.session.slice(0, 8), r.session) : ""),
          h("td", { class: "ev" }, h("span", { class: `tag ev-${ev.replace(/[^a-z_]/g, "")}` }, ev)),
          h("td", { class: "dir", title: r.dir || "" }, arrow(r.dir)),
          h("td", { class: "what" }, [r.method, r.target].filter(Boolean).join(" ")),
          h("td", { class: "num" }, fmtDur(r.latency)),
          h("td", { class: "status" }, r.status),
          h("td", { class: "body" }, highlight(r.preview + (r.cut ? " …" : ""), w)));
        tr.addEventListener("click", (event) => {
          if (!event.target.closest("a")) toggleDetail(tr, r);
        });
        frag.append(tr);
        view.count += 1;
      }
      return frag;
    }

    function trim() {
      let rows = tbody.querySelectorAll("tr.rec");
      if (rows.length <= MAX_ROWS) return;
      for (let i = rows.length - 1; i >= MAX_ROWS; i -= 1) {
        const next = rows[i].nextElementSibling;
        if (next && next.classList.contains("detail")) next.remove();
        rows[i].remove();
        view.count -= 1;
      }
      view.more = true;
      rows = tbody.querySelectorAll("tr.rec");
      setOldest(rows[rows.length - 1]);
    }

    function setOldest(tr) {
      view.oldest = tr ? `${tr.dataset.ts}:${tr.dataset.id}` : null;
      older.hidden = !view.more;
    }

    async function toggleDetail(tr, r) {
      const next = tr.nextElementSibling;
      if (next && next.classList.contains("detail")) {
        next.remove();
        tr.classList.remove("open");
        return;
      }
      tr.classList.add("open");
      const cell = h("td", { colspan: 8 }, h("p", { class: "dim" }, "Loading…"));
      tr.after(h("tr", { class: "detail" }, cell));
      try {
        const data = await api("/api/record", new URLSearchParams({ id: r.id }));
        const w = words();
        const part = (title, item) => h("section", {},
          h("h4", {}, title),
          item ? h("pre", { class: "json" }, highlight(item.json, w)) : h("p", { class: "dim" }, "not in the store"));
        const other = r.kind === "request" ? "Its answer" : (r.kind === "response" || r.kind === "error") ? "Its request" : null;
        cell.replaceChildren(h("div", { class: other ? "pair" : "single" },
          part("Record", data.record), other ? part(other, data.pair) : null));
      } catch (error) {
        cell.replaceChildren(failure(error));
      }
    }

    async function firstPage(signal) {
      const p = filterParams(state);
      p.set("limit", PAGE);
      const data = await api("/api/logs", p, signal);
      if (gen !== generation || signal.aborted) return;
      tbody.replaceChildren();
      view.count = 0;
      view.cursor = data.cursor;
      view.more = false; // (no paging back until the whole page is in)
      view.oldest = null;
      // a screenful first: it is painted before the rest of the page's rows are built
      tbody.append(recordRows(data.records.slice(0, SCREEN_ROWS)));
      note.textContent = data.records.length ? "" : "No records match these filters yet; new ones appear here as they are written.";
      tbody.dataset.loads = String(Number(tbody.dataset.loads || 0) + 1); // a new first page is on the screen
      updateStatus();
      markPainted();
      if (data.records.length > SCREEN_ROWS) {
        await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
        if (gen !== generation || signal.aborted) return;
        tbody.append(recordRows(data.records.slice(SCREEN_ROWS)));
        updateStatus();
      }
      view.more = data.more;
      const rows = tbody.querySelectorAll("tr.rec");
      setOldest(rows[rows.length - 1]);
    }

    async function loadOlder() {
      if (view.loading || !view.more || !view.oldest) return;
      view.loading = true;
      const signal = requests.signal;
      try {
        const p = filterParams(state);
        p.set("limit", PAGE);
        p.set("before", view.oldest);
        const data = await api("/api/logs", p, signal);
        if (gen !== generation || signal.aborted) return;
        view.more = data.more;
        tbody.append(recordRows(data.records));
        const rows = tbody.querySelectorAll("tr.rec");
        setOldest(rows[rows.length - 1]);
        updateStatus(view.more ? "" : "oldest record reached");
      } catch (error) {
        if (!signal.aborted) note.replaceChildren(failure(error));
      } finally {
        view.loading = false;
      }
    }

    async function poll() {
      view.timer = 0;
      if (gen !== generation || view.paused) return;
      const signal = requests.signal;
      try {
        const p = filterParams(state);
        p.set("after", view.cursor);
        const data = await api("/api/tail", p, signal);
        if (gen !== generation || view.paused || signal.aborted) return;
        if (data.records.length) {
          if (data.gap) {
            // more arrived than the page keeps: show the newest, page back for the rest
            tbody.replaceChildren();
            view.count = 0;
            view.more = true;
          }
          note.textContent = "";
          tbody.prepend(recordRows(data.records));
          trim();
          const rows = tbody.querySelectorAll("tr.rec");
          setOldest(rows[rows.length - 1]);
        }
        view.cursor = data.cursor;
        updateStatus();
      } catch (error) {
        if (signal.aborted) return; // the filters changed: reload() polls on with the new ones
        updateStatus(String(error.message || error));
      }
      if (gen === generation && !view.paused && !signal.aborted) view.timer = setTimeout(poll, POLL_MS);
    }

    // New filters: the requests made for the old ones are cancelled (the newest typing wins).
    async function reload() {
      requests.abort();
      requests = new AbortController();
      const signal = requests.signal;
      setHash("/logs", filterParams(state));
      updateExports();
      clearTimeout(view.timer);
      view.timer = 0;
      try {
        await firstPage(signal);
      } catch (error) {
        if (gen !== generation || signal.aborted) return;
        tbody.replaceChildren();
        note.replaceChildren(failure(error));
        markPainted();
      }
      if (gen === generation && !signal.aborted && !view.paused && !view.timer) view.timer = setTimeout(poll, POLL_MS);
    }

    let debounce = 0;
    form.addEventListener("input", (ev) => {
      const el = ev.target;
      state[el.name] = el.type === "checkbox" ? (el.checked ? "1" : "") : el.value.trim();
      clearTimeout(debounce);
      debounce = setTimeout(reload, el.tagName === "SELECT" || el.type === "checkbox" ? 0 : TYPING_MS);
    });
    liveButton.addEventListener("click", () => {
      view.paused = !view.paused;
      updateStatus();
      clearTimeout(view.timer);
      view.timer = 0;
      if (!view.paused) poll();
    });
    older.addEventListener("click", loadOlder);
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadOlder();
    });
    observer.observe(older);
    stopCurrent = () => {
      requests.abort();
      clearTimeout(view.timer);
      observer.disconnect();
    };
    await reload();
    listServers(); // (after the first page: it is not needed to paint it)
  }

  // --- Sessions ---------------------------------------------------------------------------------
  function statusBadge(status) {
    return h("span", { class: `badge st-${status}` }, status);
  }

  async function viewSessions(gen, params) {
    const server = params.get("server") || "";
    const p = new URLSearchParams();
    if (server) p.set("server", server);
    const data = await api("/api/sessions", p);
    if (gen !== generation) return;
    const title = h("h1", {}, "Sessions", server ? h("span", { class: "dim" }, ` of ${server}`) : null);
    if (!data.sessions.length) {
      show(title, empty("No sessions yet.", "Each connection through the proxy becomes a session."));
      markPainted();
      return;
    }
    const rows = data.sessions.map((s) => h("tr", { class: "session" },
      h("td", {}, fmtTime(s.t)),
      h("td", { class: "sid" }, link(`#/sessions/${encodeURIComponent(s.id)}`, s.id.slice(0, 12), s.id)),
      h("td", {}, s.server || ""),
      h("td", {}, s.client || ""),
      h("td", {}, statusBadge(s.status)),
      h("td", { class: "num" }, fmtDur(s.duration_ms)),
      h("td", { class: "num" }, fmtInt(s.requests)),
      h("td", { class: "num" + (s.errors ? " bad" : "") }, fmtInt(s.errors)),
      h("td", {}, link(`#/logs?session=${encodeURIComponent(s.id)}`, "Logs"))));
    show(title, table(["Started", "Session", "Server", "Client", "Status", "Duration#", "Requests#", "Errors#", ""], rows, "sessions"),
      data.total > data.sessions.length ? h("p", { class: "dim" }, `The newest ${data.sessions.length} of ${data.total}.`) : null);
    markPainted();
  }

  // The trace as bars on a time axis; ``data.zoom`` ([from, to], ms after the start) narrows
  // it. Dragging across the bars asks for that range (zoom(from, to)).
  function waterfall(data, zoom) {
    const [low, high] = data.zoom || [0, data.span_ms];
    const scale = Math.max(high - low, 0.001);
    const at = (ms) => Math.min(100, Math.max(0, ((ms - low) / scale) * 100));
    const active = data.session.status === "active";
    const rows = data.spans.map((s) => {
      const bar = h("div", { class: `bar kind-${s.kind.toLowerCase()}${s.status === "ERROR" ? " err" : ""}`,
        title: `${s.name} · ${fmtDur(s.duration_ms)}${s.message ? ` · ${s.message}` : ""}` });
      const left = at(s.offset_ms);
      bar.style.left = `${left}%`;
      bar.style.width = `max(2px, ${at(s.offset_ms + (s.duration_ms || 0)) - left}%)`;
      const label = h("div", { class: "label" }, h("span", { class: "tag" }, s.kind), " ", s.name);
      label.style.paddingLeft = `${s.depth * 14 + 4}px`;
      return h("div", { class: `wrow${s.status === "ERROR" ? " err" : ""}` }, label,
        h("div", { class: "track" }, bar), h("div", { class: "dur num" }, fmtDur(s.duration_ms)));
    });
    for (const p of data.pending) {
      const bar = h("div", { class: "bar pending", title: active ? "in flight" : "no answer" });
      const left = at(p.offset_ms);
      bar.style.left = `${left}%`;
      bar.style.width = `${100 - left}%`;
      const label = h("div", { class: "label" }, h("span", { class: "tag" }, active ? "IN FLIGHT" : "NO ANSWER"), " ",
        [p.method, p.target].filter(Boolean).join(" "), h("span", { class: "dim" }, ` #${p.rid}`));
      rows.push(h("div", { class: "wrow pending-row" }, label, h("div", { class: "track" }, bar), h("div", { class: "dur num" }, active ? "…" : "")));
    }
    const band = h("div", { class: "zoom-band", hidden: true });
    const box = h("div", { class: "waterfall" },
      h("div", { class: "wrow axis" }, h("div", { class: "label dim" }, "span"),
        h("div", { class: "track dim" }, h("span", { class: "from" }, fmtDur(low) || "0"), h("span", { class: "end" }, fmtDur(high))), h("div", { class: "dur" })),
      rows, band);
    // drag across the tracks to zoom into that stretch of time
    let drag = null;
    box.addEventListener("pointerdown", (ev) => {
      const track = ev.target.closest(".track");
      if (!track || ev.button !== 0) return;
      const rect = track.getBoundingClientRect();
      drag = { rect, x: ev.clientX, box: box.getBoundingClientRect() };
      box.setPointerCapture(ev.pointerId);
      ev.preventDefault();
    });
    box.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const a = Math.max(drag.rect.left, Math.min(drag.x, ev.clientX));
      const b = Math.min(drag.rect.right, Math.max(drag.x, ev.clientX));
      band.hidden = false;
      band.style.left = `${a - drag.box.left}px`;
      band.style.width = `${b - a}px`;
    });
    box.addEventListener("pointerup", (ev) => {
      if (!drag) return;
      const { rect, x } = drag;
      drag = null;
      band.hidden = true;
      const a = Math.max(rect.left, Math.min(x, ev.clientX));
      const b = Math.min(rect.right, Math.max(x, ev.clientX));
      if (b - a < 4) return; // a click, not a drag
      const ms = (px) => low + ((px - rect.left) / rect.width) * scale;
      zoom(ms(a), ms(b));
    });
    return box;
  }

  async function viewSession(gen, id, params) {
    const q = new URLSearchParams({ id });
    for (const name of ["from", "to"]) if (params.get(name)) q.set(name, params.get(name));
    const data = await api("/api/session", q);
    if (gen !== generation) return;
    const zoomTo = (from, to) => {
      const z = new URLSearchParams();
      if (from !== null && (from > 0 || to < data.span_ms)) {
        z.set("from", Math.max(0, from).toFixed(3));
        z.set("to", Math.min(data.span_ms, to).toFixed(3));
      }
      location.hash = `#/sessions/${encodeURIComponent(id)}${z.toString() ? `?${z}` : ""}`;
    };
    const s = data.session;
    const n = data.numbers;
    const card = (label, value, bad) => h("div", { class: `card${bad ? " bad" : ""}` }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
    const facts = [
      ["Server", s.server], ["Command", s.command], ["Transport", s.transport], ["Client", s.client],
      ["Protocol", [s.protocol, s.era].filter(Boolean).join(" · ")], ["Started", fmtTime(s.t)],
      ["Ended", s.end ? fmtTime(s.end) : ""], ["Exit", [s.exit_status, s.exit_reason].filter((x) => x !== null && x !== undefined && x !== "").join(" · ")],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    const records = h("tbody");
    show(
      h("h1", {}, "Session ", h("code", {}, s.id), " ", s.status ? statusBadge(s.status) : null),
      h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
      h("div", { class: "cards" },
        card("records", fmtInt(n.records)), card("requests", fmtInt(n.requests)), card("answered", fmtInt(n.answered)),
        card("errors", fmtInt(n.errors), n.errors > 0), card("p50", fmtDur(n.p50_ms) || "–"), card("p95", fmtDur(n.p95_ms) || "–"),
        card("max", fmtDur(n.max_ms) || "–"), card("duration", fmtDur(s.duration_ms) || "–")),
      h("h2", {}, "Trace"),
      h("p", { class: "dim zoom-bar" }, data.zoom
        ? [`${fmtDur(data.zoom[0]) || "0"} to ${fmtDur(data.zoom[1])} of ${fmtDur(data.span_ms)}. `,
          h("button", { type: "button", class: "zoom-out", onclick: () => zoomTo(data.zoom[0] - (data.zoom[1] - data.zoom[0]) / 2, data.zoom[1] + (data.zoom[1] - data.zoom[0]) / 2) }, "Zoom out"), " ",
          h("button", { type: "button", class: "zoom-reset", onclick: () => zoomTo(null, null) }, "Whole session")]
        : "Drag across the bars to zoom in."),
      data.spans.length || data.pending.length ? waterfall(data, zoomTo) : empty(data.zoom ? "No spans in this range." : "No spans stored for this session yet.", data.zoom ? "Zoom out to see more." : "Spans are stored when they end."),
      data.spans_in_range > data.spans.length ? h("p", { class: "dim" }, `The first ${data.spans.length} of ${fmtInt(data.spans_in_range)} spans in this range: zoom in to see the others.`) : null,
      h("h2", {}, "Records ", link(`#/logs?session=${encodeURIComponent(s.id)}`, "in Logs →")),
      h("table", { class: "logs compact" },
        h("thead", {}, h("tr", {}, ["Time", "Event", "", "Method / tool", "Latency", "Status", "Body"].map((x) => h("th", {}, x)))), records));
    markPainted();
    const page = await api("/api/logs", new URLSearchParams({ session: s.id, limit: 500 }));
    if (gen !== generation) return;
    for (const r of page.records.reverse()) {
      records.append(h("tr", { class: `rec${r.error ? " err" : ""}` },
        h("td", { class: "time" }, fmtTime(r.t)), h("td", {}, h("span", { class: "tag" }, shortEvent(r.event))),
        h("td", {}, arrow(r.dir)), h("td", {}, [r.method, r.target].filter(Boolean).join(" ")),
        h("td", { class: "num" }, fmtDur(r.latency)), h("td", {}, r.status), h("td", { class: "body" }, r.preview)));
    }
    if (page.more) records.append(h("tr", {}, h("td", { colspan: 7, class: "dim" }, "The latest 500 records; all of them are in Logs.")));
  }

  // --- Security ---------------------------------------------------------------------------------
  async function viewSecurity(gen, params) {
    const window = params.get("window") || "24h";
    const data = await api("/api/security", new URLSearchParams({ window }));
    if (gen !== generation) return;
    const picker = windowSelect(window, (w) => { location.hash = `#/security?window=${encodeURIComponent(w)}`; });
    if (!data.total) {
      show(h("h1", {}, "Security ", picker),
        empty("No security findings in this window.",
          "Policy blocks (a server run with --policy FILE that has a deny rule), tool definition drift, new tools and sensitive arguments are recorded as helmet.security records; they appear here by policy, tool and type, newest first, as soon as the proxy writes them."));
      markPainted();
      return;
    }
    const card = (value, label, cls) => h("div", { class: `card ${cls || ""}` }, h("div", { class: "value" }, fmtInt(value)), h("div", { class: "label" }, label));
    const logsOf = (f) => {
      const q = new URLSearchParams({ event: "helmet.security" });
      if (f.tool) q.set("tool", f.tool);
      if (f.session) q.set("session", f.session);
      return `#/logs?${q}`;
    };
    const blocks = data.blocks_by_rule.map((b) => h("tr", { class: "block", dataset: { rule: b.rule || "" } }, cells([
      b.rule || "", b.tool || "", b.server || "", fmtInt(b.enforced), b.shadow ? fmtInt(b.shadow) : "", fmtTime(b.t),
      link(logsOf(b), "View logs")], [3, 4])));
    const types = data.by_type.map((c) => h("tr", { class: "type", dataset: { type: c.type } }, cells([
      c.type, h("span", { class: `sev sev-${(c.severity || "").replace(/[^a-z]/g, "")}` }, c.severity || ""), fmtInt(c.count), fmtTime(c.t)], [2])));
    const latest = data.latest.map((f) => h("tr", { class: "finding" }, cells([
      fmtTime(f.t), f.type, h("span", { class: `sev sev-${(f.severity || "").replace(/[^a-z]/g, "")}` }, f.severity || ""), f.rule || "", f.service || "",
      f.session ? link(`#/sessions/${encodeURIComponent(f.session)}`, f.session.slice(0, 8), f.session) : "",
      f.target || "", f.preview])));
    show(h("h1", {}, "Security ", picker),
      h("div", { class: "cards" },
        card(data.total, "findings", "bad"),
        card(data.blocks, "calls blocked by policy", data.blocks ? "bad" : ""),
        data.shadow_blocks ? card(data.shadow_blocks, "shadow-mode denials (not blocked)") : null),
      h("h2", {}, "Blocks by policy and tool"),
      blocks.length
        ? table(["Rule", "Tool", "Server", "Blocked#", "Shadow#", "Last", ""], blocks, "blocks")
        : h("p", { class: "dim" }, "No call was denied by a policy rule in this window."),
      h("h2", {}, "Findings by type"),
      table(["Type", "Severity", "Count#", "Last"], types, "types"),
      h("h2", {}, "Latest findings"),
      table(["Time", "Type", "Severity", "Rule", "Server", "Session", "Tool", "Message"], latest, "findings"));
    markPainted();
  }

  // --- Stats ------------------------------------------------------------------------------------
  async function viewStats(gen, params) {
    const window = params.get("window") || "1h";
    const by = params.get("by") === "tool" ? "tool" : "method";
    const go = (w, b) => { location.hash = `#/stats?window=${encodeURIComponent(w)}&by=${b}`; };
    const data = await api("/api/stats", new URLSearchParams({ window, by }));
    if (gen !== generation) return;
    const controls = h("span", { class: "controls" }, windowSelect(window, (w) => go(w, by)),
      h("select", { onchange: (ev) => go(window, ev.target.value), "aria-label": "group by" },
        h("option", { value: "method", selected: by === "method" }, "per method"),
        h("option", { value: "tool", selected: by === "tool" }, "per tool")));
    const rows = data.rows.map((r) => h("tr", {}, cells([
      r.method, r.target || "", fmtInt(r.calls), fmtInt(r.errors), fmtRate(r.error_rate), fmtDur(r.p50_ms),
      fmtDur(r.p95_ms), fmtDur(r.p99_ms), fmtDur(r.max_ms), fmtInt(r.bytes)], [2, 3, 4, 5, 6, 7, 8, 9])));
    show(h("h1", {}, "Stats ", controls),
      data.rows.length
        ? table(["Method", "Tool", "Calls#", "Errors#", "Error rate#", "p50#", "p95#", "p99#", "Max#", "Bytes#"], rows, "stats")
        : empty("No calls in this window."),
      data.errors.length ? h("h2", {}, "Most frequent errors") : null,
      data.errors.length ? table(["Method", "Tool", "Error", "Count#", "Last"], data.errors.map((e) => h("tr", {},
        cells([e.method, e.target || "", e.error, fmtInt(e.count), fmtTime(e.t)], [3])))) : null);
    markPainted();
  }

  // --- routing ----------------------------------------------------------------------------------
  let stopCurrent = () => {};

  async function route() {
    generation += 1;
    const gen = generation;
    if (gen > 1) window.helmetBoot.first = null; // (a guess boot.js got wrong is never used later)
    stopCurrent();
    stopCurrent = () => {};
    const { view, id, params } = parseHash(location.hash);
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
    try {
      if (view === "logs") await viewLogs(gen, params);
      else if (view === "sessions" && id) await viewSession(gen, decodeURIComponent(id), params);
      else if (view === "sessions") await viewSessions(gen, params);
      else if (view === "security") await viewSecurity(gen, params);
      else if (view === "stats") await viewStats(gen, params);
      else await viewServers(gen);
    } catch (error) {
      if (gen !== generation) return;
      show(failure(error));
      markPainted();
    }
  }

  function start() {
    // the printed URL's token is in a cookie now: take it out of the address bar and history
    if (location.search) history.replaceState(null, "", location.pathname + location.hash);
    window.addEventListener("hashchange", route);
    route(); // the first view's query starts now, while the rest of the page settles
    document.getElementById("store").textContent = meta.store;
  }

  start();
})();
