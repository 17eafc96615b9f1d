// The stand-alone lab page (labkernel/labs/{labId}, labkernel/sessions/{id}):
// the same lab panel and terminal as the widget, filling a page of its own:
// instructions left, terminal right, as on Killercoda. The page remembers
// its session per lab in localStorage, so a reload attaches again instead of
// starting over.

import { pageApi, pageConfig } from "./view.js";
import { mountLab } from "./panel.js";

function remember(key, id) {
  try {
    if (id) localStorage.setItem(key, id);
    else localStorage.removeItem(key);
  } catch {
    // Storage may be disabled (private windows, policies): the page still works.
  }
}

function recall(key) {
  try {
    return localStorage.getItem(key) || "";
  } catch {
    return "";
  }
}

function main() {
  const config = pageConfig() || {};
  const params = new URLSearchParams(location.search);
  const api = pageApi(params.get("http") || config.http);
  const labId = config.labId || "";
  const key = `labkernel:${config.baseUrl}:lab:${labId}`;
  let sessionId = config.sessionId || (labId ? recall(key) : "");
  const fromStorage = !config.sessionId && !!sessionId;
  let lab;
  lab = mountLab(document.getElementById("labkernel-page"), {
    api,
    sessionId,
    labId, // "" on a session's page: the panel learns it from the session
    rows: "fill",
    // Predictive echo is on unless the address says ?predict=0 (or the page's config does).
    predict: !["0", "false", "off"].includes(String(params.get("predict") ?? config.predict ?? "")),
    onSessionId(id) {
      sessionId = id;
      if (labId) remember(key, id);
      // On a session's page, the address follows the new session, so a reload finds it.
      else history.replaceState(null, "", `${config.baseUrl}labkernel/sessions/${encodeURIComponent(id)}`);
    },
    onState(state) {
      // A remembered session the server no longer knows (it restarted): start afresh.
      if (state.name === "not_found" && fromStorage && lab?.view.sessionId === sessionId && labId) {
        remember(key, "");
        sessionId = "";
        lab.restart();
      }
      document.title = `${lab?.labTitle || config.title || labId || "Lab"} — ${state.name.replace("_", " ")}`;
    },
  });
  globalThis.labkernelPage = lab.view; // the terminal's view, for the browser tests and the curious
  globalThis.labkernelLab = lab;
  lab.view.term.focus();
}

main();
