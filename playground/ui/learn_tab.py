"""The Learn tab: one lesson per screen (goal, explanation, a question asked before Run), the run streamed in the
Compare tab's views (tokens, chart, inspector: :mod:`.views` and page.js, scope "learn"), then the feedback read
from the run, pointing at the step, the inspector opened there, the stage row named; then "now you".

Lessons are data (:mod:`playground.lessons`); this module only wires them to components. The page keeps the
learner's progress in the browser (localStorage "eos-learn": lessons done, predictions made); ``?lesson=3`` opens
a lesson, ``?embed=1`` shows the Learn tab alone, for an iframe.
"""

from __future__ import annotations

import html
import json
import time

import gradio as gr

from ..decoder import RunStopped
from ..engine import Comparison, SplitComparison
from ..lessons import Lesson, lesson_run, load_lessons, parse_prediction
from ..lessons.runner import Result
from ..request import MAX_COLUMNS, SETTINGS, parse_column
from ..service import RUNS_AT_ONCE, Playground
from ..trace import Trace
from .controls import control, max_new_tokens_control
from .errors import refusal, stopped
from .streaming import PAGE_INTERVAL, PageColumns, paced
from ..markup import md_text, status_mark
from ..views import chart_header, inspector_html, status_markdown

SCOPE = "learn"  # page.js's scope for this tab's views: ids "learn-tokens-N", its own selection and chart
NO_BRANCH = "Branching a column (try) is in the Compare tab; here the inspector shows the lesson's steps."
CHOICES = {"yes_no": [("yes", "yes"), ("no", "no")],
           "longer_shorter": [("longer", "longer"), ("shorter", "shorter"), ("the same length", "same")]}
CSS = """
#learn-lesson h3 { margin: 0 0 4px; }
#learn-feedback, #learn-now-feedback { border-left: 4px solid #9ca3af; padding-left: 8px; }
#learn-feedback.right, #learn-now-feedback.right { border-color: #16a34a; }
#learn-feedback.wrong, #learn-now-feedback.wrong { border-color: #dc2626; }
#learn-progress a { margin-right: 6px; text-decoration: none; }
#learn-progress a.done::after { content: " ✓"; color: #16a34a; }
#learn-progress a.current { font-weight: 700; text-decoration: underline; }
.inspector tr.why td { background: #fef3c7; }
"""
# In the page's head (playground/ui/__init__.py): a tab's content is only mounted once the tab is opened, so the
# script that opens the Learn tab for a link (and embed mode) cannot live inside it.
LEARN_SCRIPT = r"""
window.eosLearn = window.eosLearn || (() => {
  const KEY = "eos-learn";
  const read = () => { try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch (e) { return {}; } };
  const params = new URLSearchParams(location.search);
  const embed = ["1", "true"].includes(params.get("embed"));
  function progress() {
    const data = read(), done = new Set(data.done || []), predictions = data.predictions || [];
    const box = document.getElementById("learn-progress");
    if (!box) return;
    box.querySelectorAll("a[data-lesson]").forEach((a) => {
      a.classList.toggle("done", done.has(a.dataset.lesson));
      const query = new URLSearchParams({ lesson: a.dataset.order });
      if (embed) query.set("embed", "1");
      a.href = "?" + query.toString();
    });
    const right = predictions.filter((p) => p.right).length;
    const line = box.querySelector(".learn-count");
    if (line) line.textContent = `${done.size} of ${box.querySelectorAll("a[data-lesson]").length} lessons done · `
      + `${predictions.length} prediction${predictions.length === 1 ? "" : "s"} made, ${right} right`;
  }
  function record(value) {
    if (!value) return;
    const item = JSON.parse(value), data = read();
    data.predictions = [...(data.predictions || []), item].slice(-500);
    if (item.part === "now_you") data.done = [...new Set([...(data.done || []), item.lesson])];
    localStorage.setItem(KEY, JSON.stringify(data));
    progress();
  }
  function current(id, order) {
    document.querySelectorAll("#learn-progress a[data-lesson]").forEach((a) => a.classList.toggle("current", a.dataset.lesson === id));
    const query = new URLSearchParams(location.search);
    if (order) { query.set("lesson", order); history.replaceState(null, "", "?" + query.toString()); }
  }
  function openTab() {
    const tab = [...document.querySelectorAll('button[role="tab"]')].find((b) => b.textContent.trim() === "Learn");
    if (!tab) { setTimeout(openTab, 100); return; }
    if (tab.getAttribute("aria-selected") !== "true") tab.click();
    if (!embed) return;
    // Embed mode: the Learn tab alone. Everything beside the tabs' strip on the way up is hidden (title, banner,
    // model panel), then the other tabs' buttons and the footer.
    let node = tab.closest(".tabs") || tab.parentElement;
    const stop = document.querySelector(".gradio-container") || document.body;
    while (node && node !== stop && node.parentElement) {
      for (const sibling of node.parentElement.children) if (sibling !== node) sibling.style.display = "none";
      node = node.parentElement;
    }
    document.querySelectorAll('button[role="tab"]').forEach((b) => { if (b !== tab) b.style.display = "none"; });
    document.querySelectorAll("footer").forEach((f) => { f.style.display = "none"; });
  }
  function init() {
    if (params.has("lesson") || embed) openTab();
    progress();
  }
  return { init, record, progress, current, embed };
})();
window.eosLearn.init();
"""


