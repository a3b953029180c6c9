/* The status page's chart: one producer's pair, from the hub's latest analysed rows.
 *
 * Drawn with TradingView's lightweight-charts (vendored, no network). Candles and
 * volume, the indicators that follow the price as lines over them, one chosen
 * indicator in a lower pane, entry/exit signals as markers. status.js announces each
 * snapshot; when the chosen pair's newest candle changes, the data is fetched again.
 */
(function () {
  "use strict";

  const root = document.getElementById("status");
  const box = document.getElementById("chart");
  const note = document.getElementById("chart-note");
  const legend = document.getElementById("chart-legend");
  const producerSelect = document.getElementById("chart-producer");
  const pairSelect = document.getElementById("chart-pair");
  const lowerSelect = document.getElementById("chart-lower");
  const lowerLabel = document.getElementById("chart-lower-label");
  const LWC = window.LightweightCharts;
  const COLORS = ["#2563eb", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];
  const MARKERS = {
    enter_long: { position: "belowBar", color: "#15803d", shape: "arrowUp" },
    exit_long: { position: "aboveBar", color: "#b91c1c", shape: "arrowDown" },
    enter_short: { position: "aboveBar", color: "#c2410c", shape: "arrowDown" },
    exit_short: { position: "belowBar", color: "#1d4ed8", shape: "arrowUp" },
  };

  let chart = null;
  let candles = null;
  let volume = null;
  let markers = null;
  let overlays = new Map();
  let lower = null;
  let data = null;
  let shownKey = null;
  let shownCandle = null;
  let loading = false;

  function snapshotNow() {
    return root.statusSnapshot || JSON.parse(document.getElementById("status-snapshot").textContent);
  }

  function build() {
    chart = LWC.createChart(box, {
      autoSize: true,
      layout: {
        background: { color: "#ffffff" },
        textColor: "#374151",
        fontFamily: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif",
        panes: { separatorColor: "#e5e7eb" },
      },
      grid: { vertLines: { color: "#f3f4f6" }, horzLines: { color: "#f3f4f6" } },
      rightPriceScale: { borderVisible: false },
      timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false },
    });
    candles = chart.addSeries(LWC.CandlestickSeries, {
      upColor: "#16a34a", downColor: "#dc2626", borderVisible: false,
      wickUpColor: "#16a34a", wickDownColor: "#dc2626",
    });
    volume = chart.addSeries(LWC.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "volume", lastValueVisible: false, priceLineVisible: false,
    });
    volume.priceScale().applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
    markers = LWC.createSeriesMarkers(candles, []);
  }

  function line(color, pane) {
    return chart.addSeries(LWC.LineSeries, {
      color: color, lineWidth: 1.5, priceLineVisible: false, lastValueVisible: false,
      crosshairMarkerVisible: false,
    }, pane);
  }

  function points(list) {
    return list.map((p) => ({ time: p[0], value: p[1] }));
  }

  function drawOverlays() {
    for (const series of overlays.values()) chart.removeSeries(series);
    overlays = new Map();
    legend.textContent = "";
    Object.keys(data.overlays).forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      const series = line(color, 0);
      series.setData(points(data.overlays[name]));
      overlays.set(name, series);
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = color;
      item.append(swatch, name);
      legend.append(item);
    });
    const kinds = new Map();
    for (const m of data.markers) {
      if (!kinds.has(m.kind)) kinds.set(m.kind, new Set());
      kinds.get(m.kind).add(m.text);
    }
    for (const [kind, texts] of kinds) {
      const item = document.createElement("span");
      item.style.color = MARKERS[kind].color;
      const arrow = MARKERS[kind].shape === "arrowUp" ? "▲" : "▼";
      item.textContent = arrow + " " + kind + " (" + Array.from(texts).join(", ") + ")";
      legend.append(item);
    }
  }

  function drawLower() {
    if (lower) chart.removeSeries(lower);
    lower = null;
    const name = lowerSelect.value;
    lowerLabel.hidden = true;
    if (!name || !data.oscillators[name]) return;
    lower = line("#7c3aed", 1);
    lower.setData(points(data.oscillators[name]));
    // Candles get three quarters of the height, the lower pane the rest.
    const panes = chart.panes();
    if (panes[1]) {
      panes[0].setStretchFactor(3);
      panes[1].setStretchFactor(1);
    }
    lowerLabel.textContent = name;
    requestAnimationFrame(placeLowerLabel);  // once the panes have their new heights
  }

  // The lower pane's name, at its top left, as the candles' legend names the lines.
  function placeLowerLabel() {
    const pane = lower && chart.panes()[1];
    const element = pane && pane.getHTMLElement();
    if (!element) return;
    const top = element.getBoundingClientRect().top - box.getBoundingClientRect().top;
    lowerLabel.style.top = Math.round(top + 4) + "px";
    lowerLabel.hidden = false;
  }

  // The whole history, with a margin on the left: a time label on the first candle
  // would be cut in half by the chart's edge.
  function showAll() {
    const n = data.candles.length;
    if (!n) return;
    chart.timeScale().setVisibleLogicalRange({ from: -Math.max(3, n * 0.04), to: n - 1 + Math.max(2, n * 0.02) });
  }

  function fillLowerChoices() {
    const names = Object.keys(data.oscillators);
    const current = lowerSelect.value || (names.includes("rsi") ? "rsi" : names[0]);
    if (Array.from(lowerSelect.options).map((o) => o.value).join() !== ["", ...names].join()) {
      lowerSelect.textContent = "";
      lowerSelect.append(new Option("none", ""));
      for (const name of names) lowerSelect.append(new Option(name, name));
    }
    lowerSelect.value = names.includes(current) ? current : "";
  }

  function draw(fresh) {
    candles.setData(data.candles.map((c) => ({ time: c[0], open: c[1], high: c[2], low: c[3], close: c[4] })));
    const up = new Map(data.candles.map((c) => [c[0], c[4] >= c[1]]));
    volume.setData(data.volume.map((v) => ({
      time: v[0], value: v[1], color: up.get(v[0]) ? "rgba(22,163,74,0.25)" : "rgba(220,38,38,0.25)",
    })));
    // Arrows only: tags as text overlap on a busy chart; the legend names them.
    markers.setMarkers(data.markers.map((m) => Object.assign({ time: m.time }, MARKERS[m.kind])));
    drawOverlays();
    fillLowerChoices();
    drawLower();
    if (fresh) showAll();
  }

  async function load(fresh) {
    const producer = producerSelect.value;
    const pair = pairSelect.value;
    if (!producer || !pair || loading) return;
    loading = true;
    try {
      const query = new URLSearchParams({ producer: producer, pair: pair });
      const response = await fetch(root.dataset.chartUrl + "?" + query, { credentials: "same-origin" });
      const body = await response.json();
      if (!response.ok) {
        box.dataset.empty = body.error || "no data";
        return;
      }
      delete box.dataset.empty;
      data = body;
      draw(fresh);
      note.textContent = producer + " " + pair + " · " + data.timeframe + " · " + data.candles.length +
        " candles, the latest analysed at " + data.la.slice(11, 19) + " UTC · " + data.markers.length + " signal(s) shown.";
    } catch (error) {
      box.dataset.empty = "the chart data could not be loaded";
    } finally {
      loading = false;
    }
  }

  function fillPairs(snap) {
    const producer = snap.producers.find((p) => p.name === producerSelect.value);
    const pairs = producer ? producer.pairs.map((r) => r.pair) : [];
    const wanted = pairSelect.value || pairSelect.dataset.chosen;
    if (Array.from(pairSelect.options).map((o) => o.value).join() !== pairs.join()) {
      pairSelect.textContent = "";
      for (const pair of pairs) pairSelect.append(new Option(pair, pair));
    }
    pairSelect.value = pairs.includes(wanted) ? wanted : pairs[0] || "";
  }

  function onSnapshot(snap) {
    fillPairs(snap);
    const producer = snap.producers.find((p) => p.name === producerSelect.value);
    const row = producer && producer.pairs.find((r) => r.pair === pairSelect.value);
    const key = producerSelect.value + " " + pairSelect.value;
    const candle = row ? row.last_candle : null;
    if (key !== shownKey || (candle && candle !== shownCandle)) {
      const fresh = key !== shownKey;
      shownKey = key;
      shownCandle = candle;
      if (candle) load(fresh);
      else box.dataset.empty = "no candle of " + pairSelect.value + " yet";
    }
  }

  function choose(producer, pair) {
    producerSelect.value = producer;
    pairSelect.dataset.chosen = pair;
    pairSelect.value = "";
    shownKey = null;
    onSnapshot(snapshotNow());
    const url = new URL(location.href);
    url.searchParams.set("producer", producer);
    url.searchParams.set("pair", pair);
    history.replaceState(null, "", url);
  }

  if (!LWC) {
    box.dataset.empty = "the chart library did not load";
    return;
  }
  build();
  producerSelect.addEventListener("change", () => choose(producerSelect.value, ""));
  pairSelect.addEventListener("change", () => choose(producerSelect.value, pairSelect.value));
  lowerSelect.addEventListener("change", () => data && drawLower());
  root.addEventListener("click", (event) => {
    const row = event.target.closest('[data-list="pairs"] tr[data-key]');
    if (!row) return;
    choose(row.closest("article[data-key]").dataset.key, row.dataset.key);
    // Below the sticky top bar (taller when it wraps on a narrow screen), so the
    // chart's selectors stay in sight.
    const bar = document.querySelector(".topbar").getBoundingClientRect().bottom;
    const card = document.getElementById("chart-card").getBoundingClientRect().top;
    window.scrollTo({ top: window.scrollY + card - bar - 8, behavior: "smooth" });
  });
  new ResizeObserver(() => requestAnimationFrame(placeLowerLabel)).observe(box);
  document.addEventListener("status:snapshot", (event) => onSnapshot(event.detail));
  onSnapshot(snapshotNow());
})();
