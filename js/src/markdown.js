// Step text as the lab panel shows it: Markdown (marked) with Killercoda's
// markers, then sanitised (DOMPurify) before it reaches the page.
//
// Markers follow a code span or a closing fence, as in labkernel/labs/killercoda.py
// (whose scanner this mirrors: fences, CommonMark backtick runs, <pre> HTML blocks
// skipped): `cmd`{{exec}}, ```…```{{exec}}, {{exec interrupt}}, Katacoda's
// {{execute}}, {{copy}}, {{}} (no button). A marked span or block becomes an
// *action*: the HTML carries a placeholder (`data-lk-action="<nonce>:<n>"`) and the
// action itself (kind, code, flags) stays in JavaScript; the panel turns the
// placeholders into buttons once the HTML is sanitised. The nonce is new for each
// rendering, so raw HTML in a step cannot forge a placeholder.
//
// `renderMarkdown` is pure (node-testable); `sanitize` needs a DOM.

import { Marked } from "marked";
import createDOMPurify from "dompurify";

const MARKER = /\{\{([^{}\n]*)\}\}/g;
const FENCE_OPEN = /^[ \t]*(`{3,}|~{3,})(.*)$/;
const PRE_OPEN = /^[ \t]*<pre(?:[\s>]|$)/i;
const PRE_CLOSE = /<\/pre\s*>/i;
// Killercoda's port placeholders ({{TRAFFIC_HOST1_8080}}) arrive as this server's
// addresses: the server makes them (labkernel/labs/hosting.py), as only it knows
// whether jupyter-server-proxy is there. A link still holding a placeholder (one
// the server does not know) leads nowhere and loses its href.
const PLACEHOLDER_HREF = /\{\{|%7B%7B|\[\[|%5B%5B/i;

/** What a marker's words mean: `{kind, flags}`; kind is exec, copy, nocopy, open or other. */
export function parseMarker(content) {
  const words = content.trim().split(/\s+/).filter(Boolean);
  const head = (words[0] || "").toLowerCase();
  const kind = { exec: "exec", execute: "exec", copy: "copy", "": "nocopy", open: "open" }[head] || "other";
  return { kind, flags: words.slice(1).map((w) => w.toLowerCase()) };
}

/** Escape text for HTML. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/**
 * Move each closing fence's marker onto its opening fence's info string
 * (```` ```{{exec}} ```` is not a closing fence to a CommonMark parser, which would
 * run the block on to the end of the text). Lines inside <pre> blocks are left as
 * they are: Katacoda shows marker syntax in them.
 */
export function moveFenceMarkers(markdown) {
  const lines = markdown.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    if (PRE_OPEN.test(lines[i])) {
      while (i < lines.length && !PRE_CLOSE.test(lines[i])) i += 1;
      i += 1;
      continue;
    }
    const opening = FENCE_OPEN.exec(lines[i]);
    if (!opening || (opening[1][0] === "`" && opening[2].includes("`"))) {
      i += 1;
      continue;
    }
    const fence = opening[1];
    const closing = new RegExp(`^([ \\t]*${fence[0] === "`" ? "`" : "~"}{${fence.length},})[ \\t]*(?:\\{\\{([^{}\\n]*)\\}\\})?[ \\t]*$`);
    const open = i;
    i += 1;
    while (i < lines.length) {
      const m = closing.exec(lines[i]);
      if (m) {
        if (m[2] !== undefined) {
          lines[open] = `${lines[open].replace(/[ \t]+$/, "")} {{${m[2]}}}`;
          lines[i] = m[1];
        }
        break;
      }
      i += 1;
    }
    i += 1;
  }
  return lines.join("\n");
}

/** A code span (CommonMark backtick run) at the start of `src` with a marker right after it. */
function markedSpan(src) {
  let run = 0;
  while (src[run] === "`") run += 1;
  if (!run) return null;
  // The closing run is the first run of exactly the same length.
  let j = run;
  for (;;) {
    const at = src.indexOf("`", j);
    if (at < 0) return null;
    let end = at;
    while (src[end] === "`") end += 1;
    if (end - at === run) {
      const marker = /^\{\{([^{}\n]*)\}\}/.exec(src.slice(end));
      if (!marker) return null;
      let code = src.slice(run, at).replace(/\n/g, " ");
      if (code.length >= 2 && code[0] === " " && code[code.length - 1] === " " && code.trim()) code = code.slice(1, -1);
      return { raw: src.slice(0, end + marker[0].length), code, marker: marker[1] };
    }
    j = end;
  }
}

