// Dead letters: commands that failed for good, with retry and discard.
import { api } from "./api.js";
import { h, clear, messageLine, setMessage, formatTime, confirmDialog } from "./dom.js";

const REASONS = {
  rejected: "The provider refused the message",
  token_invalid: "The provider refused the connection's token",
  retries_exhausted: "Still failing when the retry time ran out",
  unsupported: "The channel cannot send it",
  unknown_conversation: "Unknown conversation",
  connection_deleted: "The connection was deleted",
  credentials_unreadable: "The connection's credentials could not be read",
  invalid_command: "Invalid command",
  outside_window: "Outside WhatsApp's 24-hour window",
  contact_blocked: "The contact is blocked",
  handed_off: "The conversation is handed off to a person",
};

export function render(main) {
  const msg = messageLine();
  const list = h("ul.cards", { "aria-label": "Dead letters" });
  const reload = h("button", { type: "button" }, "Refresh");
  main.append(h("div.page-head", {}, h("h1", {}, "Dead letters"), reload),
    h("p.muted.lead", {}, "Outbound messages that failed for good. Send one again once the cause is fixed, or discard it."),
    msg, list);

  async function load() {
    try {
      const { data } = await api("GET", "/orgs/c/dead-letters", { query: { take: 100 } });
      setMessage(msg, "error", "");
      clear(list);
      if (!data.length) list.append(h("li.empty", {}, "No dead letters."));
      for (const d of data) list.append(row(d));
    } catch (e) {
      setMessage(msg, "error", `Could not load the dead letters: ${e.message}`);
    }
  }

  function row(d) {
    const rowMsg = messageLine();
    const retry = h("button", { type: "button" }, "Retry");
    const discard = h("button.danger-ghost", { type: "button" }, "Discard");
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        await api("POST", `/orgs/c/dead-letters/${encodeURIComponent(d.id)}/retry`);
        setMessage(rowMsg, "ok", "Queued to be sent again.");
        load();
      } catch (e) {
        setMessage(rowMsg, "error", `Could not retry: ${e.message}`);
        retry.disabled = false;
      }
    });
    discard.addEventListener("click", async () => {
      const ok = await confirmDialog("Discard dead letter", [h("p", {}, `Discard the message ${d.id}? It will not be sent.`)], "Discard");
      if (!ok) return;
      try {
        await api("DELETE", `/orgs/c/dead-letters/${encodeURIComponent(d.id)}`);
        load();
      } catch (e) { setMessage(rowMsg, "error", `Could not discard: ${e.message}`); }
    });
    const cmd = d.command || {};
    const what = cmd.text || (cmd.media && (cmd.media.file_name || cmd.media.url)) || `[${d.type || cmd.type || "message"}]`;
    const err = d.error && (d.error.message || d.error.code) ? `${d.error.message || ""}${d.error.code ? ` (code ${d.error.code})` : ""}` : "";
    return h("li.card.dead", { dataset: { id: d.id } },
      h("div.row", {},
        h("div.grow", {},
          h("div.dead-text", {}, what),
          h("div.muted.small", {}, `${REASONS[d.reason] || d.reason || "Failed"}${err ? `: ${err}` : ""}`),
          h("div.muted.small.mono", {}, `${d.id} · ${d.conversation_id || ""} · ${formatTime(d.failed_at)} · ${d.attempts || 1} attempt(s)`)),
        h("div.conn-actions", {}, retry, discard)),
      rowMsg);
  }
  reload.addEventListener("click", load);
  load();
}