# When the tab mounts: the progress marks from localStorage.
PROGRESS_JS = "(function go() { window.eosLearn ? eosLearn.progress() : setTimeout(go, 50); })();"


def _tokens_js(column: int) -> str:
    return (f"(function go() {{ window.eosPlayground ? eosPlayground.tokens(element, {column}, watch, '{SCOPE}') "
            f": setTimeout(go, 50); }})();")


CHART_JS = f"(function go() {{ window.eosPlayground ? eosPlayground.chart(element, props, trigger, watch, '{SCOPE}') : setTimeout(go, 50); }})();"
SELECTION_JS = f"(function go() {{ window.eosPlayground ? eosPlayground.selection(props, watch, '{SCOPE}') : setTimeout(go, 50); }})();"


def lesson_markdown(lesson: Lesson, max_new_tokens_cap: int) -> str:
    settings = ", ".join(f"{name} {SETTINGS[name].text(value)}" for name, value in lesson.settings.items())
    capped = lesson.settings.get("max_new_tokens", 0) > max_new_tokens_cap
    columns = " · ".join(f"<code>{html.escape(c)}</code>" for c in lesson.columns)
    return (f"### {lesson.order}. {html.escape(lesson.title)}\n**Goal:** {html.escape(lesson.goal)}\n\n{lesson.explanation}\n\n"
            f"<small>Preset — prompt <code>{html.escape(lesson.prompts[0])}</code> · columns {columns}"
            + (f" · {html.escape(settings)}" if settings else "")
            + (f" (this app caps new tokens at {max_new_tokens_cap})" if capped else "") + "</small>")


def question_markdown(question, label: str) -> str:
    return f"**{label}** {md_text(question.text)}"


def answer_widgets(question, column_names: list[str]) -> tuple[dict, dict]:
    """Updates for the (radio, text box) pair that takes a prediction of ``question``'s kind."""
    kind = question.kind
    if kind in ("step", "count"):
        hint = "a step number from 0, or never" if kind == "step" else "a whole number"
        return gr.update(visible=False, value=None, choices=[]), gr.update(visible=True, value="", placeholder=hint,
                                                                         label="Your prediction")
    if kind == "column":
        choices = [(f"column {i}: {name}", str(i)) for i, name in enumerate(column_names, start=1)]
        choices.append(("they stop at the same step", "tie"))
    elif kind == "choice":
        choices = [(option.replace("_", " "), option) for option in question.options]
    else:
        choices = CHOICES[kind]
    return gr.update(visible=True, value=None, choices=choices, label="Your prediction"), gr.update(visible=False, value="")


def progress_html(lessons: list[Lesson]) -> str:
    links = "".join(f'<a data-lesson="{html.escape(l.id)}" data-order="{l.order}" href="?lesson={l.order}" '
                    f'title="{html.escape(l.title)}">{l.order}. {html.escape(l.title)}</a>' for l in lessons)
    return f'<div><small class="learn-count"></small></div><div><small>{links}</small></div>'


