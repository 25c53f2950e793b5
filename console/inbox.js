// The live inbox: conversations (live over Server-Sent Events), the thread with history,
// media, delivery ticks, the reply box with attachments, hand-off and block.
import { api, commandId, fetchBlobUrl } from "./api.js";
import { h, clear, field, messageLine, setMessage, formatTime, shortTime, confirmDialog } from "./dom.js";
import { providerInfo } from "./providers.js";
import { contactName } from "./contacts.js";

const UNAVAILABLE = "The inbox is not available on this gateway: its conversation routes answer 404.";
const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };
const TICK_WORDS = { sent: "Sent", delivered: "Delivered", read: "Read", failed: "Not delivered" };

export function render(main) {
  const state = { open: null, conversations: [], source: null, lastEventId: null, stopped: false,
    blobUrls: [], timer: null, retryTimer: null };
  const listMsg = messageLine();
  const liveEl = h("span.live", { role: "status" }, "");
  const filterUnread = h("input", { type: "checkbox", id: "inbox-unread" });
  const listEl = h("ul.conv-list", { "aria-label": "Conversations" });
  const thread = h("section.thread", { "aria-label": "Conversation" },
    h("p.muted.center", {}, "Choose a conversation."));
  const layout = h("div.inbox", {},
    h("aside.conv-pane", {},
      h("div.conv-head", {}, h("h1", {}, "Inbox"), liveEl),
      h("label.check", { for: "inbox-unread" }, filterUnread, h("span", {}, "Unread only")),
      listMsg, listEl),
    thread);
  main.append(layout);
  filterUnread.addEventListener("change", () => loadList());

  async function loadList() {
    try {
      const { data } = await api("GET", "/orgs/c/conversations", { query: { take: 50, unread: filterUnread.checked ? "true" : "" } });
      state.conversations = data;
      setMessage(listMsg, "error", "");
      drawList();
      return true;
    } catch (e) {
      if (e.status === 404) {
        clear(listEl);
        setMessage(listMsg, "info", UNAVAILABLE);
        layout.classList.add("unavailable");
        return false;
      }
      setMessage(listMsg, "error", `Could not load the conversations: ${e.message}`);
      return true;
    }
  }

  function drawList() {
    clear(listEl);
    if (!state.conversations.length) listEl.append(h("li.empty", {}, "No conversations yet."));
    let unread = 0;
    for (const c of state.conversations) {
      unread += c.unread_count || 0;
      const info = providerInfo(c.channel);
      const lm = c.last_message || {};
      const btn = h("button.conv", { type: "button", dataset: { id: c.id },
        "aria-current": state.open && state.open.id === c.id ? "true" : false,
        onclick: () => openConversation(c) },
      h("img.provider-icon", { src: info.icon, alt: info.name, width: 28, height: 28 }),
      h("span.conv-text", {},
        h("span.conv-top", {}, h("span.conv-name", {}, contactName(c.contact)), h("time.muted.small", { datetime: c.last_activity_at, title: formatTime(c.last_activity_at) }, shortTime(c.last_activity_at))),
        h("span.conv-preview", {}, `${lm.direction === "out" ? "You: " : ""}${lm.preview || ""}`)),
      c.unread_count ? h("span.badge.unread", { "aria-label": `${c.unread_count} unread` }, String(c.unread_count)) : null);
      listEl.append(h("li", {}, btn));
    }
    const nav = document.getElementById("nav-unread");
    if (nav) { nav.hidden = unread === 0; nav.textContent = String(unread); }
  }

  function scheduleList() {
    clearTimeout(state.timer);
    state.timer = setTimeout(loadList, 150);
  }

  // ---- live feed
  async function connect() {
    if (state.stopped) return;
    let ticket;
    try {
      ({ data: { ticket } } = await api("POST", "/orgs/c/inbox/tickets"));
    } catch (e) {
      liveEl.textContent = e.status === 404 ? "Live updates are not available on this gateway." : `Live updates stopped: ${e.message}`;
      liveEl.className = "live off";
      if (e.status !== 404 && e.status !== 401) state.retryTimer = setTimeout(connect, 5000);
      return;
    }
    const q = new URLSearchParams({ ticket });
    if (state.lastEventId) q.set("last_event_id", state.lastEventId);
    const src = new EventSource(`/orgs/c/inbox/events?${q}`);
    state.source = src;
    src.onopen = () => { liveEl.textContent = "Live"; liveEl.className = "live on"; };
    const onEvent = (ev) => {
      if (ev.lastEventId) state.lastEventId = ev.lastEventId;
      if (ev.type === "reset") { scheduleList(); if (state.open) loadThread(state.open, true); return; }
      let e = null;
      try { e = JSON.parse(ev.data); } catch { return; }
      scheduleList();
      if (state.open && e.conversation_id === state.open.id) onThreadEvent(e);
    };
    for (const k of ["message", "edit", "postback", "reaction", "status", "outbound", "referral", "reset"]) src.addEventListener(k, onEvent);
    src.onmessage = onEvent;
    src.onerror = () => {
      // A ticket is good for one connection: reconnect with a new one, resuming by id.
      src.close();
      if (state.source === src) state.source = null;
      liveEl.textContent = "Reconnecting…";
      liveEl.className = "live off";
      if (!state.stopped) state.retryTimer = setTimeout(connect, 1000);
    };
  }

  // ---- thread
  let threadItems = [];
  let hasOlder = false;
  let threadEls = {};
  let stick = true;
  const follow = () => { if (stick && threadEls.messages) threadEls.messages.scrollTop = threadEls.messages.scrollHeight; };

  async function openConversation(c) {
    state.open = c;
    drawList();
    loadThread(c, true);
    try {
      await api("POST", `/orgs/c/conversations/${encodeURIComponent(c.id)}/read`);
      c.unread_count = 0;
      drawList();
    } catch { /* the badge stays; the list refresh shows the truth */ }
  }

  async function loadThread(c, fresh) {
    if (fresh) { threadItems = []; hasOlder = false; drawThreadShell(c); }
    try {
      const { data, headers } = await api("GET", `/orgs/c/conversations/${encodeURIComponent(c.id)}/messages`, { query: { take: 30 } });
      threadItems = data.slice().reverse();
      hasOlder = Number(headers.get("pagination-count") || 0) > data.length;
      drawMessages(true);
    } catch (e) {
      setMessage(threadEls.msg, "error", e.status === 404 ? UNAVAILABLE : `Could not load the history: ${e.message}`);
    }
  }

  async function loadOlder() {
    const oldest = threadItems[0];
    if (!oldest) return;
    try {
      const { data } = await api("GET", `/orgs/c/conversations/${encodeURIComponent(state.open.id)}/messages`,
        { query: { take: 30, before: oldest.id } });
      threadItems = data.slice().reverse().concat(threadItems);
      hasOlder = data.length === 30;
      const box = threadEls.messages;
      const before = box.scrollHeight;
      drawMessages(false);
      box.scrollTop = box.scrollHeight - before;
    } catch (e) {
      setMessage(threadEls.msg, "error", `Could not load older messages: ${e.message}`);
    }
  }

  function onThreadEvent(e) {
    if (e.kind === "status" && e.status) {
      const target = threadItems.find((m) => m.message && m.message.external_id === e.status.message_external_id);
      if (target) { target.delivery = e.status.state; drawMessages(false); }
      return;
    }
    if (threadItems.some((m) => m.id === e.id)) return;
    if (e.kind === "outbound" && e.status && !e.delivery) e.delivery = e.status.state;
    threadItems.push(e);
    drawMessages(true);
    if (e.direction === "in") api("POST", `/orgs/c/conversations/${encodeURIComponent(e.conversation_id)}/read`).catch(() => {});
  }

  function drawThreadShell(c) {
    clear(thread);
    for (const u of state.blobUrls) URL.revokeObjectURL(u);
    state.blobUrls = [];
    const info = providerInfo(c.channel);
    const contact = c.contact || {};
    const handoffId = `handoff-${c.id}`;
    const aiOn = h("input.switch", { type: "checkbox", id: handoffId, role: "switch", checked: contact.status !== "AI_REPLIES_DISABLED" });
    const block = h("button.danger-ghost", { type: "button" }, contact.status === "BLOCKED" ? "Unblock" : "Block");
    const headMsg = messageLine();
    aiOn.addEventListener("change", async () => {
      aiOn.disabled = true;
      const status = aiOn.checked ? "SUBSCRIBED" : "AI_REPLIES_DISABLED";
      try {
        await api("PATCH", `/orgs/c/contacts/${encodeURIComponent(contact.id)}`, { body: { status } });
        contact.status = status;
        setMessage(headMsg, "ok", aiOn.checked ? "AI replies are on." : "Handed off: the assistant's replies are held back.");
      } catch (e) {
        aiOn.checked = !aiOn.checked;
        setMessage(headMsg, "error", `Could not change AI replies: ${e.message}`);
      } finally { aiOn.disabled = false; }
    });
    block.addEventListener("click", async () => {
      const blocking = contact.status !== "BLOCKED";
      if (blocking) {
        const ok = await confirmDialog("Block contact", [h("p", {}, `Block ${contactName(contact)}? Their messages will be dropped and nothing can be sent to them.`)], "Block");
        if (!ok) return;
      }
      const status = blocking ? "BLOCKED" : "SUBSCRIBED";
      try {
        await api("PATCH", `/orgs/c/contacts/${encodeURIComponent(contact.id)}`, { body: { status } });
        contact.status = status;
        block.textContent = blocking ? "Unblock" : "Block";
        aiOn.checked = true;
        setMessage(headMsg, "ok", blocking ? "Blocked." : "Unblocked.");
      } catch (e) { setMessage(headMsg, "error", `Could not change the status: ${e.message}`); }
    });
    const back = h("button.ghost.back", { type: "button", onclick: () => { state.open = null; layout.classList.remove("thread-open"); drawList(); } }, "‹ Back");
    const messages = h("ol.messages", { "aria-label": "Messages", tabindex: "0" });
    // Follow new messages (and images that load late) while the reader is at the bottom.
    messages.addEventListener("scroll", () => {
      stick = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    });
    stick = true;
    new ResizeObserver(follow).observe(messages);
    const msg = messageLine();
    threadEls = { messages, msg };
    thread.append(
      h("header.thread-head", {}, back,
        h("img.provider-icon", { src: info.icon, alt: info.name, width: 32, height: 32 }),
        h("div.grow", {}, h("strong.thread-name", {}, contactName(contact)),
          h("div.muted.small", {}, [info.name, contact.phone, contact.username ? `@${contact.username}` : null].filter(Boolean).join(" · "))),
        h("div.thread-controls", {}, h("label.switch-label", { for: handoffId }, aiOn, h("span", {}, "AI replies")), block)),
      headMsg, msg, messages, replyBox(c));
    layout.classList.add("thread-open");
  }

  function drawMessages(scrollToEnd) {
    const box = threadEls.messages;
    clear(box);
    if (hasOlder) box.append(h("li.older", {}, h("button.ghost", { type: "button", onclick: loadOlder }, "Load older messages")));
    if (!threadItems.length) box.append(h("li.muted.center", {}, "No messages yet."));
    for (const m of threadItems) box.append(bubble(m));
    if (scrollToEnd) { stick = true; box.scrollTop = box.scrollHeight; }
  }

  function bubble(m) {
    const out = m.direction === "out" || m.kind === "outbound";
    const msg = m.message || {};
    const body = h("div.bubble-body");
    if (m.kind === "reaction" && m.reaction) body.append(h("span.muted", {}, `reacted ${m.reaction.emoji || "(removed)"}`));
    else if (m.kind === "referral") body.append(h("span.muted", {}, "Opened the conversation from an ad or link"));
    if (msg.media) body.append(mediaEl(msg));
    if (msg.location) body.append(h("div", {}, `📍 ${msg.location.name || ""} ${msg.location.latitude}, ${msg.location.longitude}`));
    const text = msg.text || msg.caption || (m.kind === "postback" ? msg.payload : "");
    if (text) body.append(h("p.text", {}, text));
    if (!body.childNodes.length) body.append(h("span.muted", {}, `[${msg.type || m.kind}]`));
    const at = m.timestamp || m.received_at;
    const meta = h("div.bubble-meta", {}, h("time", { title: formatTime(at) }, shortTime(at)));
    if (m.edits && m.edits.length) meta.append(" · edited");
    if (out) {
      const d = m.delivery || (m.status && m.status.state) || "sent";
      meta.append(h(`span.tick.${d}`, { title: TICK_WORDS[d] || d, "aria-label": TICK_WORDS[d] || d }, TICKS[d] || ""));
      if (m.author && m.author.type === "assistant") meta.prepend("Assistant · ");
    }
    const li = h(`li.bubble.${out ? "out" : "in"}`, { dataset: { id: m.id || "" } }, body, meta);
    if (out && m.status && m.status.state === "failed" && m.status.error) li.append(h("p.conn-error.small", {}, m.status.error.title || "Not delivered"));
    return li;
  }

  function mediaEl(msg) {
    const media = msg.media;
    const type = msg.type;
    const name = media.file_name || (type === "image" ? "image" : "file");
    const holder = h("div.media");
    if (!media.url) { holder.append(h("span.muted", {}, `[${type}]`)); return holder; }
    const ref = mediaRef(media.url);
    const load = async () => {
      // With the key first (GET /orgs/c/media/{ref}); the signed link as it is otherwise.
      if (ref) {
        try {
          const u = await fetchBlobUrl(`/orgs/c/media/${encodeURIComponent(ref)}`);
          state.blobUrls.push(u);
          return u;
        } catch { /* fall through */ }
      }
      return media.url;
    };
    if (type === "image" || type === "sticker") {
      const img = h("img.media-img", { alt: msg.caption || name, onload: follow });
      const open = h("a.media-link", { href: "#", "aria-label": `Open image ${name}` }, img);
      load().then((u) => { img.src = u; open.href = u; open.target = "_blank"; open.rel = "noopener"; });
      holder.append(open);
    } else if (type === "audio") {
      const audio = h("audio", { controls: true, preload: "none", "aria-label": `Audio ${name}` });
      load().then((u) => { audio.src = u; });
      holder.append(audio);
    } else {
      const a = h("a.file", { href: "#", download: name }, `⬇ ${name}`);
      load().then((u) => { a.href = u; });
      holder.append(a);
    }
    return holder;
  }

  function replyBox(c) {
    const form = h("form.reply", { novalidate: true, "aria-label": "Reply box" });
    const text = field("Reply", "textarea", { name: "text", rows: 2, placeholder: "Write a reply…" });
    const fileId = `file-${c.id}`;
    const file = h("input.sr-only", { type: "file", id: fileId, name: "file" });
    const fileLabel = h("label.button.attach", { for: fileId }, "Attach");
    const fileName = h("span.muted.small");
    const send = h("button.primary", { type: "submit" }, "Send");
    const msg = messageLine();
    file.addEventListener("change", () => { fileName.textContent = file.files[0] ? file.files[0].name : ""; });
    text.input.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit(); });
    form.append(text.wrap, h("div.reply-actions", {}, file, fileLabel, fileName, h("span.grow"), send), msg);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const t = text.input.value.trim();
      const f = file.files[0];
      if (!t && !f) { setMessage(msg, "error", "Type a message or attach a file."); return; }
      send.disabled = true;
      try {
        const path = `/orgs/c/conversations/${encodeURIComponent(c.id)}/messages`;
        if (f) {
          const fd = new FormData();
          fd.append("id", commandId());
          fd.append("type", mediaType(f.type));
          if (t) fd.append("caption", t);
          fd.append("file", f, f.name);
          await api("POST", path, { body: fd });
        } else {
          await api("POST", path, { body: { id: commandId(), type: "text", text: t } });
        }
        text.input.value = "";
        file.value = "";
        fileName.textContent = "";
        setMessage(msg, "ok", "Sent to the gateway.");
        if (!state.source) setTimeout(() => loadThread(c, false), 800);
      } catch (e) {
        setMessage(msg, "error", `Not sent: ${e.message}`);
      } finally { send.disabled = false; }
    });
    return form;
  }

  loadList().then((available) => { if (available) connect(); });
  return () => {
    state.stopped = true;
    clearTimeout(state.timer);
    clearTimeout(state.retryTimer);
    if (state.source) state.source.close();
    for (const u of state.blobUrls) URL.revokeObjectURL(u);
  };
}

function mediaType(mime) {
  if (mime.startsWith("image/")) return "image";
  if (mime.startsWith("audio/")) return "audio";
  if (mime.startsWith("video/")) return "video";
  return "document";
}

/** The token of a gateway media URL (…/media/{token}), or null. */
function mediaRef(url) {
  try {
    const u = new URL(url, location.href);
    const m = u.pathname.match(/\/media\/([^/]+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  } catch { return null; }
}
