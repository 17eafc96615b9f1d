// The anywidget side of labkernel.Terminal. The model holds the session id and
// the options; every view (the same Terminal displayed in two cells) is its own
// client of that session, with its own clientId, talking to the REST API
// straight from the browser: the kernel never relays terminal traffic, so the
// terminal keeps working while the kernel is busy or after it restarts.
//
// The same module renders labkernel.LabPanel (model `kind` "lab"): the lab's
// instructions beside the terminal (panel.js), driven by the same traits.

import { mountTerminal, pageApi } from "./view.js";
import { mountLab } from "./panel.js";

// Where the kernel could not start a session (it was not started by a labkernel
// server), the first view starts one; views rendered meanwhile share that start.
const starts = new WeakMap();

// After a kernel restart the model's comm is gone; the view goes on working
// (it needs no kernel), its state just no longer reaches Python.
function save(model) {
  try {
    model.save_changes();
  } catch {
    // nothing to tell: the kernel side of this widget is gone
  }
}

function render({ model, el }) {
  const api = pageApi(model.get("http"));
  const mount = model.get("kind") === "lab" ? mountLab : mountTerminal;
  const view = mount(el, {
    api,
    sessionId: model.get("session_id"),
    labId: model.get("lab"),
    rows: model.get("rows"),
    readOnly: model.get("read_only"),
    predict: model.get("predict") !== false,
    startSession(rows, cols, fresh) {
      const current = model.get("session_id");
      // Another view started it: this one comes late, its history is replayed.
      if (current && !fresh) return Promise.resolve({ sessionId: current, started: false });
      if (!starts.has(model)) {
        const start = api.start(model.get("lab"), rows, cols).then((s) => ({ sessionId: s.sessionId, started: true }));
        starts.set(model, start);
        start.finally(() => starts.delete(model)).catch(() => {});
      }
      return starts.get(model);
    },
    onSessionId(id) {
      if (model.get("session_id") !== id) {
        model.set("session_id", id);
        save(model);
      }
    },
    onState(state) {
      const exitCode = state.exitCode ?? null;
      if (model.get("status") !== state.name || model.get("exit_code") !== exitCode) {
        model.set("status", state.name);
        model.set("exit_code", exitCode);
        save(model);
      }
    },
  });
  const onSession = () => view.attach(model.get("session_id"));
  const onRows = () => view.setRows(model.get("rows"));
  const onReadOnly = () => view.setReadOnly(model.get("read_only"));
  const onPredict = () => (view.view || view).setPredict(model.get("predict") !== false);
  const onMessage = (msg) => {
    if (msg?.type === "stop") view.stop();
    // A check ran in the kernel (Lab.check): the panel reads the progress again.
    if (msg?.type === "refresh") view.refresh?.();
  };
  model.on("change:session_id", onSession);
  model.on("change:rows", onRows);
  model.on("change:read_only", onReadOnly);
  model.on("change:predict", onPredict);
  model.on("msg:custom", onMessage);
  return () => {
    model.off("change:session_id", onSession);
    model.off("change:rows", onRows);
    model.off("change:read_only", onReadOnly);
    model.off("change:predict", onPredict);
    model.off("msg:custom", onMessage);
    view.dispose();
  };
}

export default { render };
