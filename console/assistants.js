// Assistants: list, create, enable/disable, and each one's Channels tab (bind, unbind).
import { api, listAll } from "./api.js";
import { h, clear, field, messageLine, setMessage, confirmDialog } from "./dom.js";
import { providerInfo } from "./providers.js";

let listEl;
let pageMsg;

export function render(main) {
  const form = h("form.inline-form", { novalidate: true, "aria-label": "Create an assistant" });
  const name = field("New assistant name", "input", { type: "text", name: "name", maxlength: 1024, required: true });
  const create = h("button.primary", { type: "submit" }, "Create assistant");
  const createMsg = messageLine();
  form.append(name.wrap, create);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const n = name.input.value.trim();
    if (!n) { setMessage(createMsg, "error", "Type a name for the assistant."); name.input.focus(); return; }
    create.disabled = true;
    try {
      await api("POST", "/orgs/c/assistants", { body: { name: n } });
      name.input.value = "";
      setMessage(createMsg, "ok", `Assistant ${n} created.`);
      refresh();
    } catch (e) {
      if (e.status === 429) {
        const s = Number(e.headers.get("retry-after") || 0);
        const when = s > 0 ? ` Try again in ${s >= 120 ? `${Math.ceil(s / 60)} minutes` : `${s} seconds`}.` : "";
        setMessage(createMsg, "error", `At most 10 assistants can be created per hour.${when}`);
      } else {
        setMessage(createMsg, "error", `Could not create the assistant: ${e.message}`);
      }
    } finally { create.disabled = false; }
  });
  pageMsg = messageLine();
  listEl = h("ul.cards", { "aria-label": "Assistants" });
  main.append(h("div.page-head", {}, h("h1", {}, "Assistants")),
    h("section.card.pad", {}, form, createMsg), pageMsg, listEl);
  refresh();
}

async function refresh() {
  try {
    const items = await listAll("/orgs/c/assistants");
    clear(listEl);
    setMessage(pageMsg, "error", "");
    if (!items.length) listEl.append(h("li.empty", {}, "No assistants yet."));
    for (const a of items) listEl.append(row(a));
  } catch (e) {
    setMessage(pageMsg, "error", `Could not load the assistants: ${e.message}`);
  }
}

function row(a) {
  const msg = messageLine();
  const toggleId = `en-${a.id}`;
  const toggle = h("input.switch", { type: "checkbox", id: toggleId, role: "switch", checked: a.enabled });
  toggle.addEventListener("change", async () => {
    toggle.disabled = true;
    try {
      const { data } = await api("PATCH", `/orgs/c/assistants/${encodeURIComponent(a.id)}`, { body: { enabled: toggle.checked } });
      a.enabled = data.enabled;
      setMessage(msg, "ok", data.enabled ? "Enabled." : "Disabled: its events go to the unrouted stream.");
    } catch (e) {
      toggle.checked = a.enabled;
      setMessage(msg, "error", `Could not change it: ${e.message}`);
    } finally { toggle.disabled = false; }
  });
  const panel = h("div.channels", { hidden: true, id: `ch-${a.id}` });
  const tab = h("button", { type: "button", "aria-expanded": "false", "aria-controls": panel.id }, "Channels");
  tab.addEventListener("click", () => {
    const open = panel.hidden;
    panel.hidden = !open;
    tab.setAttribute("aria-expanded", String(open));
    if (open) renderChannels(a, panel);
  });
  return h("li.card.assistant", { dataset: { id: a.id } },
    h("div.row", {},
      h("div.grow", {}, h("strong.assistant-name", {}, a.name), h("div.muted.mono", {}, a.id)),
      h("label.switch-label", { for: toggleId }, toggle, h("span", {}, "Enabled")),
      tab),
    msg, panel);
}

