// helmet-otel ui: runs first, in the page's head. It starts the first view's query at once, so
// the query runs while the browser reads the rest of the page; app.js takes the answer over
// (api() in app.js uses it when it asks for the same URL, else it asks again).
"use strict";

window.helmetBoot = (() => {
  const FILTERS = ["server", "session", "event", "direction", "method", "tool", "errors", "since", "until", "q"];
  const PAGE = 200;

  // "#/logs?server=x" -> { view: "logs", id: undefined, params }; as app.js routes
  function parseHash(hash) {
    const [path, query] = (hash.replace(/^#/, "") || "/servers").split("?", 2);
    const parts = path.split("/").filter(Boolean);
    return { view: parts[0] || "servers", id: parts[1], params: new URLSearchParams(query || "") };
  }

  // the log view's query for its filters (the same string app.js builds)
  function logsUrl(params) {
    const p = new URLSearchParams();
    for (const name of FILTERS) if (params.get(name)) p.set(name, params.get(name));
    p.set("limit", PAGE);
    return `/api/logs?${p}`;
  }

  const where = parseHash(location.hash);
  let url = null;
  if (where.view === "logs") url = logsUrl(where.params);
  else if (where.view === "servers" || !["sessions", "security", "stats"].includes(where.view)) url = "/api/servers";
  const first = url && { url, response: fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } }) };
  if (first) first.response.catch(() => {}); // app.js reports failures when it asks
  return { FILTERS, PAGE, parseHash, logsUrl, first };
})();
