// The cursor's blink, without a CSS animation.
//
// xterm's DOM renderer blinks the cursor with an infinite CSS animation of its
// colours, which Chromium cannot run on the compositor: while the terminal has
// focus the page renders a frame every 16 ms. Measured in JupyterLab (issue 13):
// 13 % of a core for an idle page with a focused labkernel terminal, 2–3 % with
// the blink off, 7–8 % with JupyterLab's own terminal focused. Here xterm's blink
// is off and a timer toggles one class on the terminal's root every 600 ms (as
// xterm's canvas renderer does), only while the terminal has focus: two style
// changes of one cell a second instead of sixty frames. The cursor shows solid
// while keys or output arrive, blinks when idle, and, unfocused, is xterm's
// hollow outline.
//
// A program may ask for a steady or blinking cursor (DECSCUSR, `ESC[n q`, as vim
// and shells in vi mode do); xterm would turn its CSS blink back on for the
// blinking ones. That sequence is handled here: the shape goes to xterm, the
// blink to this timer.

/** The CSS class that hides the focused cursor (terminal.css). */
export const OFF_CLASS = "labkernel-cursor-off";

export const BLINK_INTERVAL = 600;

const SHAPES = { 1: "block", 2: "block", 3: "underline", 4: "underline", 5: "bar", 6: "bar" };

/**
 * Blink `term`'s cursor by toggling OFF_CLASS on `root`. Call after `term.open()`;
 * `term` must have `cursorBlink: false`. Returns `{reset, dispose}`.
 */
export function blinkCursor(term, root, { interval = BLINK_INTERVAL, blink = true } = {}) {
  let wanted = blink; // the program's wish (DECSCUSR), blinking by default
  let timer = null;
  let lastActivity = 0;
  const textarea = term.textarea;

  const show = () => {
    if (root.classList.contains(OFF_CLASS)) root.classList.remove(OFF_CLASS);
  };
  const tick = () => {
    if (performance.now() - lastActivity < interval) show();
    else root.classList.toggle(OFF_CLASS);
  };
  const stop = () => {
    if (timer !== null) clearInterval(timer);
    timer = null;
    show();
  };
  const start = () => {
    if (!wanted || timer !== null) return;
    timer = setInterval(tick, interval);
  };
  const focused = () => textarea && textarea.ownerDocument.activeElement === textarea;
  // Keys and output keep the cursor solid until they have been quiet for a while.
  const active = () => {
    lastActivity = performance.now();
    show();
  };

  const shape = term.parser.registerCsiHandler({ intermediates: " ", final: "q" }, (params) => {
    const n = typeof params[0] === "number" && params[0] > 0 ? params[0] : 1;
    if (SHAPES[n]) term.options.cursorStyle = SHAPES[n];
    wanted = n % 2 === 1;
    if (!wanted) stop();
    else if (focused()) start();
    return true; // not xterm's handler: it would turn its CSS blink on
  });
  const subscriptions = [shape, term.onWriteParsed(active), term.onData(active)];
  textarea?.addEventListener("focus", start);
  textarea?.addEventListener("blur", stop);
  if (focused()) start();

  return {
    /** Back to a blinking block, as a new session starts (after `term.reset()`). */
    reset() {
      term.options.cursorStyle = "block";
      wanted = blink;
      if (focused()) start();
    },
    dispose() {
      stop();
      textarea?.removeEventListener("focus", start);
      textarea?.removeEventListener("blur", stop);
      for (const s of subscriptions) s.dispose();
    },
  };
}