async function renderChannels(a, panel) {
  clear(panel);
  const msg = messageLine();
  const list = h("ul.bindings", { "aria-label": `Channels of ${a.name}` });
  panel.append(h("h3", {}, "Channels"), list, msg);
  let connections = [];
  let bindings = [];
  try {
    [connections, bindings] = await Promise.all([
      listAll("/orgs/c/connections"),
      listAll(`/orgs/c/assistants/${encodeURIComponent(a.id)}/channels`),
    ]);
  } catch (e) {
    setMessage(msg, "error", `Could not load the channels: ${e.message}`);
    return;
  }
  const byId = new Map(connections.map((c) => [c.id, c]));
  if (!bindings.length) list.append(h("li.muted", {}, "No channel bound yet."));
  for (const b of bindings) {
    const c = byId.get(b.connection_id);
    const info = providerInfo(b.channel || (c && c.provider));
    const unbind = h("button.danger-ghost", { type: "button" }, "Unbind");
    unbind.addEventListener("click", async () => {
      const ok = await confirmDialog("Unbind channel", [
        h("p", {}, `Unbind ${b.name || b.external_id} from ${a.name}? The connection stays.`)], "Unbind");
      if (!ok) return;
      try {
        await api("DELETE", `/orgs/c/assistants/${encodeURIComponent(a.id)}/channels/${encodeURIComponent(b.id)}`);
        renderChannels(a, panel);
      } catch (e) { setMessage(msg, "error", `Could not unbind: ${e.message}`); }
    });
    list.append(h("li.binding", { dataset: { id: b.id } },
      h("img.provider-icon", { src: info.icon, alt: info.name, width: 24, height: 24 }),
      h("span.grow", {}, h("strong", {}, b.name || (c ? c.name : info.name)), " ",
        h("span.muted", {}, `${info.externalLabel || "ID"} ${b.external_id}${b.name ? ` · via ${c ? c.name : b.connection_id}` : ""}`)),
      unbind));
  }
  // Bind form
  const channelConns = connections.filter((c) => c.kind !== "action");
  if (!channelConns.length) {
    panel.append(h("p.muted", {}, "Add a channel connection first (Connections → Add integration)."));
    return;
  }
  const form = h("form.form.bind-form", { novalidate: true, "aria-label": "Bind a channel" });
  const conn = field("Connection", "select", { name: "connection_id" });
  for (const c of channelConns) conn.input.append(h("option", { value: c.id }, `${c.name} (${providerInfo(c.provider).name})`));
  const ext = field("External ID", "input", { type: "text", name: "external_id", maxlength: 256, autocomplete: "off" });
  const extHint = h("p.hint", {});
  ext.wrap.append(extHint);
  const label = field("Label (optional)", "input", { type: "text", name: "name", maxlength: 1024 });
  const update = () => {
    const c = byId.get(conn.input.value);
    const info = providerInfo(c && c.provider);
    ext.wrap.querySelector("label").textContent = `${info.externalLabel || "External ID"}${info.externalOptional ? " (optional)" : ""}`;
    extHint.textContent = info.externalHint || "";
  };
  conn.input.addEventListener("change", update);
  update();
  const bindBtn = h("button.primary", { type: "submit" }, "Bind");
  const bindMsg = messageLine();
  form.append(h("h4", {}, "Bind a channel"), h("div.grid3", {}, conn.wrap, ext.wrap, label.wrap), h("div.actions", {}, bindBtn), bindMsg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { connection_id: conn.input.value };
    const c = byId.get(conn.input.value);
    let e = ext.input.value.trim();
    if (!e && c && c.provider === "telegram" && c.credentials && c.credentials.bot_token) e = "";
    if (e) body.external_id = e;
    else if (!providerInfo(c && c.provider).externalOptional) { setMessage(bindMsg, "error", "Type the external ID."); ext.input.focus(); return; }
    if (label.input.value.trim()) body.name = label.input.value.trim();
    bindBtn.disabled = true;
    try {
      await api("POST", `/orgs/c/assistants/${encodeURIComponent(a.id)}/channels`, { body });
      renderChannels(a, panel);
    } catch (err) {
      setMessage(bindMsg, "error", `Could not bind: ${err.message}`);
    } finally { bindBtn.disabled = false; }
  });
  panel.append(form);
}
