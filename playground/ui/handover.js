// An exported comparison (playground/handover.py): the page's own page.js draws the chart and moves the
// selection; this script gives it what the Gradio page's server gives it (the chart's text, each step's inspector)
// from the views rendered into the file, and replays the columns. Nothing here reads the trace's text as markup:
// the views are the server's escaped renderings; the trace JSON is only data for the app to read back.
(async () => {
  const inflate = async (id) => {
    const text = document.getElementById(id).textContent.trim();
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text();
  };
  const plotly = document.createElement("script");  // plotly.js, from the installed plotly package
  plotly.textContent = await inflate("plotly-js");
  document.head.appendChild(plotly);
  const views = JSON.parse(await inflate("eos-views"));
  const columns = views.columns;
  const inspector = document.getElementById("inspector");
  const show = (column, step) => {
    const html = columns[column] && columns[column].inspectors[step];
    if (html !== undefined) inspector.innerHTML = html;
  };

  // page.js's Gradio interface, for a page without Gradio: a value, watchers of its changes, a trigger.
  const watched = (value) => {
    const entry = { props: { value }, watchers: [] };
    entry.watch = (_name, callback) => entry.watchers.push(callback);
    entry.set = (next) => { entry.props.value = next; entry.watchers.forEach((callback) => callback()); };
    return entry;
  };
  const whole = () => views.header + columns.map((c) => c.lines.join("") + c.stop).join("");
  const chart = watched(whole());
  const page = window.eosPlayground;
  page.chart(document.getElementById("chart"), chart.props, (_event, data) => show(data.column, data.step), chart.watch);
  const tokens = columns.map((_, index) => {
    const entry = watched(null);
    page.tokens(document.getElementById(`tokens-${index}`), index, entry.watch);
    return entry;
  });
  const select = (column, step) => { page.select(column, step, true); show(column, step); };
  select(...views.selection);

  document.querySelectorAll('input[name="shade"]').forEach((input) => input.addEventListener("change", () => {
    document.body.classList.toggle("shade-eos", input.checked && input.value === "p_eos");
  }));
  document.querySelectorAll("details.fix").forEach((fix) => {
    const kind = fix.querySelector("select");
    kind.addEventListener("change", () => fix.querySelectorAll("pre").forEach((pre) => { pre.hidden = pre.dataset.kind !== kind.value; }));
    fix.querySelector("button.copy").addEventListener("click", (event) => {
      const code = fix.querySelector(`pre[data-kind="${kind.value}"]`).textContent;
      navigator.clipboard.writeText(code).then(() => { event.target.textContent = "Copied"; },
        () => { getSelection().selectAllChildren(fix.querySelector(`pre[data-kind="${kind.value}"]`)); });
    });
  });

  // Replay: every column again from its first token, one step a tick (about a reader's pace), chart and all.
  const STEP_MS = 150;
  const button = document.getElementById("replay"), story = document.getElementById("story");
  let timer = null;
  const finish = () => {
    clearInterval(timer); timer = null;
    columns.forEach((c, index) => {
      document.getElementById(`tokens-${index}`).innerHTML = c.spans.join("");
      document.getElementById(`status-${index}`).innerHTML = c.status;
      tokens[index].set(c.spans.join(""));
    });
    chart.set(whole());
    story.style.visibility = "";
    button.textContent = "Replay";
    document.body.dataset.replay = "done";
    select(...views.selection);
  };
  button.addEventListener("click", () => {
    if (timer !== null) { finish(); return; }  // a second click ends the replay at once
    document.body.dataset.replay = "running";
    button.textContent = "Skip to the end";
    story.style.visibility = "hidden";
    inspector.innerHTML = '<div class="inspector empty">Replaying… click a token to inspect its step.</div>';
    page.state.column = null;
    let text = views.header, step = 0;
    chart.set("");  // a new value: the chart starts over
    chart.set(text);
    columns.forEach((c, index) => {
      document.getElementById(`tokens-${index}`).innerHTML = "";
      document.getElementById(`status-${index}`).textContent = "replaying · 0 tokens";
    });
    const last = Math.max(...columns.map((c) => c.spans.length));
    timer = setInterval(() => {
      if (step >= last) { finish(); return; }
      columns.forEach((c, index) => {
        if (step >= c.spans.length) return;
        document.getElementById(`tokens-${index}`).insertAdjacentHTML("beforeend", c.spans[step]);
        text += c.lines[step] || "";
        if (step === c.spans.length - 1) {
          text += c.stop;
          document.getElementById(`status-${index}`).innerHTML = c.status;
        } else {
          document.getElementById(`status-${index}`).textContent = `replaying · ${step + 1} tokens`;
        }
        tokens[index].set(null);
      });
      chart.set(text);
      step += 1;
    }, STEP_MS);
  });
  document.body.dataset.ready = "true";
})();
