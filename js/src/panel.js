// The lab panel: a lab's instructions beside its terminal, as on Killercoda. The
// title and intro, the current step as Markdown with run and copy buttons, hints,
// the solution behind a confirmation, Check (or Mark done) with ✓/✗ and the
// check's message, step n of m with earlier steps to review, the finish text.
//
// Like the terminal it talks to the REST API from the browser, so it works while
// the kernel is busy, after a kernel restart and after a reload. What it shows as
// progress is the server's: the session's `steps` and `currentStep`, read when the
// panel attaches, after each check, when the page becomes visible again and when
// the kernel says a check ran there (`refresh`). Nothing polls on a timer: an open
// tab must not keep a JupyterHub server from being culled as idle.
//
// DOM contract (the browser tests rely on it), on top of the terminal's:
//   root `.labkernel-lab` with `data-session-id`, `data-lab-id`, `data-state` (the
//   terminal's), `data-page` (intro, step, finish, none), `data-step` (the step
//   shown) and `data-current-step` (the server's, "" when all passed);
//   `.labkernel-run` (types a command into the terminal), `.labkernel-copy`,
//   `.labkernel-check` (Check, or Mark done for a step without a check),
//   `.labkernel-result` with `data-result` (checking, passed, done, failed,
//   timeout, error), `.labkernel-next`, `.labkernel-back`, `.labkernel-hint-toggle`,
//   `.labkernel-solution-toggle`, `.labkernel-notice` (the session has ended,
//   expired, …) with `.labkernel-start-again`; `.labkernel-step-pill[data-step]`;
//   `.labkernel-needs` (what the lab needs that this server lacks, from the
//   catalog's `unmetNeeds`) and `.labkernel-session-notes` (the session's `notes`:
//   a background script that failed), each hidden when there is nothing to say.

import { mountTerminal } from "./view.js";
import { renderMarkdown, sanitize } from "./markdown.js";
import "./panel.css";

