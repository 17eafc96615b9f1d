// The terminal's colours follow JupyterLab's theme: light or dark from
// `data-jp-theme-light` on <body>, background and text from its CSS variables.
// Outside JupyterLab (the stand-alone page) they follow the browser's
// prefers-color-scheme.

const DARK = {
  foreground: "#e6e6e6", background: "#111111", cursor: "#ffffff", cursorAccent: "#111111",
  selectionBackground: "rgba(255, 255, 255, 0.3)",
};

const LIGHT = {
  foreground: "#1a1a1a", background: "#ffffff", cursor: "#333333", cursorAccent: "#ffffff",
  selectionBackground: "rgba(0, 0, 0, 0.2)",
  // xterm's default ANSI colours are for a dark background: yellow and white text
  // vanish on white. Darker variants keep `ls --color` and prompts readable.
  black: "#000000", red: "#c91b00", green: "#00a600", yellow: "#a68a00", blue: "#0225c7",
  magenta: "#b200b2", cyan: "#00a6b2", white: "#7f7f7f",
  brightBlack: "#555555", brightRed: "#e74c3c", brightGreen: "#15a01a", brightYellow: "#b08c00",
  brightBlue: "#3b5bdb", brightMagenta: "#c030c0", brightCyan: "#0f9aa5", brightWhite: "#3f3f3f",
};

export function isLight(doc = document) {
  const flag = doc.body?.dataset.jpThemeLight;
  if (flag === "true") return true;
  if (flag === "false") return false;
  return !globalThis.matchMedia?.("(prefers-color-scheme: dark)").matches;
}

/** The xterm theme for the page as it is now. */
export function terminalTheme(doc = document) {
  const base = isLight(doc) ? LIGHT : DARK;
  if (!doc.body) return { ...base };
  const css = getComputedStyle(doc.body);
  const variable = (name) => css.getPropertyValue(name).trim();
  return {
    ...base,
    background: variable("--jp-layout-color0") || base.background,
    foreground: variable("--jp-ui-font-color0") || base.foreground,
  };
}

/** Call `onChange` when JupyterLab switches theme; returns the function that stops watching. */
export function watchTheme(onChange, doc = document) {
  const observer = new MutationObserver(() => onChange());
  if (doc.body) observer.observe(doc.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });
  const media = globalThis.matchMedia?.("(prefers-color-scheme: dark)");
  media?.addEventListener?.("change", onChange);
  return () => {
    observer.disconnect();
    media?.removeEventListener?.("change", onChange);
  };
}