def learn_tab(playground: Playground, demo: gr.Blocks, lessons: list[Lesson] | None = None) -> None:
    """The tab, with ``lessons`` in their order (None: the built-in ones)."""
    lessons = lessons or load_lessons()
    policy = playground.policy
    by_id = {lesson.id: lesson for lesson in lessons}
    first = lessons[0]
    change_settings = sorted({l.now_you.change.setting for l in lessons if l.now_you.change.setting})

    def columns_of(lesson: Lesson, part: str) -> list[str]:
        return lesson.settings_with(lesson.now_you.change if part == "now_you" else None)[1]

    with gr.Tab("Learn", elem_id="learn-tab"):
        session = gr.State({})  # per session: the lesson's first result (for "now you"), the trace shown, the run
        gr.HTML(f"<style>{CSS}</style>", elem_id="learn-init", padding=False)
        with gr.Row(equal_height=False):
            picker = gr.Dropdown([(f"{l.order}. {l.title}", l.id) for l in lessons], value=first.id, label="Lesson",
                                 elem_id="learn-picker", scale=2, min_width=200)
            gr.HTML(progress_html(lessons), elem_id="learn-progress", scale=3, min_width=200, js_on_load=PROGRESS_JS)
        lesson_text = gr.Markdown(lesson_markdown(first, policy.max_new_tokens), elem_id="learn-lesson")
        question_text = gr.Markdown(question_markdown(first.question, "Before you run:"), elem_id="learn-question")
        radio_update, box_update = answer_widgets(first.question, list(first.columns))
        with gr.Row(equal_height=False):
            choice = gr.Radio(elem_id="learn-choice", scale=3, min_width=200, **_initial(radio_update))
            number = gr.Textbox(elem_id="learn-number", scale=3, min_width=200, max_lines=1, **_initial(box_update))
            run = gr.Button("Run", variant="primary", elem_id="learn-run", scale=1, min_width=80)
        notes = gr.Markdown("", elem_id="learn-notes")
        feedback = gr.Markdown("", elem_id="learn-feedback")
        with gr.Column(visible=False, elem_id="learn-now") as now_box:
            change_text = gr.Markdown("", elem_id="learn-change")
            # The setting "now you" changes, one shown at a time; max new tokens as Compare's log-scale slider.
            setting_controls, setting_boxes = {}, {}
            for name in change_settings:
                with gr.Column(visible=False, elem_id=f"learn-change-{name}-box") as setting_boxes[name]:
                    setting_controls[name] = (
                        max_new_tokens_control(policy.max_new_tokens, min(SETTINGS[name].default, policy.max_new_tokens),
                                               f"learn-change-{name}")
                        if name == "max_new_tokens" else control(name, elem_id=f"learn-change-{name}"))
            column_control = gr.Radio([], value=None, visible=False, elem_id="learn-change-column", label="Column")
            now_question = gr.Markdown("", elem_id="learn-now-question")
            with gr.Row(equal_height=False):
                now_choice = gr.Radio([], elem_id="learn-now-choice", scale=3, min_width=200)
                now_number = gr.Textbox(elem_id="learn-now-number", scale=3, min_width=200, max_lines=1, visible=False)
                now_run = gr.Button("Run again", variant="primary", elem_id="learn-now-run", scale=1, min_width=80)
            now_feedback = gr.Markdown("", elem_id="learn-now-feedback")
            next_button = gr.Button("Next lesson →", visible=False, elem_id="learn-next", size="sm")
        statuses, views, boxes = [], [], []
        with gr.Row(equal_height=False):
            for index in range(MAX_COLUMNS):
                with gr.Column(visible=index < len(first.columns), min_width=160) as box:
                    statuses.append(gr.Markdown("idle", elem_id=f"learn-status-{index}", elem_classes="status"))
                    views.append(gr.HTML("", js_on_load=_tokens_js(index), elem_id=f"learn-tokens-{index}",
                                         elem_classes="token-view"))
                boxes.append(box)
        with gr.Row(equal_height=False):
            chart = gr.HTML("", html_template='<div class="eos-chart"></div>', js_on_load=CHART_JS,
                            elem_id="learn-chart", scale=3, min_width=300)
            inspector = gr.HTML(inspector_html(None, 0, 0), elem_id="learn-inspector", scale=2, min_width=260)
        selection = gr.HTML("", html_template="", js_on_load=SELECTION_JS, elem_id="learn-selection")
        record = gr.Textbox("", visible=False, elem_id="learn-record")

    # ---- handlers -------------------------------------------------------------------------------

    def shown_inspector(trace: Trace, column: int, step: int, stage: str | None = None) -> str:
        """The inspector on (column, step), the stage row the lesson names marked."""
        text = inspector_html(trace, column, step, playground.bundle.info.stop_token_ids, NO_BRANCH)
        if stage:
            text = text.replace(f"<tr><td>{html.escape(stage)}</td>", f'<tr class="why"><td>{html.escape(stage)}</td>', 1)
        return text

    def on_lesson(lesson_id, state):
        lesson = by_id.get(lesson_id, first)
        state = {"lesson": lesson.id}
        radio, box = answer_widgets(lesson.question, list(lesson.columns))
        now_radio, now_box_update = answer_widgets(lesson.now_you.question, columns_of(lesson, "now_you"))
        change = lesson.now_you.change
        controls = {component: lesson.settings.get(name, SETTINGS[name].default)
                    for name, component in setting_controls.items()}
        controls.update({box: gr.update(visible=name == change.setting) for name, box in setting_boxes.items()})
        original = lesson.columns[change.column - 1] if change.column else None
        column_update = gr.update(visible=change.column is not None, value=original,
                                  choices=[original, change.value] if change.column else [],
                                  label=f"Column {change.column}" if change.column else "Column")
        n = len(lesson.columns)
        return {lesson_text: lesson_markdown(lesson, policy.max_new_tokens),
                question_text: question_markdown(lesson.question, "Before you run:"), choice: radio, number: box,
                notes: "", feedback: "", now_box: gr.update(visible=False),
                change_text: f"**Now you.** {md_text(change.says)}",
                now_question: question_markdown(lesson.now_you.question, "Then predict:"), now_choice: now_radio,
                now_number: now_box_update, now_feedback: "", next_button: gr.update(visible=False),
                column_control: column_update, **controls,
                **{statuses[i]: "idle" for i in range(MAX_COLUMNS)}, **{views[i]: "" for i in range(MAX_COLUMNS)},
                **{boxes[i]: gr.update(visible=i < n) for i in range(MAX_COLUMNS)},
                chart: "", selection: "", inspector: inspector_html(None, 0, 0), session: state}

    def run_part(part: str, state: dict, lesson_id, prediction_value, change_value=None):
        lesson = by_id.get(lesson_id)
        out_feedback, out_choice = (feedback, choice) if part == "question" else (now_feedback, now_choice)
        try:
            if lesson is None:
                raise ValueError(f"lesson: no lesson {str(lesson_id)[:40]!r}; pick one from the list")
            question = lesson.question if part == "question" else lesson.now_you.question
            prediction = parse_prediction(question, prediction_value, len(lesson.columns))
            if prediction is None and not (isinstance(prediction_value, str) and prediction_value.strip().lower() in ("never", "tie")):
                raise ValueError("prediction: choose your answer before Run (a guess is fine: the run checks it)")
            before = state.get("first") if part == "now_you" else None
            if part == "now_you" and (before is None or before.lesson.id != lesson.id):
                raise ValueError("now you: run the lesson's first question first")
            if part == "now_you" and lesson.now_you.change.column is not None:
                parse_column(change_value or "")  # a sentence naming the column when it cannot be read
            runs = lesson_run(playground, lesson, part, before=before, value=change_value)
            yield from stream(part, state, lesson, runs, prediction)
        except RunStopped as error:
            state.pop("comparison", None)
            raise stopped(playground, error, page=True) from None
        except (ValueError, TypeError) as error:
            raise refusal(playground, "learn", error, page=True) from None

    def stream(part, state, lesson, runs, prediction):
        """The lesson's notes, each run paced on the page (a new run, the next prompt after a premise that
        failed, starts the views over) and its result; a closed page closes ``runs``, which stops the decode."""
        notes_text, page, lock = [], None, None
        n = len(lesson.columns)
        yield {notes: "", feedback if part == "question" else now_feedback: "Running…",
               **{boxes[i]: gr.update(visible=i < n) for i in range(MAX_COLUMNS)},
               **{views[i]: "" for i in range(MAX_COLUMNS)}, chart: "", selection: "",
               inspector: inspector_html(None, 0, 0)}
        for item in paced(runs, PAGE_INTERVAL, final=lambda item: not isinstance(item, Trace)
                          or all(v.finished for v in item.variants)):
            if isinstance(item, str):
                notes_text.append(item)
                yield {notes: "\n".join(f"- {md_text(note)}" for note in notes_text)}
            elif isinstance(item, Comparison | SplitComparison):
                page, lock = PageColumns(chart_header(item.trace), range(n)), item.lock
            elif isinstance(item, Trace):
                changed = page.advance(item, lock)
                if changed:
                    yield {**{views[i]: page.tokens[i] for i in changed},
                           **{statuses[i]: page.status[i] for i in changed}, chart: page.chart}
            elif isinstance(item, Result):
                yield finished(part, state, item, prediction)

    def finished(part: str, state: dict, result: Result, prediction) -> dict:
        trace, why = result.trace, result.why
        if part == "question":
            state["first"] = result
        state["trace"] = trace
        column, step = why["column"] - 1, why["step"]
        right = result.right(prediction)
        item = {"lesson": result.lesson.id, "part": part, "prediction": prediction, "answer": result.answer,
                "right": right, "at": int(time.time())}
        text = f"{status_mark('ok' if right else 'problem')} {md_text(result.feedback(prediction))}"
        update = {notes: "\n".join(f"- {md_text(note)}" for note in result.notes),
                  **{statuses[i]: status_markdown(v) for i, v in enumerate(trace.variants)},
                  inspector: shown_inspector(trace, column, step, why["stage"]), selection: f"{column} {step}",
                  record: json.dumps(item, default=str), session: state}
        if part == "question":
            update.update({feedback: gr.update(value=text, elem_classes=["right" if right else "wrong"]),
                           now_box: gr.update(visible=True)})
        else:
            is_last = result.lesson.id == lessons[-1].id
            update.update({now_feedback: gr.update(value=text, elem_classes=["right" if right else "wrong"]),
                           next_button: gr.update(visible=not is_last)})
        return update

    def on_select(state, event: gr.EventData):
        trace, data = state.get("trace"), event._data or {}
        column, step = data.get("column"), data.get("step")
        if trace is None or not isinstance(column, int) or not isinstance(step, int) \
                or not 0 <= column < len(trace.variants) or not 0 <= step < len(trace.variants[column].steps):
            return gr.skip()
        return shown_inspector(trace, column, step)

    def on_next(lesson_id):
        ids = [lesson.id for lesson in lessons]
        index = ids.index(lesson_id) + 1 if lesson_id in ids else 0
        return ids[min(index, len(ids) - 1)]

    def on_load(request: gr.Request):
        wanted = (dict(request.query_params) if request is not None else {}).get("lesson")
        if wanted is None:
            return gr.skip()
        lesson = next((l for l in lessons if wanted.strip() in (str(l.order), l.id)), None)
        if lesson is None:
            gr.Warning(f"This link: there is no lesson {wanted[:40]!r}; the lessons are 1 to {len(lessons)}.", title="Link")
            return gr.skip()
        return lesson.id

    lesson_outputs = [lesson_text, question_text, choice, number, notes, feedback, now_box, change_text, now_question,
                      now_choice, now_number, now_feedback, next_button, column_control, *setting_controls.values(),
                      *setting_boxes.values(),
                      *statuses, *views, *boxes, chart, selection, inspector, session]
    picker.change(on_lesson, [picker, session], lesson_outputs, api_visibility="private", queue=False).then(
        None, picker, None, js="(id) => { const order = parseInt((document.querySelector('#learn-picker input') || {}).value);"
                               " window.eosLearn && eosLearn.current(id, Number.isNaN(order) ? null : order); }")
    run_outputs = [notes, feedback, now_feedback, now_box, next_button, *statuses, *views, *boxes, chart, selection,
                   inspector, record, session]
    def on_question(state, lesson_id, picked, typed):
        yield from run_part("question", state, lesson_id, picked or typed)

    run.click(on_question, [session, picker, choice, number], run_outputs, concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE,
              api_visibility="private")
    change_inputs = [column_control, *setting_controls.values()]

    def on_now(state, lesson_id, picked, typed, column_value, *setting_values):
        lesson = by_id.get(lesson_id)
        change = lesson.now_you.change if lesson else None
        value = None
        if change is not None:
            value = column_value if change.column else dict(zip(setting_controls, setting_values)).get(change.setting)
        yield from run_part("now_you", state, lesson_id, picked or typed, value)

    now_run.click(on_now, [session, picker, now_choice, now_number, *change_inputs], run_outputs,
                  concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE, api_visibility="private")
    record.change(None, record, None, js="(value) => { window.eosLearn && eosLearn.record(value); }")
    chart.click(on_select, session, inspector, api_visibility="private", queue=False)
    next_button.click(on_next, picker, picker, api_visibility="private", queue=False)
    # ?lesson=N picks the lesson when the page opens (queued, so a warning shows); then the lesson is drawn, "now you"
    # included, whether or not the picker changed (the first lesson is the picker's value already).
    demo.load(on_load, None, picker, api_visibility="private", concurrency_limit=None).then(
        on_lesson, [picker, session], lesson_outputs, api_visibility="private", queue=False)


def _initial(update: dict) -> dict:
    """A gr.update's fields as a component's constructor arguments."""
    return {key: value for key, value in update.items() if key != "__type__"}

