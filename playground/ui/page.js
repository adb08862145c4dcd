// EOS Playground page script: the live p(EOS) chart (plotly.js) and step selection, all in the browser.
//
// The chart is fed by an append-only text value (see playground/views.py: chart_header, chart_lines), so a
// streamed update carries only the new points; the browser parses only what was appended and builds the plotly
// figure itself (no figure is sent from the server). plotly.js is served by the app from the installed Python
// package (see playground/ui/__init__.py), so the page works without internet. Selecting a step (click a token,
// click the chart, ← →) marks it in the text and on the chart at once, and asks the server for that step's
// inspector through the chart's `trigger`. Each tab that shows a run (Compare; Learn) is a scope of its own, named
// by the prefix of its token views' ids ("tokens-0"; "learn-tokens-0"): its own selection, charts and trigger.
window.eosPlayground = window.eosPlayground || (() => {
  // Each stop reason's label and marker, from the server (playground/ui/__init__.py: PAGE_CONFIG, before this script).
  const STOPS = window.eosPlaygroundConfig.stops;
  const MODES = [["log", "p(EOS), log"], ["linear", "p(EOS), linear"], ["margin", "distance to EOS (logits)"]];
  const NOTES = { log: "solid: the model's own p(EOS) · dashed: after interventions and sampling",
                  linear: "solid: the model's own p(EOS) · dashed: after interventions and sampling",
                  margin: "logits EOS is behind the best token · solid: raw · dashed: after interventions · below 0: EOS wins" };
  const scopes = {};
  function scopeOf(name = "") {
    return scopes[name] || (scopes[name] = { name, prefix: name ? `${name}-` : "", column: null, step: null, charts: [], trigger: null });
  }
  const state = scopeOf("");  // Compare's
  let active = state;  // the scope a step was last selected in (← → move in it)

  // plotly reads its text (legend, hover, annotations) as HTML of a few tags and entities: a column named
  // stop_strings(strings="</s>") must show as written.
  const plain = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  function emptySeries() { return { steps: [], raw: [], final: [], mraw: [], mfinal: [], stop: null }; }

  // Parse only what was appended since the last call; a value that does not extend the last one (a new run,
  // a removed branch) is parsed from the start.
  function parse(chart) {
    const value = chart.props.value || "";
    if (!value) { chart.data = null; chart.text = ""; return null; }
    let fresh = value;
    if (chart.data && value.startsWith(chart.text)) fresh = value.slice(chart.text.length);
    else {
      const newline = value.indexOf("\n");
      chart.data = { meta: JSON.parse(value.slice(0, newline)), series: [] };
      chart.data.series = chart.data.meta.columns.map(emptySeries);
      fresh = value.slice(newline + 1);
    }
    chart.text = value;
    const { meta, series } = chart.data;
    const num = (x) => (x === "-" ? null : +x);
    for (const line of fresh.split("\n")) {
      if (!line) continue;
      if (line[0] === "S") { const f = line.split(" "); series[+f[1]].stop = { step: +f[2], reason: f[3] }; continue; }
      if (line[0] === "C") { meta.columns.push(JSON.parse(line.slice(2))); series.push(emptySeries()); continue; }
      const f = line.split(" "), s = series[+f[0]];
      s.steps.push(+f[1]); s.raw.push(+f[2]); s.final.push(+f[3]); s.mraw.push(num(f[4])); s.mfinal.push(num(f[5]));
    }
    return chart.data;
  }

  // The values a mode plots: log cannot show 0 (EOS banned), so it sits at the axis floor, 1e-8.
  function values(s, mode, kind) {
    if (mode === "margin") return kind === "own" ? s.mraw : s.mfinal;
    const v = kind === "own" ? s.raw : s.final;
    return mode === "log" ? v.map((p) => Math.max(p, 1e-8)) : v;
  }

  function figure(chart) {
    const { meta, series } = chart.data, mode = chart.mode;
    const traces = [], shapes = [], annotations = [];
    const unit = mode === "margin" ? "%{y:.1f} logits" : "%{y:.3g}";
    // The first column (usually the baseline) is drawn last, on top: where another column matches it, the
    // baseline shows; where an intervention changes p(EOS), its dashed line stands out.
    [...series.keys()].reverse().forEach((column) => {
      const s = series[column], { color } = meta.columns[column], name = plain(meta.columns[column].name);
      const group = `column-${column}`;
      for (const kind of ["own", "after"]) {
        traces.push({ x: s.steps, y: values(s, mode, kind), type: "scatter", mode: "lines", legendgroup: group,
                      name: kind === "own" ? name : `${name}, after interventions`, showlegend: kind === "own",
                      line: { color, width: 2, dash: kind === "own" ? "solid" : "dash" }, connectgaps: false,
                      meta: { column, kind }, hovertemplate: `${unit}<extra></extra>` });
      }
      if (s.stop && s.steps.length) {
        const after = values(s, mode, "after"), own = values(s, mode, "own");
        const y = after[after.length - 1] ?? own[own.length - 1];
        const stop = STOPS[s.stop.reason], reason = stop.label;
        traces.push({ x: [s.stop.step], y: [y], type: "scatter", mode: "markers", legendgroup: group, showlegend: false,
                      name: `${name} stopped: ${reason}`, meta: { column, kind: "stop" },
                      marker: { symbol: stop.symbol, size: 13, color, line: { color: "black", width: 1 } },
                      hovertemplate: `${reason} at step %{x}<extra></extra>` });
      }
    });
    const labels = new Map();  // one band and one label per ramp start, naming every column it serves
    meta.columns.forEach((c) => {
      if (c.ramp === null || c.ramp === undefined) return;
      labels.set(c.ramp, [...(labels.get(c.ramp) || []), c.name]);
    });
    const maxStep = Math.max(meta.max_new - 1, 1);
    // Labels at the bands' right end, one under the other: inside the plot at any width, never overlapping.
    [...labels].forEach(([ramp, names], index) => {
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0: ramp - 0.5, x1: maxStep + 0.5, y0: 0, y1: 1,
                    fillcolor: "orange", opacity: 0.1, line: { width: 0 }, layer: "below" });
      annotations.push({ xref: "x", yref: "paper", x: maxStep + 0.5, y: 1 - 0.09 * index, xanchor: "right", yanchor: "top", showarrow: false,
                         text: `ramp (${names.length > 2 ? names.length + " columns" : plain(names.join(", "))})`,
                         font: { size: 10, color: "#b45309" } });
    });
    if (mode === "margin") shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: 0, y1: 0,
                                          line: { color: "#111", width: 1, dash: "dot" } });
    const scope = chart.scope;
    const selected = scope.column !== null ? series[scope.column] : null;
    if (selected) {
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: scope.step, x1: scope.step, y0: 0, y1: 1,
                    line: { color: "#111", width: 1, dash: "dash" } });
      const i = selected.steps.indexOf(scope.step);
      const v = i >= 0 ? values(selected, mode, "after")[i] ?? values(selected, mode, "own")[i] : null;
      if (v !== null) traces.push({ x: [scope.step], y: [v], type: "scatter", mode: "markers", showlegend: false,
                                    name: "selected", meta: { column: scope.column, kind: "selected" }, hoverinfo: "skip",
                                    marker: { size: 11, color: meta.columns[scope.column].color, line: { color: "black", width: 2 } } });
    }
    const yaxis = mode === "log" ? { type: "log", range: [-8.2, 0.1], dtick: 2, exponentformat: "e", title: { text: "p(EOS)" } }
      : mode === "linear" ? { type: "linear", range: [-0.02, 1.02], title: { text: "p(EOS)" } }
      : { type: "linear", autorange: true, title: { text: "EOS behind by" } };
    const layout = {
      // Room for the legend's rows above the plot (about two long column names a row).
      height: 236 + 18 * Math.ceil(series.length / 2), margin: { l: 56, r: 10, t: 8, b: 36 }, hovermode: "x unified",
      showlegend: true, legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", font: { size: 11 }, traceorder: "reversed" },
      xaxis: { range: [-0.5, maxStep + 0.5], title: { text: "step", standoff: 4 }, zeroline: false },
      yaxis: { ...yaxis, fixedrange: false, zeroline: false }, shapes, annotations,
      uirevision: `${mode}:${meta.max_new}`,  // zoom and legend toggles survive streamed updates
      plot_bgcolor: "white", paper_bgcolor: "white", font: { size: 11 },
    };
    return { data: traces, layout };
  }

  const CONFIG = { displaylogo: false, responsive: true, scrollZoom: false,
                   toImageButtonOptions: { filename: "eos-playground-p-eos", scale: 2 },
                   modeBarButtonsToRemove: ["select2d", "lasso2d"] };

  function build(chart) {  // the chart's fixed parts, once
    const root = chart.element.querySelector(".eos-chart") || chart.element;
    root.innerHTML = "";
    const toolbar = document.createElement("div");
    toolbar.className = "eos-chart-toolbar";
    for (const [mode, label] of MODES) {
      const button = document.createElement("button");
      button.textContent = label;
      button.dataset.mode = mode;
      button.onclick = () => { chart.mode = mode; draw(chart); };
      toolbar.appendChild(button);
    }
    const note = document.createElement("span");
    note.className = "note";
    toolbar.appendChild(note);
    const empty = document.createElement("div");
    empty.className = "eos-chart-empty";
    empty.textContent = "Press Run: p(EOS) per step appears here, live.";
    const plot = document.createElement("div");
    plot.className = "eos-chart-plot";
    root.append(toolbar, empty, plot);
    Object.assign(chart, { toolbar, note, empty, plot, bound: false });
  }

  // While a run streams, the live chart may take at most this share of the page's time: a redraw that took
  // 30 ms waits 600 ms for the next. On 2 cores the browser's work slows the decode it shows (the server shares
  // the cores), and Chromium's profiler put plotly at about a sixth of the page's busy time during a run; a slow
  // machine, where redraws take longer, gets fewer of them. The text and statuses still update at every event,
  // and the last value is always drawn.
  const LIVE_CHART_SHARE = 0.05;

  // Draw at most once per animation frame: several streamed updates in a row cost one plotly redraw. A streamed
  // value also waits for the chart's share of time (above); a click or a mode change draws at once.
  function draw(chart, streamed = false) {
    if (chart.pending === "frame") return;  // a redraw is due at the next frame: it will draw the latest state
    const wait = streamed ? chart.drawnAt + chart.drawCost / LIVE_CHART_SHARE - performance.now() : 0;
    if (wait > 0) {
      if (!chart.pending) chart.pending = setTimeout(() => { chart.pending = null; draw(chart); }, wait);
      return;
    }
    clearTimeout(chart.pending);  // a click does not wait behind a streamed value's turn
    chart.pending = "frame";
    requestAnimationFrame(() => { chart.pending = null; render(chart); });
  }

  function render(chart) {
    if (!window.Plotly) { setTimeout(() => draw(chart), 100); return; }  // plotly.min.js is still loading
    const data = parse(chart);
    chart.toolbar.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b.dataset.mode === chart.mode));
    chart.note.textContent = NOTES[chart.mode];
    chart.empty.style.display = data ? "none" : "";
    chart.plot.style.display = data ? "" : "none";
    if (!data) { if (chart.plot.data) Plotly.purge(chart.plot); return; }
    const started = performance.now();
    const { data: traces, layout } = figure(chart);
    Plotly.react(chart.plot, traces, layout, CONFIG);
    chart.drawnAt = performance.now();
    chart.drawCost = chart.drawnAt - started;
    if (!chart.bound) {
      chart.bound = true;
      chart.plot.on("plotly_click", (event) => {
        const points = event.points.filter((p) => p.data.meta && p.data.meta.kind !== "selected");
        const point = points.find((p) => p.data.meta.column === chart.scope.column) || points[0];
        if (point) select(point.data.meta.column, point.x, false, chart.scope.name);
      });
    }
  }

  function markTokens(scope) {
    document.querySelectorAll(`[id^="${scope.prefix}tokens-"] [data-s].sel`).forEach((n) => n.classList.remove("sel"));
    if (scope.column === null) return;
    const token = document.querySelector(`#${scope.prefix}tokens-${scope.column} [data-s="${scope.step}"]`);
    if (token) { token.classList.add("sel"); token.scrollIntoView({ block: "nearest", inline: "nearest" }); }
  }

  // Select a column and step: mark it everywhere; ask the server for the inspector unless it sent the selection.
  function select(column, step, fromServer = false, name = "") {
    const scope = active = scopeOf(name);
    scope.column = column; scope.step = step;
    markTokens(scope);
    scope.charts.forEach(draw);
    if (!fromServer && scope.trigger) scope.trigger("click", { column, step });
  }

  function chart(element, props, trigger, watch, name = "") {
    const scope = scopeOf(name);
    const entry = { element, props, scope, mode: "log", data: null, text: "", drawnAt: 0, drawCost: 0 };
    scope.charts = scope.charts.filter((c) => c.element.isConnected);
    scope.charts.push(entry);
    scope.trigger = trigger;
    build(entry);
    draw(entry);
    watch("value", () => {
      if (!props.value) { scope.column = null; scope.step = null; }
      draw(entry, Boolean(props.value));
    });
    let width = element.clientWidth;
    new ResizeObserver(() => {
      if (Math.abs(element.clientWidth - width) <= 4) return;
      width = element.clientWidth;
      if (window.Plotly && entry.plot.data) Plotly.Plots.resize(entry.plot);
    }).observe(element);
  }

  // A column's token view: click a token to select its step; follow the newest tokens unless the reader
  // has scrolled up.
  function tokens(element, column, watch, name = "") {
    const scope = scopeOf(name);
    const view = element.classList.contains("token-view") ? element : element.querySelector(".token-view") || element;
    let follow = true;
    view.addEventListener("scroll", () => { follow = view.scrollHeight - view.scrollTop - view.clientHeight < 40; });
    element.addEventListener("click", (event) => {
      const token = event.target.closest("[data-s]");
      if (token) select(column, +token.dataset.s, false, name);
    });
    watch("value", () => {
      if (follow && scope.column === null) view.scrollTop = view.scrollHeight;
      markTokens(scope);
    });
  }

  function selection(props, watch, name = "") {
    watch("value", () => {
      const [column, step] = (props.value || "").split(" ").map(Number);
      if (props.value) select(column, step, true, name);
    });
  }

  // The inspector: "try" on a token asks the server to decode a new column from this step with that token.
  function inspector(element, trigger) {
    element.addEventListener("click", (event) => {
      const button = event.target.closest("button.branch");
      const box = event.target.closest(".inspector");
      if (!button || !box) return;
      button.disabled = true;
      trigger("click", { column: +box.dataset.column, step: +box.dataset.step, token_id: +button.dataset.token });
    });
  }

  document.addEventListener("keydown", (event) => {
    const scope = active;
    if (!["ArrowLeft", "ArrowRight"].includes(event.key) || scope.column === null) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable], .cm-editor")) return;
    const data = scope.charts.find((c) => c.data)?.data;
    const steps = data ? data.series[scope.column].steps : [];
    if (!steps.length) return;
    const step = Math.max(steps[0], Math.min(steps[steps.length - 1], scope.step + (event.key === "ArrowLeft" ? -1 : 1)));
    if (step !== scope.step) { event.preventDefault(); select(scope.column, step, false, scope.name); }
  });

  // Results of other settings: dimmed, with a note, until the next Run (only when there are results to dim).
  function stale(on) {
    const results = state.charts.some((c) => c.data);
    const flag = Boolean(on && results);
    document.body.classList.toggle("stale-results", flag);
    // On the elements themselves: Gradio scopes the page's CSS inside its container, so a class on <body> styles nothing.
    for (const id of ["stale-note", "columns-row", "story", "chart", "inspector"]) {
      const element = document.getElementById(id);
      if (element) element.classList.toggle("stale", flag);
    }
  }

  return { chart, tokens, selection, inspector, select, stale, state };
})();
