/* The status page's live updates.
 *
 * The server renders the first paint and embeds the same snapshot as JSON. Updates
 * arrive whole over the StatusSocket (/ws/status); each one patches only the cells
 * whose text changed (textContent), in the manner of healthchecks' checks.js. If the
 * socket drops, the page says so, reconnects with jittered backoff and polls
 * status.json meanwhile. Formats mirror controlplane/wording.py.
 */
(function () {
  "use strict";

  const root = document.getElementById("status");
  const live = document.getElementById("live");
  const liveText = document.getElementById("live-text");
  const POLL_SECONDS = 10;
  const BACKOFF_MAX = 30;

  let snapshot = JSON.parse(document.getElementById("status-snapshot").textContent);
  let offset = Date.now() / 1000 - snapshot.generated; // client clock minus server's
  let updated = Date.now();

  /* Formats */

  function duration(seconds) {
    let s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    let m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return m + " min" + (s && m < 5 ? " " + s + " s" : "");
    let h = Math.floor(m / 60);
    m %= 60;
    if (h < 24) return h + " h" + (m ? " " + m + " min" : "");
    const d = Math.floor(h / 24);
    h %= 24;
    return d + " d" + (h ? " " + h + " h" : "");
  }

  function serverNow() {
    return Date.now() / 1000 - offset;
  }

  const FORMATS = {
    text: (v) => (v === null || v === undefined ? "" : String(v)),
    orblank: (v) => (v === null || v === undefined || v === "" ? "—" : String(v)),
    candle: (v) => (v ? String(v).slice(0, 16).replace("T", " ") : "—"),
    ago: (v) => (v === null || v === undefined ? "—" : duration(serverNow() - v) + " ago"),
    clock: (v) => (v === null || v === undefined ? "—" : new Date(v * 1000).toISOString().slice(11, 19)),
    count: (v) => (v === null || v === undefined ? "—" : String(v).replace(/\B(?=(\d{3})+(?!\d))/g, " ")),
    size: (v) => {
      if (v === null || v === undefined) return "—";
      const units = ["B", "KiB", "MiB", "GiB"];
      let i = 0;
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
      return i === 0 ? Math.round(v) + " B" : v.toFixed(1) + " " + units[i];
    },
    every: (v) => "every " + (v < 60 && v !== Math.floor(v) ? v + " s" : duration(v)),
    lag: (v) => (v === null || v === undefined ? "—" : v === 0 ? "none" : v + " candle" + (v > 1 ? "s" : "")),
    link: (v) => (v === true ? "connected" : v === false ? "disconnected" : "—"),
    worker: (v) => (v ? String(v) : "none connected"),
    since: (v) => (v === null || v === undefined ? "" : ", connected " + duration(serverNow() - v) + " ago"),
  };

  /* Patching */

  function lookup(obj, path) {
    return path.split(".").reduce((o, k) => (o === null || o === undefined ? o : o[k]), obj);
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function setData(el, name, value) {
    if (el.dataset[name] !== value) el.dataset[name] = value;
  }

  function ownFields(el) {
    const owner = el.matches("[data-key]") ? el : null;
    return Array.from(el.querySelectorAll("[data-field]")).filter((f) => f.closest("[data-key]") === owner);
  }

  function fill(el, obj) {
    for (const field of ownFields(el)) {
      const value = lookup(obj, field.dataset.field);
      const format = field.dataset.format || "text";
      if (format === "ago" || format === "since") {
        setData(field, "epoch", value === null || value === undefined ? "" : String(value));
      }
      setText(field, FORMATS[format](value));
      if ("badge" in field.dataset) setData(field, "state", String(value));
    }
    if (obj.state !== undefined && el.matches("[data-key]")) setData(el, "state", obj.state);
  }

  function fromTemplate(id) {
    const content = document.getElementById(id).content;
    return content.querySelector("article, tr, li").cloneNode(true);
  }

  function syncList(container, items, keyOf, fillItem) {
    const existing = new Map();
    for (const child of Array.from(container.children)) existing.set(child.dataset.key, child);
    let previous = null;
    for (const item of items) {
      const key = keyOf(item);
      let el = existing.get(key);
      if (el) {
        existing.delete(key);
      } else {
        el = fromTemplate(container.dataset.template);
        el.dataset.key = key;
      }
      fillItem(el, item);
      const wanted = previous ? previous.nextElementSibling : container.firstElementChild;
      if (el !== wanted) container.insertBefore(el, wanted);
      previous = el;
    }
    for (const el of existing.values()) el.remove();
    const scope = container.closest("[data-key]") || container.closest("section");
    const empty = scope && scope.querySelector('[data-empty-for="' + container.dataset.list + '"]');
    if (empty) empty.hidden = items.length > 0;
  }

  function list(el, name) {
    return el.querySelector('[data-list="' + name + '"]');
  }

  function fillLine(el, line) {
    setText(el, line);
  }

  function fillProducer(el, p) {
    fill(el, p);
    syncList(list(el, "pairs"), p.pairs, (r) => r.pair, fill);
    syncList(list(el, "subscribers"), p.subscribers, (s) => s.id, fill);
  }

  function lagRows(c) {
    const rows = [];
    for (const f of c.follows) {
      for (const lag of f.pairs) {
        rows.push(Object.assign({}, lag, { follow: f.name, key: f.name + " " + lag.pair, state: lag.lag ? "lagging" : "ok" }));
      }
    }
    return rows;
  }

  function fillConsumer(el, c) {
    fill(el, c);
    setData(el, "problem", c.problem ? "yes" : "no");
    syncList(list(el, "follows"), c.follows, (f) => f.name, fill);
    syncList(list(el, "lags"), lagRows(c), (r) => r.key, fill);
    syncList(list(el, "signals"), c.signals, (line) => line, fillLine);
  }

  function apply(next) {
    snapshot = next;
    root.statusSnapshot = next; // the chart reads the newest one from here
    offset = Date.now() / 1000 - next.generated;
    updated = Date.now();
    const summary = document.getElementById("summary");
    fill(summary, next);
    setData(summary, "state", next.problems.length ? "problem" : "ok");
    syncList(list(summary, "problems"), next.problems, (line) => line, fillLine);
    syncList(list(root, "producers"), next.producers, (p) => p.name, fillProducer);
    syncList(list(root, "consumers"), next.consumers, (c) => c.name, fillConsumer);
    document.dispatchEvent(new CustomEvent("status:snapshot", { detail: next }));
  }

  /* The connection: socket first, polling while it is down */

  let attempts = 0;
  let reconnectAt = null;
  let pollTimer = null;
  let sessionEnded = false;

  function setLive(state, text) {
    setData(live, "state", state);
    setText(liveText, text);
  }

  function backoff(n) {
    const base = Math.min(BACKOFF_MAX, 2 ** n);
    return base * (0.5 + Math.random() / 2);
  }

  function connect() {
    reconnectAt = null;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + root.dataset.socketPath);
    socket.onopen = () => {
      attempts = 0;
      stopPolling();
      setLive("live", "Live");
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "snapshot") apply(message.data);
    };
    socket.onclose = () => {
      const delay = backoff(attempts);
      attempts += 1;
      reconnectAt = Date.now() + delay * 1000;
      startPolling();
      setTimeout(connect, delay * 1000);
      tick();
    };
  }

  async function poll() {
    try {
      const response = await fetch(root.dataset.jsonUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401 || response.status === 403) {
        sessionEnded = true;
        return;
      }
      if (response.ok) {
        sessionEnded = false;
        apply(await response.json());
      }
    } catch (error) {
      /* the hub is unreachable: the banner says so, the next poll retries */
    }
  }

  function startPolling() {
    if (pollTimer === null) pollTimer = setInterval(poll, POLL_SECONDS * 1000);
  }

  function stopPolling() {
    if (pollTimer !== null) clearInterval(pollTimer);
    pollTimer = null;
  }

  /* Every second: ages, and the connection banner's countdown */

  function tick() {
    for (const el of document.querySelectorAll('[data-format="ago"], [data-format="since"]')) {
      const epoch = el.dataset.epoch;
      setText(el, FORMATS[el.dataset.format](epoch ? Number(epoch) : null));
    }
    if (reconnectAt !== null) {
      const wait = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
      const since = duration((Date.now() - updated) / 1000);
      const text = sessionEnded
        ? "Your session ended: log in again to see live updates"
        : "Connection lost: reconnecting in " + wait + " s; polling every " + POLL_SECONDS + " s meanwhile (data " + since + " old)";
      setLive(sessionEnded ? "ended" : "down", text);
    } else if (live.dataset.state === "live") {
      setText(liveText, "Live · updated " + duration((Date.now() - updated) / 1000) + " ago");
    }
  }

  apply(snapshot);
  setInterval(tick, 1000);
  if ("WebSocket" in window) connect();
  else startPolling();
})();
