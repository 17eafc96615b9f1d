// A terminal on the page: xterm.js, a status line and a "new session" button,
// driven by a SessionTransport. Shared by the notebook widget and the stand-alone
// page.
//
// DOM contract (the browser tests rely on it): the root has the class
// `labkernel-terminal` and the attributes `data-session-id` and `data-state`
// (one of STATES), and `data-replay` while output from before the view attached
// is being drawn; the status text is `.labkernel-status`; the new-session button
// is `.labkernel-restart`. xterm's DOM renderer draws `.xterm-rows`.

import { Terminal as XTerm } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { WebLinksAddon } from "@xterm/addon-web-links";
import "@xterm/xterm/css/xterm.css";
import "./terminal.css";

import { Api, SessionTransport, httpLayer, pageBudget, pageStream, xsrfFromCookie } from "./transport.js";
import { TerminalIO } from "./termio.js";
import { blinkCursor } from "./cursor.js";
import { terminalTheme, watchTheme } from "./theme.js";

/** The page's Jupyter settings (`jupyter-config-data`), or null where there are none. */
export function pageConfig(doc = document) {
  const el = doc.getElementById("jupyter-config-data");
  if (!el) return null;
  try {
    const config = JSON.parse(el.textContent || "{}");
    return { ...config, baseUrl: config.baseUrl || "/", token: config.token || "" };
  } catch {
    return null;
  }
}

/** An Api for this page's Jupyter server, or null where the page has no Jupyter config. */
export function pageApi(httpName, doc = document) {
  const config = pageConfig(doc);
  if (!config) return null;
  return new Api({
    baseUrl: config.baseUrl,
    token: config.token,
    http: httpLayer(httpName),
    xsrf: () => xsrfFromCookie(doc.cookie),
  });
}

// xterm measures its cells with the font's real name: a CSS var() would not resolve.
function codeFont() {
  const jp = document.body ? getComputedStyle(document.body).getPropertyValue("--jp-code-font-family").trim() : "";
  return jp || "Menlo, Consolas, 'DejaVu Sans Mono', monospace";
}

const MESSAGES = {
  connecting: () => "Connecting…",
  connected: () => "Connected",
  reconnecting: (s) => `Connection lost — reconnecting (attempt ${s.attempt})…`,
  ended: (s) => (s.exitCode === null || s.exitCode === undefined
    ? "The session has ended."
    : `The session has ended (exit code ${s.exitCode}).`),
  expired: () => "The session has expired: it reached its time limit.",
  not_found: (s) => (s.lab ? s.message || "There is no such lab on this server."
    : "This session no longer exists (the server may have restarted)."),
  forbidden: (s) => s.message || "Not allowed: sign in to Jupyter again, then reload the page.",
  unavailable: (s) => s.message
    || "No labkernel server here: this terminal needs JupyterLab or Jupyter Notebook 7 "
    + "running on a Jupyter server with labkernel installed (it does not work in VS Code or Colab).",
};

const RESTARTABLE = new Set(["ended", "expired", "not_found"]);

/**
 * Mount a terminal in `el` and return `{dispose, attach, restart, stop}`.
 *
 * options:
 *   api            an Api, or null when the page has no labkernel server
 *   sessionId      attach to this session; empty: start one of `labId`
 *   labId          the lab a new session starts
 *   rows           terminal height in rows, or "fill" to fill `el`'s height
 *   readOnly       show output, send no input
 *   predict        draw printable keys before their echo (predict.js); on unless false
 *   onSessionId(id)    a session was started here (by the button, or for lack of one)
 *   onState(state)     the status line's state changed
 *   startSession(rows, cols, fresh) optional: starts a session and resolves
 *                  `{sessionId, started}`; lets views share one start (fresh: the button
 *                  asked, never reuse the current one; started: false when it resolved a
 *                  session that was there already, whose history is then replayed)
 */