const NOTICES = {
  ended: "This lab session has ended.",
  expired: "This lab session has expired: it reached its time limit, and what was in it is gone.",
  not_found: "This lab session no longer exists (it ended a while ago, or the server restarted).",
  forbidden: "Not allowed: sign in to Jupyter again, then reload the page.",
  unavailable: "There is no labkernel server behind this page.",
};
const RESTARTABLE = new Set(["ended", "expired", "not_found"]);
const CHECK_TIMEOUT_MS = 10 * 60 * 1000; // a check, then the next step's setup: the server bounds both

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, title) {
  const b = el("button", `labkernel-button ${className}`, text);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

function randomNonce() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function storage() {
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null; // disabled by a policy: the panel just starts at the current step
  }
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard API (an insecure origin): the old way.
    const area = el("textarea");
    area.value = text;
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/**
 * Mount a lab (panel and terminal) in `el`; returns `{view, root, attach,
 * refresh, restart, stop, setRows, setReadOnly, dispose}`.
 *
 * options: those of mountTerminal (api, sessionId, labId, rows, readOnly,
 * onSessionId, onState, startSession); without `startSession`, a new session
 * (the Start again button) is of the lab the panel shows.
 */
export function mountLab(host, options) {
  const opts = { rows: 24, readOnly: false, ...options };
  const api = opts.api;
  const root = el("div", "labkernel-lab");
  root.dataset.sessionId = opts.sessionId || "";
  root.dataset.labId = opts.labId || "";
  root.dataset.page = "none";
  root.dataset.state = "connecting";
  if (opts.rows === "fill") root.classList.add("labkernel-fill");
  // The plain shell has nothing to read: the terminal alone from the start (no
  // panel that appears and vanishes, resizing the terminal twice).
  if (opts.labId === "shell") root.classList.add("labkernel-lab-bare");
  const body = el("div", "labkernel-lab-body");
  const panel = el("section", "labkernel-panel");
  panel.setAttribute("aria-label", "Lab instructions");
  // Keys pressed on the panel's buttons are not JupyterLab's (Enter would also
  // put the cell in edit mode).
  panel.dataset.lmSuppressShortcuts = "true";
  const termSlot = el("div", "labkernel-lab-terminal");
  body.append(panel, termSlot);
  root.append(body);
  host.append(root);

  const head = el("header", "labkernel-lab-head");
  const title = el("h2", "labkernel-lab-title", opts.labId && opts.labId !== "shell" ? opts.labId : "Lab");
  const progress = el("ol", "labkernel-steps");
  progress.setAttribute("aria-label", "Steps");
  head.append(title, progress);
  const notice = el("div", "labkernel-notice");
  notice.setAttribute("role", "status");
  notice.hidden = true;
  const noticeText = el("span", "labkernel-notice-text");
  const startAgain = button("labkernel-start-again labkernel-primary", "Start the lab again");
  notice.append(noticeText, startAgain);
  const needs = el("p", "labkernel-needs");
  needs.hidden = true;
  const sessionNotes = el("details", "labkernel-session-notes");
  sessionNotes.hidden = true;
  const content = el("div", "labkernel-page");
  panel.append(head, notice, needs, sessionNotes, content);

  let disposed = false;
  let sessionId = opts.sessionId || "";
  let labId = opts.labId || "";
  let lab = null; // the catalog's entry: title, intro, finish, stepList
  let session = null; // the server's session object: steps, currentStep, status
  let results = new Map(); // step -> the last check result this view saw
  let page = null; // {kind: "intro" | "step" | "finish", step}
  let flash = null; // a passed step's result, shown atop the page that follows it
  let checking = 0; // the step being checked, 0 for none
  const opened = { hint: new Set(), solution: new Set() }; // steps whose hint / solution is shown
  let termState = { name: "connecting" };
  let generation = 0; // a newer attach makes answers for an older one moot
  let objectUrls = [];
  const labs = new Map(); // labId -> Promise of its catalog entry (or null)

  const view = mountTerminal(termSlot, {
    ...opts,
    startSession: opts.startSession || ((rows, cols) => api.start(labId || opts.labId, rows, cols)
      .then((s) => ({ sessionId: s.sessionId, started: true }))),
    onSessionId(id) {
      attach(id);
      opts.onSessionId?.(id);
    },
    onState(state) {
      const was = termState.name;
      termState = state;
      root.dataset.state = state.name;
      showNotice();
      if (state.name === "connected" && was !== "connected") refresh();
      else if (RESTARTABLE.has(state.name) || state.name === "forbidden") render();
      opts.onState?.(state);
    },
  });

  // -- talking to the server -------------------------------------------------------

  function labEntry(id) {
    if (!labs.has(id)) {
      labs.set(id, api.request("GET", "api/labs").then((answer) => {
        if (answer.status !== 200) throw answer;
        return (answer.body.labs || []).find((l) => l.id === id) || null;
      }).catch((error) => {
        labs.delete(id); // asked again next time
        throw error;
      }));
    }
    return labs.get(id);
  }

  async function fetchSession(id) {
    const answer = await api.request("GET", `api/labs/session/${encodeURIComponent(id)}`);
    if (answer.status === 200) return answer.body;
    throw answer;
  }

  /** Show session `id`: its lab, and its progress as the server has it. */
  async function attach(id) {
    if (!id || !api) return;
    const mine = ++generation;
    const fresh = id !== sessionId;
    sessionId = id;
    root.dataset.sessionId = id;
    if (fresh) {
      results = new Map();
      flash = null;
      page = null;
    }
    try {
      const s = await fetchSession(id);
      if (disposed || mine !== generation) return;
      labId = s.labId;
      root.dataset.labId = labId;
      lab = await labEntry(labId).catch(() => null);
      if (disposed || mine !== generation) return;
      session = s;
      if (!page) page = restorePage() || firstPage();
      render();
    } catch {
      // A session the server does not know: the terminal's state says so.
      if (!disposed && mine === generation) render();
    }
  }

  /** Read the session's progress again (another client may have checked). */
  async function refresh() {
    if (!sessionId || !api || disposed) return;
    if (!session) {
      attach(sessionId);
      return;
    }
    const mine = generation;
    try {
      const s = await fetchSession(sessionId);
      if (disposed || mine !== generation) return;
      progressed(s.steps, s.currentStep);
      session = s;
      render();
    } catch {
      // The terminal shows what is wrong with the session.
    }
  }

  /** New progress from the server: a learner on the step that was current follows it. */
  function progressed(steps, currentStep) {
    const before = session?.currentStep;
    if (page?.kind === "step" && page.step === before && currentStep !== before
        && steps?.[before - 1]?.state === "passed") {
      page = currentStep ? { kind: "step", step: currentStep } : { kind: "finish" };
    }
  }

  // -- pages -----------------------------------------------------------------------

  const stepList = () => lab?.stepList || [];
  const stepCount = () => stepList().length;
  const stateOf = (n) => session?.steps?.[n - 1]?.state || "pending";
  const allPassed = () => stepCount() > 0 && (session?.steps || []).length > 0 && session.currentStep === null;

  function reachable(p) {
    if (!p) return false;
    if (p.kind === "intro") return !!lab?.intro;
    if (p.kind === "finish") return allPassed();
    if (p.kind !== "step" || !(p.step >= 1 && p.step <= stepCount())) return false;
    return allPassed() || p.step <= (session?.currentStep || 0) || stateOf(p.step) === "passed";
  }

  function firstPage() {
    if (!stepCount()) return lab?.intro ? { kind: "intro" } : null;
    if (allPassed()) return { kind: "finish" };
    const untouched = (session?.steps || []).every((s) => s.state === "pending");
    if (untouched && lab?.intro) return { kind: "intro" };
    return { kind: "step", step: session?.currentStep || 1 };
  }

  function pageKey() {
    return `labkernel:panel:${sessionId}`;
  }

  function restorePage() {
    try {
      const saved = JSON.parse(storage()?.getItem(pageKey()) || "null");
      return reachable(saved) ? saved : null;
    } catch {
      return null;
    }
  }

  function go(next) {
    page = next;
    flash = next.flash || null;
    delete page.flash;
    try {
      storage()?.setItem(pageKey(), JSON.stringify(page));
    } catch {
      // storage full or disabled: only the reload forgets where the learner was
    }
    render();
    panel.scrollTop = 0;
  }

  // -- rendering -------------------------------------------------------------------

  function showNotice() {
    const text = NOTICES[termState.name];
    notice.hidden = !text;
    if (!text) return;
    noticeText.textContent = termState.name === "unavailable" && termState.message ? termState.message : text;
    startAgain.hidden = !(RESTARTABLE.has(termState.name) && api && !opts.readOnly);
  }

  function live() {
    return termState.name === "connected" || termState.name === "reconnecting" || termState.name === "connecting";
  }

  function markdown(text, { title: heading = "" } = {}) {
    const box = el("div", "labkernel-markdown");
    const nonce = randomNonce();
    const { html, actions } = renderMarkdown(text, { nonce, title: heading });
    box.append(sanitize(html, window));
    decorate(box, nonce, actions);
    loadImages(box);
    return box;
  }

  /** Placeholders of this rendering's actions become buttons; forged ones stay plain code. */
  function decorate(box, nonce, actions) {
    for (const node of box.querySelectorAll("[data-lk-action]")) {
      const [prefix, index] = node.getAttribute("data-lk-action").split(":");
      node.removeAttribute("data-lk-action");
      node.classList.remove("labkernel-action");
      const action = prefix === nonce ? actions[Number(index)] : null;
      if (!action) continue;
      // A block's button wraps the node itself: take it out of the tree first.
      const spot = document.createComment("");
      node.replaceWith(spot);
      spot.replaceWith(actionElement(action, node));
    }
  }

  function actionElement(action, node) {
    const run = action.kind === "exec";
    const what = action.interrupt ? "Press Ctrl-C, then run this in the terminal" : "Run this in the terminal";
    if (!action.block) {
      if (run) {
        const b = button("labkernel-run labkernel-inline", "", what);
        const code = el("code", "", node.textContent);
        b.append(code, el("span", "labkernel-run-icon", "▶"));
        b.addEventListener("click", () => runAction(action, b));
        return b;
      }
      const wrap = el("span", "labkernel-copyable");
      const copy = button("labkernel-copy labkernel-inline", "Copy", "Copy to the clipboard");
      copy.addEventListener("click", () => copyAction(action, copy));
      wrap.append(el("code", "", node.textContent), copy);
      return wrap;
    }
    const wrap = el("div", `labkernel-block ${run ? "labkernel-block-run" : "labkernel-block-copy"}`);
    const tools = el("div", "labkernel-block-tools");
    if (run) {
      const label = action.keys ? "▶ Press" : action.interrupt ? "▶ Ctrl-C, then run" : "▶ Run";
      const b = button("labkernel-run", label, action.keys ? "Press these keys in the terminal" : what);
      b.addEventListener("click", () => runAction(action, b));
      tools.append(b);
    }
    if (!action.keys) { // keys (Ctrl-C) are pressed, not copied
      const copy = button("labkernel-copy", "Copy", "Copy to the clipboard");
      copy.addEventListener("click", () => copyAction(action, copy));
      tools.append(copy);
    }
    wrap.append(node, tools);
    return wrap;
  }

  function acknowledge(b, text) {
    b.classList.add("labkernel-done");
    b.dataset.ack = text;
    setTimeout(() => {
      b.classList.remove("labkernel-done");
      delete b.dataset.ack;
    }, 1200);
  }

  /** Type an action into the terminal, as the learner asked by pressing its button. */
  async function runAction(action, b) {
    if (!live() || opts.readOnly) return;
    if (action.keys !== null && action.keys !== undefined) {
      view.send(action.keys);
    } else {
      if (action.interrupt) {
        view.send("\x03");
        await view.whenQuiet(300, 3000); // let the program end and the prompt come back
      }
      view.paste(action.code);
      if (action.enter) view.send("\r");
    }
    acknowledge(b, "sent");
    view.term.focus();
  }

  async function copyAction(action, b) {
    if (await copyText(action.code)) acknowledge(b, "copied");
  }

  function loadImages(box) {
    for (const img of box.querySelectorAll("img[data-lk-src]")) {
      const path = img.getAttribute("data-lk-src");
      img.removeAttribute("data-lk-src");
      if (!api || !labId) continue;
      const url = api.url(`api/labs/${encodeURIComponent(labId)}/files/${path.split("/").map(encodeURIComponent).join("/")}`);
      fetch(url, { headers: api.authHeaders(), credentials: "same-origin" })
        .then((r) => (r.ok ? r.blob() : Promise.reject(r)))
        .then((blob) => {
          if (disposed) return;
          const objectUrl = URL.createObjectURL(blob);
          objectUrls.push(objectUrl);
          img.src = objectUrl;
        })
        .catch(() => img.classList.add("labkernel-missing"));
    }
  }

  function renderProgress() {
    progress.replaceChildren();
    const n = stepCount();
    if (!n) return;
    const pill = (label, target, state, name) => {
      const li = el("li");
      const b = button("labkernel-step-pill", label, name);
      b.dataset.state = state;
      if (target.kind === "step") b.dataset.step = String(target.step);
      else b.dataset.page = target.kind;
      b.disabled = !reachable(target);
      const shown = page && page.kind === target.kind && (target.kind !== "step" || page.step === target.step);
      if (shown) b.setAttribute("aria-current", "step");
      b.addEventListener("click", () => go({ ...target }));
      li.append(b);
      progress.append(li);
    };
    if (lab?.intro) pill("Intro", { kind: "intro" }, "intro", "Introduction");
    stepList().forEach((s, i) => {
      const state = stateOf(i + 1);
      const mark = state === "passed" ? "✓" : state === "failed" ? "✗" : String(i + 1);
      pill(mark, { kind: "step", step: i + 1 }, state, `Step ${i + 1}: ${s.title} (${state})`);
    });
    pill("Finish", { kind: "finish" }, allPassed() ? "passed" : "pending", "The end of the lab");
  }

  /** What the lab needs that this server lacks, and what went wrong beside the terminal. */
  function renderNotes() {
    const unmet = lab?.unmetNeeds || [];
    needs.hidden = !unmet.length;
    needs.textContent = unmet.length
      ? `This lab needs: ${unmet.join(", ")} — not found on this server, so some steps may not work here.` : "";
    const notes = session?.notes || [];
    sessionNotes.hidden = !notes.length;
    if (!notes.length) return;
    const key = JSON.stringify(notes);
    if (sessionNotes.dataset.key === key) return; // keep it open or closed as the learner left it
    sessionNotes.dataset.key = key;
    const summary = el("summary", "", notes.length === 1 ? "Something went wrong while preparing this lab"
      : `${notes.length} things went wrong while preparing this lab`);
    sessionNotes.replaceChildren(summary, ...notes.map((note) => el("pre", "labkernel-message", note)));
  }

  function render() {
    if (disposed) return;
    for (const url of objectUrls) URL.revokeObjectURL(url);
    objectUrls = [];
    renderNotes();
    const n = stepCount();
    root.classList.toggle("labkernel-lab-bare", !!lab && !n && !lab.intro && !lab.finish);
    title.textContent = lab?.title || session?.title || labId || "Lab";
    root.dataset.currentStep = session?.currentStep ? String(session.currentStep) : "";
    if (page && !reachable(page)) page = firstPage();
    root.dataset.page = page?.kind || "none";
    root.dataset.step = page?.kind === "step" ? String(page.step) : "";
    renderProgress();
    content.replaceChildren();
    if (!session || !lab) {
      if (sessionId && session && !lab) content.append(el("p", "labkernel-muted", "The steps of this lab are not available on this server."));
      else if (live()) content.append(el("p", "labkernel-muted", "Loading the lab…"));
      return;
    }
    if (!page) {
      if (lab.description) content.append(el("p", "", lab.description));
      return;
    }
    if (flash) content.append(flashElement(flash));
    if (page.kind === "intro") renderIntro();
    else if (page.kind === "finish") renderFinish();
    else renderStep(page.step);
  }

  function flashElement(result) {
    const box = el("div", "labkernel-flash");
    box.dataset.result = result.passed === null ? "done" : "passed";
    const line = result.passed === null ? `✓ Step ${result.step} marked done: ${result.title}`
      : `✓ Step ${result.step} passed: ${result.title}`;
    box.append(el("div", "labkernel-flash-line", line));
    const message = (result.message || "").trim();
    if (message && result.passed !== null) box.append(el("pre", "labkernel-message", message));
    return box;
  }

  function renderIntro() {
    const section = el("div", "labkernel-intro");
    if (lab.description && !lab.intro.includes(lab.description)) section.append(el("p", "labkernel-description", lab.description));
    section.append(markdown(lab.intro, { title: lab.title }));
    const nav = el("div", "labkernel-nav");
    if (stepCount()) {
      const start = button("labkernel-next labkernel-primary", session.currentStep > 1 ? "Continue →" : "Start →");
      start.addEventListener("click", () => go(allPassed() ? { kind: "finish" } : { kind: "step", step: session.currentStep || 1 }));
      nav.append(start);
    }
    section.append(nav);
    content.append(section);
  }

  function renderFinish() {
    const section = el("div", "labkernel-finish");
    section.append(el("h3", "labkernel-step-title", "✓ Lab complete"));
    if (lab.finish) section.append(markdown(lab.finish, { title: lab.title }));
    else section.append(el("p", "", `Every step of ${lab.title} is done.`));
    const nav = el("div", "labkernel-nav");
    const back = button("labkernel-back", "← Review the steps");
    back.addEventListener("click", () => go({ kind: "step", step: 1 }));
    nav.append(back);
    section.append(nav);
    content.append(section);
  }

  function renderStep(n) {
    const step = stepList()[n - 1];
    const section = el("div", "labkernel-step");
    const count = el("div", "labkernel-step-count", `Step ${n} of ${stepCount()}`);
    section.append(count, el("h3", "labkernel-step-title", step.title));
    section.append(markdown(step.text, { title: step.title }));
    section.append(helpElement(step, n));

    const nav = el("div", "labkernel-nav");
    const back = button("labkernel-back", "← Back");
    back.disabled = n === 1 && !lab.intro;
    back.addEventListener("click", () => go(n > 1 ? { kind: "step", step: n - 1 } : { kind: "intro" }));
    const check = button("labkernel-check labkernel-primary", step.hasCheck ? "Check" : "Mark done",
      step.hasCheck ? "Check whether this step is done" : "This step has no check: mark it done and go on");
    const ended = !live() || opts.readOnly;
    check.disabled = !!checking || ended;
    if (checking === n) check.textContent = step.hasCheck ? "Checking…" : "Marking…";
    check.addEventListener("click", () => runCheck(n));
    const nextTarget = n < stepCount() ? { kind: "step", step: n + 1 } : { kind: "finish" };
    const next = button("labkernel-next", n < stepCount() ? "Next →" : "Finish →");
    next.disabled = !reachable(nextTarget);
    next.addEventListener("click", () => go(nextTarget));
    nav.append(back, check, next);
    section.append(nav);
    section.append(resultElement(n));
    content.append(section);
  }

  function helpElement(step, n) {
    const help = el("div", "labkernel-help");
    if (step.hint && step.hint.trim()) {
      const toggle = button("labkernel-hint-toggle labkernel-link", "");
      const hint = el("div", "labkernel-hint");
      hint.append(markdown(step.hint));
      const show = (on) => {
        hint.hidden = !on;
        toggle.textContent = on ? "Hide the hint" : "Show a hint";
        toggle.setAttribute("aria-expanded", String(on));
        if (on) opened.hint.add(n);
        else opened.hint.delete(n);
      };
      show(opened.hint.has(n));
      toggle.addEventListener("click", () => show(hint.hidden));
      help.append(toggle, hint);
    }
    // An entry is a command ("\x03" first: Ctrl-C, then the command) or "\x03" alone: the key.
    const solution = (step.solution || []).filter((c) => c === "\x03" || c.replace(/^\x03/, "").trim());
    if (solution.length) {
      const toggle = button("labkernel-solution-toggle labkernel-link", "Show the solution");
      const confirm = el("div", "labkernel-solution-confirm");
      confirm.hidden = true;
      confirm.append(el("span", "", "Show the solution? Trying it yourself teaches more — the hint may be enough. "));
      const yes = button("labkernel-solution-yes", "Show it");
      const no = button("labkernel-solution-no", "Not yet");
      confirm.append(yes, no);
      const box = el("div", "labkernel-solution");
      box.hidden = true;
      const show = (on) => {
        box.hidden = !on;
        toggle.textContent = on ? "Hide the solution" : "Show the solution";
        if (on) opened.solution.add(n);
        else opened.solution.delete(n);
        if (on && !box.childElementCount) {
          box.append(el("div", "labkernel-solution-title", "The solution, one command at a time:"));
          for (const entry of solution) {
            const pre = el("pre");
            if (entry === "\x03") {
              pre.append(el("code", "", "Ctrl-C"));
              box.append(actionElement({ kind: "exec", code: "", block: true, interrupt: false, enter: false, keys: "\x03" }, pre));
              continue;
            }
            const interrupt = entry.startsWith("\x03");
            const code = interrupt ? entry.slice(1) : entry;
            pre.append(el("code", "", code));
            box.append(actionElement({ kind: "exec", code, block: true, interrupt, enter: true, keys: null }, pre));
          }
        }
      };
      show(opened.solution.has(n));
      toggle.addEventListener("click", () => {
        if (!box.hidden) show(false);
        else confirm.hidden = !confirm.hidden;
      });
      no.addEventListener("click", () => { confirm.hidden = true; });
      yes.addEventListener("click", () => {
        confirm.hidden = true;
        show(true);
      });
      help.append(toggle, confirm, box);
    }
    return help;
  }

  function resultElement(n) {
    const box = el("div", "labkernel-result");
    box.setAttribute("role", "status");
    box.setAttribute("aria-live", "polite");
    const result = results.get(n);
    if (checking === n) {
      box.dataset.result = "checking";
      box.append(el("div", "labkernel-result-line", "Checking…"));
      return box;
    }
    if (result) {
      const { kind, line } = describeResult(result);
      box.dataset.result = kind;
      box.append(el("div", "labkernel-result-line", line));
      const message = (result.message || "").trim();
      if (message && result.passed !== null) box.append(el("pre", "labkernel-message", message));
      return box;
    }
    const state = stateOf(n);
    if (state === "passed") {
      box.dataset.result = "passed";
      box.append(el("div", "labkernel-result-line", "✓ Done"));
    } else if (state === "failed") {
      box.dataset.result = "failed";
      box.append(el("div", "labkernel-result-line", "✗ Not done yet (the last check did not pass)"));
    } else {
      box.hidden = true;
    }
    return box;
  }

  function describeResult(result) {
    // Only glyphs every font has (✓ ✗ ▶ ←): emoji and rarer symbols show as boxes
    // where no emoji font is installed (a plain Linux server, a container).
    if (result.error) return { kind: "error", line: `✗ ${result.error}` };
    if (result.timedOut) return { kind: "timeout", line: "✗ Timed out: the check took too long and was stopped." };
    if (result.passed === null) return { kind: "done", line: "✓ Marked done" };
    if (result.passed) return { kind: "passed", line: "✓ Passed" };
    return { kind: "failed", line: "✗ Not yet" };
  }

  async function runCheck(n) {
    if (checking || !sessionId || !api) return;
    checking = n;
    results.delete(n);
    flash = null;
    render();
    let answer;
    try {
      answer = await api.request("POST", `api/labs/session/${encodeURIComponent(sessionId)}/check`,
        { body: { step: n }, timeout: CHECK_TIMEOUT_MS });
    } catch {
      answer = { status: 0, body: null };
    }
    checking = 0;
    if (disposed) return;
    if (answer.status !== 200) {
      const why = answer.body?.message || (answer.status
        ? `The server answered ${answer.status}.` : "The server could not be reached; try again.");
      results.set(n, { step: n, error: `Could not check: ${why}` });
      render();
      if (answer.status === 409 || answer.status === 404) refresh();
      return;
    }
    const result = answer.body.results.find((r) => r.step === n) || answer.body.results[0];
    results.set(n, result);
    const before = session.currentStep;
    session = { ...session, steps: answer.body.steps, currentStep: answer.body.currentStep };
    const passed = result.passed !== false && !result.timedOut;
    // The learner passed the step they were on: on to the one the server says is next.
    // (A step reviewed and checked again keeps its page.)
    if (passed && before === n && page?.kind === "step" && page.step === n) {
      if (session.currentStep === null) {
        go({ kind: "finish", flash: result });
        return;
      }
      if (session.currentStep > n) {
        go({ kind: "step", step: session.currentStep, flash: result });
        return;
      }
    }
    render();
  }

  // -- life --------------------------------------------------------------------------

  startAgain.addEventListener("click", () => view.restart(true));
  const onVisible = () => {
    if (document.visibilityState === "visible") refresh();
  };
  document.addEventListener("visibilitychange", onVisible);
  window.addEventListener("focus", refresh);

  if (sessionId) attach(sessionId);
  else if (labId && api) {
    labEntry(labId).then((entry) => {
      if (disposed || session) return;
      lab = entry;
      render();
    }).catch(() => {});
  }
  render();

  return {
    view,
    root,
    get sessionId() { return sessionId; },
    get state() { return termState; },
    get labTitle() { return lab?.title || session?.title || ""; },
    attach(id) {
      view.attach(id);
      if (id && id !== sessionId) attach(id);
    },
    refresh,
    restart: (fresh = true) => view.restart(fresh),
    stop: () => view.stop(),
    setRows: (rows) => view.setRows(rows),
    setReadOnly(readOnly) {
      opts.readOnly = readOnly;
      view.setReadOnly(readOnly);
      render();
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      document.removeEventListener("visibilitychange", onVisible);
      window.removeEventListener("focus", refresh);
      for (const url of objectUrls) URL.revokeObjectURL(url);
      view.dispose();
      root.remove();
    },
  };
}