function sameTitle(a, b) {
  const norm = (s) => String(s || "").replace(/[*_`]/g, "").trim().toLowerCase();
  return norm(a) !== "" && norm(a) === norm(b);
}

/**
 * Render step Markdown to HTML (not yet sanitised) and the actions it holds.
 *
 * options:
 *   nonce      the placeholders' prefix (a fresh random string per rendering)
 *   title      a first heading that repeats it is left out (Killercoda step texts
 *              often start with their title, which the panel shows already)
 *
 * Returns `{html, actions}`; `actions[n]` is `{kind, code, flags, block,
 * interrupt, enter}` for the placeholder `<nonce>:<n>`.
 */
export function renderMarkdown(markdown, { nonce = "lk", title = "" } = {}) {
  const actions = [];
  const placeholder = (action) => {
    actions.push(action);
    return `${nonce}:${actions.length - 1}`;
  };
  const describe = (content, code, block) => {
    const { kind, flags } = parseMarker(content);
    const ctrlSeq = flags.includes("ctrl-seq");
    return {
      kind, code, flags, block,
      interrupt: flags.includes("interrupt"),
      // Katacoda's keystroke markers: no Enter after them.
      enter: !ctrlSeq && !flags.includes("no-newline"),
      keys: ctrlSeq ? controlKeys(code) : null,
    };
  };
  const actionable = (a) => (a.kind === "exec" || a.kind === "copy") && a.code.trim() !== "";

  const marked = new Marked({
    gfm: true,
    breaks: false,
    extensions: [{
      name: "lkaction",
      level: "inline",
      start(src) {
        const i = src.indexOf("`");
        return i < 0 ? undefined : i;
      },
      tokenizer(src) {
        const span = markedSpan(src);
        return span ? { type: "lkaction", raw: span.raw, code: span.code, marker: span.marker } : undefined;
      },
      renderer(token) {
        const action = describe(token.marker, token.code, false);
        if (!actionable(action)) return `<code>${escapeHtml(token.code)}</code>`;
        return `<code class="labkernel-action" data-lk-action="${placeholder(action)}">${escapeHtml(token.code)}</code>`;
      },
    }],
    renderer: {
      code({ text, lang }) {
        const info = lang || "";
        const marker = /\s*\{\{([^{}\n]*)\}\}\s*$/.exec(info);
        const language = (marker ? info.slice(0, marker.index) : info).trim().split(/\s+/)[0];
        const cls = language ? ` class="language-${escapeHtml(language)}"` : "";
        const body = `<code${cls}>${escapeHtml(text)}</code>`;
        if (!marker) return `<pre>${body}</pre>\n`;
        const action = describe(marker[1], text.replace(/\n+$/, ""), true);
        if (!actionable(action)) return `<pre>${body}</pre>\n`;
        return `<pre class="labkernel-action" data-lk-action="${placeholder(action)}">${body}</pre>\n`;
      },
    },
    walkTokens(token) {
      // Markers that follow no code (a TRAFFIC_SELECTOR, a typo) are dropped.
      if (token.type === "text" && !token.tokens) token.text = token.text.replace(MARKER, "");
    },
    hooks: {
      processAllTokens(tokens) {
        const first = tokens.findIndex((t) => t.type !== "space");
        if (first >= 0 && tokens[first].type === "heading" && sameTitle(tokens[first].text, title)) {
          tokens.splice(first, 1);
        }
        return tokens;
      },
    },
  });
  return { html: marked.parse(moveFenceMarkers(String(markdown || ""))), actions };
}

/** Katacoda's `^C`{{execute ctrl-seq}} and `ctrl+c`: the control character, else the text. */
export function controlKeys(code) {
  const m = /^\s*(?:\^|ctrl[+-])([a-z@[\\\]^_])\s*$/i.exec(code);
  if (!m) return code;
  return String.fromCharCode(m[1].toUpperCase().charCodeAt(0) & 0x1f);
}

/** Whether `src` names a file relative to the lab's folder (not a URL, not a path on the server). */
export function isRelative(src) {
  return !!src && !/^[a-z][a-z0-9+.-]*:/i.test(src) && !src.startsWith("/") && !src.startsWith("#");
}

/** The lab-relative path of a relative image source (`./assets/a.png` → `assets/a.png`). */
export function labPath(src) {
  return src.split(/[?#]/)[0].replace(/^(\.\/)+/, "");
}

// Tags a step may not bring onto the page even when DOMPurify would keep them:
// forms and their fields (a step is instructions, not a login box), styles (which
// could restyle the page around it).
const FORBID_TAGS = ["style", "form", "input", "button", "textarea", "select", "option", "dialog"];
const FORBID_ATTR = ["style", "autofocus", "tabindex"];

let purifier = null;

function getPurifier(win) {
  if (purifier) return purifier;
  purifier = createDOMPurify(win);
  purifier.addHook("afterSanitizeAttributes", (node) => {
    if (node.nodeName === "IMG") {
      // Loaded by the panel from the lab's files, with the page's credentials;
      // never requested relative to the page's own address.
      const src = node.getAttribute("src");
      if (src && isRelative(src)) {
        node.removeAttribute("src");
        node.setAttribute("data-lk-src", labPath(src));
      }
      node.setAttribute("loading", "lazy");
    }
    if (node.nodeName === "A" && PLACEHOLDER_HREF.test(node.getAttribute("href") || "")) node.removeAttribute("href");
    if (node.nodeName === "A" && node.hasAttribute("href") && !node.getAttribute("href").startsWith("#")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
  return purifier;
}

/** Sanitised HTML as a DocumentFragment of `win`'s document: no script, no handler, no form. */
export function sanitize(html, win = globalThis.window) {
  return getPurifier(win).sanitize(html, {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS,
    FORBID_ATTR,
    ADD_ATTR: ["target"],
  });
}