export function mountTerminal(el, options) {
  const opts = { rows: 20, readOnly: false, labId: "shell", predict: true, ...options };
  const root = document.createElement("div");
  root.className = "labkernel-terminal";
  root.dataset.sessionId = opts.sessionId || "";
  root.dataset.state = "connecting";
  root.dataset.predict = opts.predict === false ? "off" : "on";
  // Keys typed into the terminal are for the shell, not JupyterLab's shortcuts.
  root.dataset.lmSuppressShortcuts = "true";
  const screen = document.createElement("div");
  screen.className = "labkernel-screen";
  const bar = document.createElement("div");
  bar.className = "labkernel-bar";
  const status = document.createElement("span");
  status.className = "labkernel-status";
  status.setAttribute("role", "status");
  const restart = document.createElement("button");
  restart.className = "labkernel-restart";
  restart.type = "button";
  restart.textContent = "Start a new session";
  restart.hidden = true;
  bar.append(status, restart);
  root.append(screen, bar);
  el.append(root);
  if (opts.rows === "fill") root.classList.add("labkernel-fill");

  const term = new XTerm({
    rows: opts.rows === "fill" ? 24 : opts.rows,
    cols: 80,
    convertEol: false,
    scrollback: 5000,
    disableStdin: !!opts.readOnly,
    cursorBlink: false, // blinkCursor does it without a CSS animation (cursor.js)
    fontFamily: codeFont(),
    fontSize: 13,
    lineHeight: 1.1,
    theme: terminalTheme(),
    allowProposedApi: false,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.loadAddon(new WebLinksAddon());
  term.open(screen);
  const cursor = blinkCursor(term, root, { blink: !opts.readOnly });

  let transport = null;
  let disposed = false;
  let state = { name: "connecting" };
  let starting = null;
  let lastOutput = 0; // when output last arrived (performance.now()), for whenQuiet

  function show(next) {
    state = next;
    root.dataset.state = next.name;
    status.textContent = MESSAGES[next.name](next);
    restart.hidden = !(RESTARTABLE.has(next.name) && opts.api && !opts.readOnly);
    opts.onState?.(next);
  }

  function fitNow() {
    if (disposed || !root.isConnected) return;
    const size = fit.proposeDimensions();
    if (!size || !Number.isFinite(size.cols) || size.cols < 2) return; // hidden or collapsed
    const rows = opts.rows === "fill" ? Math.max(2, size.rows) : opts.rows;
    if (size.cols !== term.cols || rows !== term.rows) io.resize(size.cols, rows);
  }

  // Copy and paste through the browser's own clipboard events: Ctrl+C copies when
  // text is selected (else it is the shell's interrupt), Ctrl+V and Ctrl+Shift+V
  // paste. Returning false lets the browser handle the key instead of xterm.
  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== "keydown" || !(e.ctrlKey || e.metaKey) || e.altKey) return true;
    const key = e.key.toLowerCase();
    if (key === "c" && (e.shiftKey || term.hasSelection())) {
      if (term.hasSelection()) navigator.clipboard?.writeText(term.getSelection()).catch(() => {});
      return false;
    }
    if (key === "v") return false;
    return true;
  });
  const io = new TerminalIO(term, { onInput: (data) => transport?.send(data), predict: opts.predict !== false });
  const subscriptions = [
    io,
    cursor,
    term.onResize(({ rows, cols }) => transport?.resize(rows, cols)),
  ];
  const resizeObserver = new ResizeObserver(() => fitNow());
  resizeObserver.observe(screen);
  const stopTheme = watchTheme(() => { term.options.theme = terminalTheme(); });

  /**
   * Show `sessionId`. `live`: this view started it, so it has been there since the
   * session's first byte and all of its output is live; otherwise what the session
   * printed before now is replayed, its queries unanswered (see termio.js).
   */
  function attach(sessionId, { live = false } = {}) {
    transport?.dispose();
    transport = null;
    root.dataset.sessionId = sessionId || "";
    delete root.dataset.replay;
    if (!sessionId) return;
    io.reset();
    cursor.reset();
    const reader = new SessionTransport({
      api: opts.api,
      sessionId,
      liveFrom: live ? 0 : null,
      budget: pageBudget(),
      stream: opts.api ? pageStream(opts.api) : null, // one output stream for the page's terminals
      onOutput: (data, done, { replay }) => {
        lastOutput = performance.now();
        if (replay) root.dataset.replay = "true";
        // The next poll waits until the last piece is parsed (flow control).
        io.write(data, { replay }, () => {
          if (transport === reader && !reader.inHistory) delete root.dataset.replay;
          done();
        });
      },
      onState: show,
    });
    transport = reader.start();
    fitNow();
    // The PTY may have another size (another view, a default): tell it ours.
    transport.resize(term.rows, term.cols);
  }

  async function startNew(fresh = true) {
    if (!opts.api || starting) return;
    show({ name: "connecting" });
    fitNow();
    starting = (opts.startSession
      ? opts.startSession(term.rows, term.cols, fresh)
      : opts.api.start(opts.labId, term.rows, term.cols).then((s) => ({ sessionId: s.sessionId, started: true })));
    try {
      const { sessionId: id, started } = await starting;
      if (disposed) return;
      attach(id, { live: started });
      opts.onSessionId?.(id);
    } catch (answer) {
      if (disposed) return;
      const code = answer?.status;
      const message = answer?.body?.message;
      if (code === 401 || code === 403) show({ name: "forbidden", message });
      else if (code === 404 && answer?.body?.error === "lab_not_found") show({ name: "not_found", message, lab: true });
      else show({ name: "unavailable", message: message || "Could not start a lab session; try again." });
    } finally {
      starting = null;
    }
  }

  restart.addEventListener("click", () => startNew(true));

  async function begin() {
    show({ name: "connecting" });
    fitNow();
    if (!opts.api || !(await opts.api.healthy())) {
      if (!disposed) show({ name: "unavailable" });
      return;
    }
    if (disposed) return;
    if (opts.sessionId) attach(opts.sessionId);
    else await startNew(false);
  }
  begin();

  return {
    term,
    root,
    get state() { return state; },
    get sessionId() { return root.dataset.sessionId || ""; },
    attach(sessionId) {
      if (disposed || sessionId === root.dataset.sessionId) return;
      if (sessionId) attach(sessionId);
    },
    restart: startNew,
    /** Keys to the session as typed (`\x03`: Ctrl-C); nothing while there is no session. */
    send(data) {
      if (opts.readOnly || !transport) return;
      io.external(data); // not typed at the line: prediction holds
      transport.send(data);
    },
    /** Text as pasted into the terminal (bracketed when the program asked for it). */
    paste(text) {
      if (!opts.readOnly && transport) term.paste(text);
    },
    /** Resolves once no output has come for `quiet` ms (or after `max` ms at most). */
    whenQuiet(quiet = 300, max = 3000) {
      const began = performance.now();
      return new Promise((resolve) => {
        const tick = () => {
          const now = performance.now();
          if (now - Math.max(lastOutput, began) >= quiet || now - began >= max || disposed) resolve();
          else setTimeout(tick, 50);
        };
        setTimeout(tick, 50);
      });
    },
    setReadOnly(readOnly) {
      opts.readOnly = readOnly;
      term.options.disableStdin = !!readOnly;
      show(state);
    },
    /** Turn predictive echo on or off (off takes what is drawn back first). */
    setPredict(on) {
      opts.predict = !!on;
      root.dataset.predict = on ? "on" : "off";
      io.setPredict(!!on);
    },
    /** Predictive echo: on, and keys typed, drawn, confirmed and rolled back so far. */
    get prediction() {
      return { on: io.predicting, ...io.stats };
    },
    setRows(rows) {
      opts.rows = rows;
      fitNow();
    },
    async stop() {
      const id = root.dataset.sessionId;
      if (id && opts.api) {
        await opts.api.request("DELETE", `api/labs/session/${encodeURIComponent(id)}`).catch(() => {});
      }
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      transport?.dispose();
      resizeObserver.disconnect();
      stopTheme();
      for (const s of subscriptions) s.dispose();
      term.dispose(); // disposes the addons too
      root.remove();
    },
  };
}
