// The stand-alone lab page (labkernel/labs/{labId}, labkernel/sessions/{id}):
// the same terminal as the widget, filling a page of its own. The page remembers
// its session per lab in localStorage, so a reload attaches again instead of
// starting over.

import { mountTerminal, pageApi, pageConfig } from "./view.js";

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
  let view;
  view = mountTerminal(document.getElementById("labkernel-page"), {
    api,
    sessionId,
    labId: labId || "shell",
    rows: "fill",
    onSessionId(id) {
      sessionId = id;
      if (labId) remember(key, id);
      // On a session's page, the address follows the new session, so a reload finds it.
      else history.replaceState(null, "", `${config.baseUrl}labkernel/sessions/${encodeURIComponent(id)}`);
    },
    onState(state) {
      // A remembered session the server no longer knows (it restarted): start afresh.
      if (state.name === "not_found" && fromStorage && view?.sessionId === sessionId && labId) {
        remember(key, "");
        sessionId = "";
        view.restart();
      }
      document.title = `${config.title || labId || "Lab"} — ${state.name.replace("_", " ")}`;
    },
  });
  globalThis.labkernelPage = view; // for the browser tests and the curious
  view.term.focus();
}

main();
