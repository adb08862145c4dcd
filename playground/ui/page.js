// EOS Playground page script: the live p(EOS) chart and step selection, all in the browser.
//
// The chart is fed by an append-only text value (see playground/ui/views.py: chart_header, chart_lines), so a
// streamed update carries only the new points. Selecting a step (click a token, click the chart, ← →) marks it
// in the text and on the chart at once, and asks the server for that step's inspector through the chart's
// `trigger`.
window.eosPlayground = window.eosPlayground || (() => {
  const NS = "http://www.w3.org/2000/svg";
  const SYMBOLS = { eos: "★", max_new_tokens: "■", stop_string: "◆", repetition: "✕", cancelled: "○", timeout: "○" };
  const state = { column: null, step: null, charts: [], trigger: null };

  function parse(value) {
    const lines = (value || "").split("\n");
    if (!lines[0]) return null;
    const meta = JSON.parse(lines[0]);
    const series = meta.columns.map(() => ({ steps: [], raw: [], final: [], mraw: [], mfinal: [], stop: null }));
    for (const line of lines.slice(1)) {
      if (!line) continue;
      const f = line.split(" ");
      if (f[0] === "S") { series[+f[1]].stop = { step: +f[2], reason: f[3] }; continue; }
      if (f[0] === "C") {  // a column added after the run: a branch
        meta.columns.push(JSON.parse(line.slice(2)));
        series.push({ steps: [], raw: [], final: [], mraw: [], mfinal: [], stop: null });
        continue;
      }
      const s = series[+f[0]];
      const num = (x) => (x === "-" ? null : +x);
      s.steps.push(+f[1]); s.raw.push(+f[2]); s.final.push(+f[3]); s.mraw.push(num(f[4])); s.mfinal.push(num(f[5]));
    }
    return { meta, series };
  }

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw(chart) {
    const root = chart.element.querySelector(".eos-chart") || chart.element;
    root.innerHTML = "";
    const data = parse(chart.props.value);
    const toolbar = document.createElement("div");
    toolbar.className = "eos-chart-toolbar";
    for (const [mode, label] of [["log", "p(EOS), log"], ["linear", "p(EOS), linear"], ["margin", "distance to EOS (logits)"]]) {
      const button = document.createElement("button");
      button.textContent = label;
      button.className = chart.mode === mode ? "on" : "";
      button.dataset.mode = mode;
      button.onclick = () => { chart.mode = mode; draw(chart); };
      toolbar.appendChild(button);
    }
    root.appendChild(toolbar);
    if (!data) {
      const empty = document.createElement("div");
      empty.className = "eos-chart-empty";
      empty.textContent = "Press Run: p(EOS) per step appears here, live.";
      root.appendChild(empty);
      return;
    }
    chart.data = data;
    const { meta, series } = data;
    const legend = document.createElement("div");
    legend.className = "eos-chart-legend";
    legend.innerHTML = meta.columns.map((c) => `<span><i style="background:${c.color}"></i>${escape(c.name)}</span>`).join("")
      + `<span class="note">${chart.mode === "margin" ? "solid: raw · dashed: after interventions · below 0: EOS wins"
                                                         : "solid: model's own · dashed: after interventions and sampling"}</span>`;
    root.appendChild(legend);
    const width = Math.max(root.clientWidth || 600, 320), height = 260, left = 52, right = 12, top = 10, bottom = 30;
    const svg = el("svg", { width, height, class: "eos-chart-svg" });
    const maxStep = Math.max(meta.max_new - 1, 1);
    const x = (step) => left + (step / maxStep) * (width - left - right);
    let y, ticks;
    if (chart.mode === "margin") {
      const values = series.flatMap((s) => s.mraw.concat(s.mfinal)).filter((v) => v !== null);
      const lo = Math.min(-2, ...values) - 1, hi = Math.max(2, ...values) + 1;
      y = (v) => top + (1 - (v - lo) / (hi - lo)) * (height - top - bottom);
      const stepSize = Math.max(1, Math.round((hi - lo) / 6));
      ticks = [];
      for (let t = Math.ceil(lo / stepSize) * stepSize; t <= hi; t += stepSize) ticks.push([t, `${t}`]);
    } else if (chart.mode === "linear") {
      y = (p) => top + (1 - p) * (height - top - bottom);
      ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => [t, `${t}`]);
    } else {
      y = (p) => top + (-Math.log10(Math.max(p, 1e-8)) / 8) * (height - top - bottom);
      ticks = [1, 1e-2, 1e-4, 1e-6, 1e-8].map((t) => [t, t === 1 ? "1" : `1e${Math.log10(t)}`]);
    }
    for (const c of meta.columns) {
      if (c.ramp === null || c.ramp === undefined) continue;
      svg.appendChild(el("rect", { x: x(c.ramp - 0.5), y: top, width: Math.max(x(maxStep + 0.5) - x(c.ramp - 0.5), 0),
                                   height: height - top - bottom, fill: "orange", opacity: 0.1 }));
      svg.appendChild(el("text", { x: x(c.ramp - 0.5) + 3, y: top + 12, class: "ramp-label" }, `ramp (${c.name})`));
    }
    for (const [value, label] of ticks) {
      svg.appendChild(el("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      svg.appendChild(el("text", { x: left - 6, y: y(value) + 4, class: "tick", "text-anchor": "end" }, label));
    }
    if (chart.mode === "margin") svg.appendChild(el("line", { x1: left, x2: width - right, y1: y(0), y2: y(0), class: "zero" }));
    const xStep = Math.max(1, Math.ceil(maxStep / 8 / 5) * 5);
    for (let t = 0; t <= maxStep; t += xStep) svg.appendChild(el("text", { x: x(t), y: height - 10, class: "tick", "text-anchor": "middle" }, `${t}`));
    svg.appendChild(el("text", { x: width - right, y: height - 10, class: "tick", "text-anchor": "end" }, "step"));
    // The first column (usually the baseline) is drawn last, on top: where another column matches it, the
    // baseline shows; where an intervention changes p(EOS), its dashed line stands out.
    [...series.keys()].reverse().forEach((index) => {
      const s = series[index], color = meta.columns[index].color;
      const [solid, dashed] = chart.mode === "margin" ? [s.mraw, s.mfinal] : [s.raw, s.final];
      for (const [values, dash] of [[solid, ""], [dashed, "5 3"]]) {
        let d = "", pen = "M";
        values.forEach((v, i) => {
          if (v === null) { pen = "M"; return; }
          d += `${pen}${x(s.steps[i]).toFixed(1)},${y(v).toFixed(1)}`;
          pen = "L";
        });
        svg.appendChild(el("path", { d, fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash }));
      }
      if (s.stop && s.steps.length) {
        const last = dashed[dashed.length - 1] ?? solid[solid.length - 1];
        if (last !== null && last !== undefined) {
          const marker = el("text", { x: x(s.stop.step), y: y(last) + 5, fill: color, class: "stop-marker", "text-anchor": "middle" },
                            SYMBOLS[s.stop.reason] || "●");
          marker.appendChild(el("title", {}, `${meta.columns[index].name}: ${s.stop.reason.replace(/_/g, " ")} at step ${s.stop.step}`));
          svg.appendChild(marker);
        }
      }
    });
    if (state.step !== null && state.column !== null && series[state.column]) {
      const s = series[state.column], i = s.steps.indexOf(state.step);
      svg.appendChild(el("line", { x1: x(state.step), x2: x(state.step), y1: top, y2: height - bottom, class: "selected-step" }));
      const v = i >= 0 ? (chart.mode === "margin" ? s.mfinal[i] : s.final[i]) : null;
      if (v !== null) svg.appendChild(el("circle", { cx: x(state.step), cy: y(v), r: 5, fill: meta.columns[state.column].color, stroke: "black" }));
    }
    const guide = el("line", { y1: top, y2: height - bottom, class: "guide", visibility: "hidden" });
    svg.appendChild(guide);
    const capture = el("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom, fill: "transparent" });
    svg.appendChild(capture);
    const tip = document.createElement("div");
    tip.className = "eos-chart-tip";
    const stepAt = (event) => {
      const box = svg.getBoundingClientRect();
      return Math.max(0, Math.min(maxStep, Math.round(((event.clientX - box.left - left) / (width - left - right)) * maxStep)));
    };
    capture.addEventListener("mousemove", (event) => {
      const step = stepAt(event);
      guide.setAttribute("x1", x(step)); guide.setAttribute("x2", x(step)); guide.setAttribute("visibility", "visible");
      const rows = series.map((s, index) => {
        const i = s.steps.indexOf(step);
        if (i < 0) return "";
        const margin = (m) => (m === null ? "banned" : m.toFixed(1));
        return `<div><i style="background:${meta.columns[index].color}"></i>${escape(meta.columns[index].name)}: `
          + `p(EOS) ${fmt(s.raw[i])} → ${fmt(s.final[i])} · EOS behind by ${margin(s.mraw[i])} → ${margin(s.mfinal[i])}</div>`;
      }).join("");
      tip.innerHTML = `<b>step ${step}</b>${rows}<small>click to inspect</small>`;
      tip.style.display = "block";
      tip.style.left = `${Math.min(x(step) + 12, width - 260)}px`;
    });
    capture.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); tip.style.display = "none"; });
    capture.addEventListener("click", (event) => {
      const step = stepAt(event);
      let column = state.column !== null && series[state.column] && series[state.column].steps.includes(step) ? state.column : null;
      if (column === null) column = series.findIndex((s) => s.steps.includes(step));
      if (column >= 0) select(column, step);
    });
    const frame = document.createElement("div");
    frame.className = "eos-chart-frame";
    frame.appendChild(svg);
    frame.appendChild(tip);
    root.appendChild(frame);
  }

  function fmt(p) { return p >= 0.01 ? p.toFixed(3) : p.toExponential(1); }
  function escape(text) { return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }

  function markTokens() {
    document.querySelectorAll(".token-view [data-s].sel").forEach((n) => n.classList.remove("sel"));
    if (state.column === null) return;
    const token = document.querySelector(`#tokens-${state.column} [data-s="${state.step}"]`);
    if (token) { token.classList.add("sel"); token.scrollIntoView({ block: "nearest", inline: "nearest" }); }
  }

  // Select a column and step: mark it everywhere; ask the server for the inspector unless it sent the selection.
  function select(column, step, fromServer = false) {
    state.column = column; state.step = step;
    markTokens();
    state.charts.forEach(draw);
    if (!fromServer && state.trigger) state.trigger("click", { column, step });
  }

  function chart(element, props, trigger, watch) {
    const entry = { element, props, mode: "log", data: null };
    state.charts = state.charts.filter((c) => c.element.isConnected);
    state.charts.push(entry);
    state.trigger = trigger;
    draw(entry);
    watch("value", () => {
      if (!props.value) { state.column = null; state.step = null; }
      draw(entry);
    });
    let width = element.clientWidth;
    new ResizeObserver(() => { if (Math.abs(element.clientWidth - width) > 4) { width = element.clientWidth; draw(entry); } }).observe(element);
  }

  // A column's token view: click a token to select its step; follow the newest tokens unless the reader
  // has scrolled up.
  function tokens(element, column, watch) {
    const view = element.classList.contains("token-view") ? element : element.querySelector(".token-view") || element;
    let follow = true;
    view.addEventListener("scroll", () => { follow = view.scrollHeight - view.scrollTop - view.clientHeight < 40; });
    element.addEventListener("click", (event) => {
      const token = event.target.closest("[data-s]");
      if (token) select(column, +token.dataset.s);
    });
    watch("value", () => {
      if (follow && state.column === null) view.scrollTop = view.scrollHeight;
      markTokens();
    });
  }

  function selection(props, watch) {
    watch("value", () => {
      const [column, step] = (props.value || "").split(" ").map(Number);
      if (props.value) select(column, step, true);
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
    if (!["ArrowLeft", "ArrowRight"].includes(event.key) || state.column === null) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable], .cm-editor")) return;
    const data = state.charts.find((c) => c.data)?.data;
    const steps = data ? data.series[state.column].steps : [];
    if (!steps.length) return;
    const step = Math.max(steps[0], Math.min(steps[steps.length - 1], state.step + (event.key === "ArrowLeft" ? -1 : 1)));
    if (step !== state.step) { event.preventDefault(); select(state.column, step); }
  });

  return { chart, tokens, selection, inspector, select, state };
})();
