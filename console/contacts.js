// Contacts with their status (filter, change).
import { api } from "./api.js";
import { h, clear, field, messageLine, setMessage, formatTime } from "./dom.js";
import { providerInfo } from "./providers.js";

export const STATUSES = {
  SUBSCRIBED: "Subscribed",
  UNSUBSCRIBED: "Unsubscribed",
  AI_REPLIES_DISABLED: "AI replies off",
  BLOCKED: "Blocked",
};

export function contactName(c) {
  return (c && (c.name || (c.username ? `@${c.username}` : "") || c.phone || c.external_id)) || "Unknown contact";
}

export function render(main) {
  let page = 1;
  const TAKE = 20;
  const filter = field("Status", "select", { name: "status" });
  filter.input.append(h("option", { value: "ALL" }, "All"));
  for (const [v, l] of Object.entries(STATUSES)) filter.input.append(h("option", { value: v }, l));
  const msg = messageLine();
  const table = h("table.table", {},
    h("caption.sr-only", {}, "Contacts"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Contact"), h("th", { scope: "col" }, "Channel"),
      h("th", { scope: "col" }, "Since"), h("th", { scope: "col" }, "Status"))));
  const tbody = h("tbody");
  table.append(tbody);
  const prev = h("button", { type: "button" }, "Previous");
  const next = h("button", { type: "button" }, "Next");
  const pageInfo = h("span.muted", { "aria-live": "polite" });
  main.append(h("div.page-head", {}, h("h1", {}, "Contacts")), h("div.toolbar", {}, filter.wrap), msg,
    h("div.table-wrap", {}, table), h("div.pager", {}, prev, pageInfo, next));

  async function load() {
    try {
      const { data, headers } = await api("GET", "/orgs/c/contacts", { query: { status: filter.input.value, page, take: TAKE } });
      const total = Number(headers.get("pagination-count") || 0);
      setMessage(msg, "error", "");
      clear(tbody);
      if (!data.length) tbody.append(h("tr", {}, h("td.empty", { colspan: 4 }, "No contacts.")));
      for (const c of data) tbody.append(contactRow(c));
      const pages = Math.max(1, Math.ceil(total / TAKE));
      pageInfo.textContent = `Page ${page} of ${pages} · ${total} contacts`;
      prev.disabled = page <= 1;
      next.disabled = page >= pages;
    } catch (e) {
      setMessage(msg, "error", `Could not load the contacts: ${e.message}`);
    }
  }
  filter.input.addEventListener("change", () => { page = 1; load(); });
  prev.addEventListener("click", () => { page -= 1; load(); });
  next.addEventListener("click", () => { page += 1; load(); });
  load();
}

function contactRow(c) {
  const info = providerInfo(c.channel);
  const sel = h("select", { "aria-label": `Status of ${contactName(c)}` });
  for (const [v, l] of Object.entries(STATUSES)) sel.append(h("option", { value: v, selected: v === c.status }, l));
  const msg = messageLine();
  sel.addEventListener("change", async () => {
    sel.disabled = true;
    try {
      const { data } = await api("PATCH", `/orgs/c/contacts/${encodeURIComponent(c.id)}`, { body: { status: sel.value } });
      c.status = data.status;
      setMessage(msg, "ok", "Saved.");
    } catch (e) {
      sel.value = c.status;
      setMessage(msg, "error", `Could not change the status: ${e.message}`);
    } finally { sel.disabled = false; }
  });
  return h("tr", { dataset: { id: c.id } },
    h("td", {}, h("div.contact-name", {}, contactName(c)),
      h("div.muted.small", {}, [c.phone, c.username ? `@${c.username}` : null, c.external_id].filter(Boolean).join(" · "))),
    h("td", {}, h("span.chan", {}, h("img.provider-icon", { src: info.icon, alt: "", width: 18, height: 18 }), info.name)),
    h("td.muted", {}, formatTime(c.created_at)),
    h("td", {}, sel, msg));
}
