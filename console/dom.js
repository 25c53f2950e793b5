// Small DOM helpers. Every string from the API goes in through textContent or an
// attribute value, never as HTML.

/**
 * h("button.primary", {type: "button", onclick}, "Save", child, ...): an element with
 * classes, attributes (on* are listeners, "dataset" an object), and children (strings
 * become text nodes; null/false are skipped).
 */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else if (k === "value") el.value = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let uid = 0;
/** A unique id for label/for pairs. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled field: {label, input, hint, error} with the input created by h(). */
export function field(label, inputTag, attrs, hint) {
  const id = attrs.id || nextId("f");
  const input = h(inputTag, { ...attrs, id });
  const hintEl = hint ? h("p.hint", { id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  const wrap = h("div.field", {}, h("label", { for: id }, label), input, hintEl);
  return { wrap, input };
}

/** A message line next to what caused it (role=alert for errors, status for results). */
export function messageLine(kind = "error") {
  return h(`p.msg.${kind}`, { role: kind === "error" ? "alert" : "status", "aria-live": "polite" });
}

export function setMessage(el, kind, text) {
  el.className = `msg ${kind}`;
  el.textContent = text || "";
}

/** A modal <dialog> with a title; resolves when closed. Returns {dialog, body, close}. */
export function modal(title, { wide = false } = {}) {
  const titleId = nextId("dlg");
  const body = h("div.dialog-body");
  const closeBtn = h("button.icon-btn", { type: "button", "aria-label": "Close" }, "×");
  const dialog = h(`dialog.dialog${wide ? ".wide" : ""}`, { "aria-labelledby": titleId },
    h("div.dialog-head", {}, h("h2", { id: titleId }, title), closeBtn), body);
  closeBtn.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, body, close: () => dialog.close() };
}

/** Asks for confirmation in a dialog; resolves true or false. */
export function confirmDialog(title, lines, confirmLabel, danger = true) {
  return new Promise((resolve) => {
    const { dialog, body, close } = modal(title);
    let answer = false;
    const ok = h(`button.${danger ? "danger" : "primary"}`, { type: "button" }, confirmLabel);
    ok.addEventListener("click", () => { answer = true; close(); });
    const cancel = h("button.ghost", { type: "button" }, "Cancel");
    cancel.addEventListener("click", close);
    append(body, lines.map((l) => (l instanceof Node ? l : h("p", {}, l))));
    body.append(h("div.actions", {}, cancel, ok));
    dialog.addEventListener("close", () => resolve(answer));
    cancel.focus();
  });
}

export function formatTime(iso) {
  if (!iso && iso !== 0) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A short time: the clock for today, the day otherwise (the full time in a title). */
export function shortTime(iso) {
  if (!iso && iso !== 0) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return d.toLocaleTimeString(undefined, { timeStyle: "short" });
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}
