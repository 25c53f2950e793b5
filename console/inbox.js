// The live inbox: conversations (live over Server-Sent Events), the thread with history,
// media (fetched with the key from GET /orgs/c/media/{ref}), delivery ticks, the reply box
// with attachments (multipart: a "command" part and a "file" part) and, on WhatsApp outside
// the 24-hour window, the approved templates with their parameters; hand-off and block.
import { api, commandId, fetchFile } from "./api.js";
import { h, clear, field, messageLine, setMessage, formatTime, shortTime, confirmDialog, modal } from "./dom.js";
import { providerInfo } from "./providers.js";
import { contactName } from "./contacts.js";

const UNAVAILABLE = "The inbox is not available on this gateway: its conversation routes answer 404.";
const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };
const TICK_WORDS = { sent: "Sent", delivered: "Delivered", read: "Read", failed: "Not delivered" };
const DELIVERY_RANK = { sent: 1, delivered: 2, read: 3, failed: 4 };
const WINDOW_MS = 24 * 3600 * 1000;
// Why a message was not sent, in words (the failed outbound event's error title).
const REASONS = {
  handed_off: "Not sent: the contact is handed off (AI replies are off), so the assistant's message was held back.",
  outside_window: "Not sent: the 24-hour window is closed; only an approved template can be sent.",
  contact_blocked: "Not sent: the contact is blocked.",
  template_not_found: "Not sent: the business account has no template of that name.",
  template_language: "Not sent: the template is not in that language.",
  template_not_approved: "Not sent: the template is not approved.",
  template_parameters: "Not sent: the parameters do not match the template's placeholders.",
  upload_expired: "Not sent: the file was no longer kept by the gateway.",
  unsupported: "Not sent: this channel cannot send it.",
};
// What this tab sent, by command id (a template's event names no template).
const sentLabels = new Map();

export function render(main) {
  const state = { open: null, conversations: [], source: null, lastEventId: null, stopped: false,
    blobUrls: [], media: new Map(), mediaEls: new Map(), timer: null, retryTimer: null };
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
        h("span.conv-preview", {}, `${lm.direction === "out" ? (lm.author && lm.author.type === "assistant" ? "Assistant: " : "You: ") : ""}${lm.preview || ""}`)),
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
      if (ev.lastEventId) e.entry_id = ev.lastEventId;
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
  let historyCount = 0;
  let hasOlder = false;
  let threadEls = {};
  let stick = true;
  let autoTop = -1; // where the console itself last scrolled to (its own scroll events are not the reader's)
  const scrollEnd = (box) => { box.scrollTop = box.scrollHeight; autoTop = box.scrollTop; };
  const follow = () => { if (stick && threadEls.messages) scrollEnd(threadEls.messages); };

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
      historyCount = Number(headers.get("pagination-count") || 0);
      hasOlder = historyCount > data.length;
      drawMessages(true);
    } catch (e) {
      setMessage(threadEls.msg, "error", e.status === 404 ? UNAVAILABLE : `Could not load the history: ${e.message}`);
    }
  }

  async function loadOlder() {
    const oldest = threadItems.find((m) => m.entry_id);
    if (!oldest) return;
    try {
      const { data } = await api("GET", `/orgs/c/conversations/${encodeURIComponent(state.open.id)}/messages`,
        { query: { take: 30, before: oldest.entry_id } });
      const known = new Set(threadItems.map((m) => m.id));
      threadItems = data.filter((m) => !known.has(m.id)).reverse().concat(threadItems);
      hasOlder = data.length === 30 && threadItems.length < historyCount;
      const box = threadEls.messages;
      const before = box.scrollHeight;
      drawMessages(false);
      box.scrollTop = box.scrollHeight - before;
      autoTop = box.scrollTop;
    } catch (e) {
      setMessage(threadEls.msg, "error", `Could not load older messages: ${e.message}`);
    }
  }

  function onThreadEvent(e) {
    if (e.kind === "status" && e.status) {
      const target = threadItems.find((m) => m.message && m.message.external_id === e.status.message_external_id);
      if (target && (DELIVERY_RANK[e.status.state] || 0) > (DELIVERY_RANK[target.delivery] || 0)) {
        target.delivery = e.status.state;
        drawMessages(false);
      }
      return;
    }
    if (threadItems.some((m) => m.id === e.id)) return;
    if (e.kind === "outbound" && e.status && !e.delivery) e.delivery = e.status.state;
    threadItems.push(e);
    historyCount += 1;
    drawMessages(true);
    if (e.direction === "in" && e.kind === "message" && state.open.channel === "whatsapp" && e.timestamp) {
      // The customer wrote: the 24-hour window runs from the provider's time of it.
      const end = new Date(e.timestamp + WINDOW_MS).toISOString();
      if (!state.open.window_expires_at || end > state.open.window_expires_at) state.open.window_expires_at = end;
      if (threadEls.reply) threadEls.reply.update();
    }
    if (e.direction === "in") api("POST", `/orgs/c/conversations/${encodeURIComponent(e.conversation_id)}/read`).catch(() => {});
  }

  function drawThreadShell(c) {
    clear(thread);
    for (const u of state.blobUrls) URL.revokeObjectURL(u);
    state.blobUrls = [];
    state.media = new Map();
    state.mediaEls = new Map();
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
      if (Math.abs(messages.scrollTop - autoTop) <= 1) return;
      stick = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    });
    stick = true;
    new ResizeObserver(follow).observe(messages);
    const msg = messageLine();
    if (threadEls.reply) threadEls.reply.stop();
    const reply = replyBox(c);
    threadEls = { messages, msg, reply };
    thread.append(
      h("header.thread-head", {}, back,
        h("img.provider-icon", { src: info.icon, alt: info.name, width: 32, height: 32 }),
        h("div.grow", {}, h("strong.thread-name", {}, contactName(contact)),
          h("div.muted.small", {}, [info.name, contact.phone, contact.username ? `@${contact.username}` : null].filter(Boolean).join(" · "))),
        h("div.thread-controls", {}, h("label.switch-label", { for: handoffId }, aiOn, h("span", {}, "AI replies")), block)),
      headMsg, msg, messages, reply.el);
    layout.classList.add("thread-open");
  }

  function drawMessages(scrollToEnd) {
    const box = threadEls.messages;
    clear(box);
    if (hasOlder) box.append(h("li.older", {}, h("button.ghost", { type: "button", onclick: loadOlder }, "Load older messages")));
    if (!threadItems.length) box.append(h("li.muted.center", {}, "No messages yet."));
    for (const m of threadItems) box.append(bubble(m));
    if (scrollToEnd) { stick = true; scrollEnd(box); }
  }

  function bubble(m) {
    const out = m.direction === "out" || m.kind === "outbound";
    const msg = m.message || {};
    const body = h("div.bubble-body");
    if (m.kind === "reaction" && m.reaction) body.append(h("span.muted", {}, `reacted ${m.reaction.emoji || "(removed)"}`));
    else if (m.kind === "referral") body.append(h("span.muted", {}, "Opened the conversation from an ad or link"));
    if (msg.media) {
      // Kept across redraws: a loaded image keeps its size, so the thread does not jump.
      const key = m.id || msg.media.ref || msg.media.url;
      let el = state.mediaEls.get(key);
      if (!el) { el = mediaEl(msg); state.mediaEls.set(key, el); }
      body.append(el);
    }
    if (msg.location) body.append(h("div", {}, `📍 ${msg.location.name || ""} ${msg.location.latitude}, ${msg.location.longitude}`));
    const text = msg.text || msg.caption || (m.kind === "postback" ? msg.payload : "")
      || (m.command_id && sentLabels.get(m.command_id))
      || (msg.type === "template" ? "Template message" : "");
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
    if (out && m.status && m.status.state === "failed" && m.status.error) {
      const why = m.status.error.title || "";
      li.append(h("p.conn-error.small", {}, REASONS[why] || `Not delivered${why ? `: ${why}` : ""}`));
    }
    return li;
  }

  function mediaEl(msg) {
    const media = msg.media;
    const type = msg.type;
    const name = media.file_name || ({ image: "image", sticker: "sticker", audio: "audio", video: "video" }[type] || "file");
    const holder = h("div.media");
    // An outbound file sent as an upload names no URL the browser can load (the gateway's
    // placeholder is on the reserved .invalid domain).
    const url = media.url && !/^https?:\/\/[^/?#]*\.invalid([/?#:]|$)/i.test(media.url) ? media.url : "";
    if (!media.ref && !url) {
      holder.append(h("span.file", { title: "Sent as a file" }, `File: ${media.file_name || type}`));
      return holder;
    }
    // With the key (GET /orgs/c/media/{ref}, at any time); the URL as it is when there is no
    // ref. Fetched once per thread: a redraw reuses the object URL.
    const load = () => {
      if (!media.ref) return Promise.resolve({ url, name: "" });
      let p = state.media.get(media.ref);
      if (!p) {
        p = fetchFile(`/orgs/c/media/${encodeURIComponent(media.ref)}`).then((f) => { state.blobUrls.push(f.url); return f; });
        p.catch(() => state.media.delete(media.ref));
        state.media.set(media.ref, p);
      }
      return p;
    };
    const failed = (e) => { clear(holder); holder.append(h("p.conn-error.small", {}, `Could not load the ${type === "image" ? "image" : "file"}: ${e.message}`)); };
    if (type === "image" || type === "sticker") {
      const img = h("img.media-img", { alt: msg.caption || name, onload: follow });
      const open = h("button.media-open", { type: "button", "aria-label": `Open image ${name}` }, img);
      open.addEventListener("click", () => load().then((f) => openViewer(f.url, msg.caption, media.file_name || f.name || name), failed));
      load().then((f) => { img.src = f.url; }, failed);
      holder.append(open);
    } else if (type === "audio" || type === "video") {
      const player = h(type, { controls: true, preload: "metadata", "aria-label": `${type === "audio" ? "Audio" : "Video"} ${name}` });
      load().then((f) => { player.src = f.url; }, failed);
      holder.append(player);
    } else {
      const a = h("a.file", { href: "#", download: name }, `⬇ ${name}`);
      load().then((f) => {
        a.href = f.url;
        if (!media.file_name && f.name) { a.download = f.name; a.textContent = `⬇ ${f.name}`; }
      }, failed);
      holder.append(a);
    }
    return holder;
  }

  function openViewer(url, caption, name) {
    const { body } = modal("Image", { wide: true });
    body.append(h("img.viewer-img", { src: url, alt: caption || name }),
      caption ? h("p", {}, caption) : null,
      h("div.actions", {}, h("a.button", { href: url, download: name }, `Download ${name}`)));
  }

  /** The reply box: free-form text and files, or (WhatsApp) a template. {el, update, stop}. */
  function replyBox(c) {
    const isWa = c.channel === "whatsapp";
    const box = h("div.reply", { role: "group", "aria-label": "Reply box" });
    const note = h("p.window-note.small", { hidden: true });
    const toggle = h("button.ghost.small", { type: "button", hidden: true });
    const free = freeForm(c);
    const tpl = isWa ? templateForm(c) : null;
    let mode = "free";
    let wasOpen = null;
    let timer = null;
    const windowOpen = () => !isWa || (c.window_expires_at && Date.parse(c.window_expires_at) > Date.now());
    function update() {
      clearTimeout(timer);
      const open = windowOpen();
      if (!open) mode = "template";
      else if (wasOpen === false) mode = "free"; // the customer wrote again
      wasOpen = open;
      if (isWa) {
        note.hidden = false;
        note.textContent = open
          ? `Free-form replies are possible until ${formatTime(c.window_expires_at)}, the end of the 24-hour window.`
          : c.window_expires_at
            ? `The 24-hour window closed ${formatTime(c.window_expires_at)}: WhatsApp accepts only an approved template until the customer writes again.`
            : "No message from the customer in the last 24 hours (the 24-hour window is closed): WhatsApp accepts only an approved template.";
        note.className = `window-note small ${open ? "muted" : "closed"}`;
        toggle.hidden = !open;
        toggle.textContent = mode === "template" ? "Write a message" : "Send a template";
        if (open) timer = setTimeout(update, Math.min(Date.parse(c.window_expires_at) - Date.now() + 50, 2 ** 31 - 1));
      }
      free.el.hidden = mode !== "free";
      if (tpl) {
        tpl.el.hidden = mode !== "template";
        if (mode === "template") tpl.show();
      }
    }
    toggle.addEventListener("click", () => { mode = mode === "template" ? "free" : "template"; update(); });
    box.append(h("div.reply-head", {}, note, toggle), free.el);
    if (tpl) box.append(tpl.el);
    update();
    return { el: box, update, stop: () => clearTimeout(timer) };
  }

  const sendCommand = (c, body) => api("POST", `/orgs/c/conversations/${encodeURIComponent(c.id)}/messages`, { body });
  const refreshLater = (c) => { if (!state.source) setTimeout(() => loadThread(c, false), 800); };

  function freeForm(c) {
    const form = h("form.reply-free", { novalidate: true, "aria-label": "Write a reply" });
    const text = field("Reply", "textarea", { name: "text", rows: 2, placeholder: "Write a reply…" });
    const fileId = `file-${c.id}`;
    const file = h("input.sr-only", { type: "file", id: fileId, name: "file" });
    const fileLabel = h("label.button.attach", { for: fileId }, "Attach");
    const fileName = h("span.muted.small.file-name");
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
        const id = commandId();
        if (f) {
          // A "command" part with the JSON command and a "file" part (docs/api.md "Sending a file").
          const cmd = { id, type: mediaType(f.type), media: { file_name: f.name } };
          if (t) cmd.media.caption = t;
          const fd = new FormData();
          fd.append("command", new Blob([JSON.stringify(cmd)], { type: "application/json" }), "command.json");
          fd.append("file", f, f.name);
          await sendCommand(c, fd);
        } else {
          await sendCommand(c, { id, type: "text", text: t });
        }
        text.input.value = "";
        file.value = "";
        fileName.textContent = "";
        setMessage(msg, "ok", "Sent to the gateway.");
        refreshLater(c);
      } catch (e) {
        setMessage(msg, "error", `Not sent: ${e.message}`);
      } finally { send.disabled = false; }
    });
    return { el: form };
  }

  /** WhatsApp templates: the connection's approved ones, their parameters, a preview. */
  function templateForm(c) {
    const form = h("form.reply-template", { novalidate: true, "aria-label": "Send a template", hidden: true });
    const pick = field("Template", "select", { name: "template" });
    const params = h("div.template-params");
    const preview = h("p.template-preview", { "aria-live": "polite" });
    const send = h("button.primary", { type: "submit" }, "Send template");
    const msg = messageLine();
    form.append(pick.wrap, params, preview, h("div.reply-actions", {}, h("span.grow"), send), msg);
    let templates = null;
    let loading = null;
    let inputs = [];
    const chosen = () => templates && templates[Number(pick.input.value)];

    async function show() {
      if (templates || loading) return;
      pick.input.disabled = true;
      loading = api("GET", `/orgs/c/connections/${encodeURIComponent(c.connection_id)}/templates`, { query: { take: 100 } });
      try {
        const { data } = await loading;
        templates = data.filter((t) => t.status === "APPROVED");
        clear(pick.input);
        pick.input.append(h("option", { value: "" }, templates.length ? "Choose a template…" : "No approved templates"));
        templates.forEach((t, i) => pick.input.append(h("option", { value: String(i) }, `${t.name} (${t.language})`)));
        setMessage(msg, "error", "");
      } catch (e) {
        setMessage(msg, "error", `Could not load the templates: ${e.message}`);
      } finally { loading = null; pick.input.disabled = false; }
    }

    function drawParams() {
      clear(params);
      inputs = [];
      const t = chosen();
      if (!t) { preview.textContent = ""; return; }
      for (const p of templateParams(t)) {
        const f = field(p.label, "input", { type: p.kind === "media" ? "url" : "text", name: p.label, autocomplete: "off",
          placeholder: p.kind === "media" ? "https://…" : "" });
        f.input.addEventListener("input", () => { setMessage(msg, "error", ""); drawPreview(); });
        inputs.push({ ...p, input: f.input });
        params.append(f.wrap);
      }
      drawPreview();
    }

    function drawPreview() {
      const t = chosen();
      if (!t) return;
      const values = (component) => Object.fromEntries(inputs.filter((p) => p.component === component && p.key)
        .map((p) => [p.key, p.input.value.trim()]));
      const fill = (text, vals) => text.replace(/\{\{\s*([A-Za-z0-9_]+)\s*\}\}/g, (m, k) => vals[k] || m);
      const parts = [];
      for (const comp of t.components || []) {
        const kind = String(comp.type || "").toUpperCase();
        if (kind === "HEADER" && comp.text) parts.push(fill(comp.text, values("header")));
        if (kind === "BODY" && comp.text) parts.push(fill(comp.text, values("body")));
        if (kind === "FOOTER" && comp.text) parts.push(comp.text);
      }
      preview.textContent = parts.join("\n");
    }

    pick.input.addEventListener("change", drawParams);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const t = chosen();
      if (!t) { setMessage(msg, "error", "Choose a template."); return; }
      const missing = inputs.find((p) => !p.input.value.trim());
      if (missing) { setMessage(msg, "error", `Fill in ${missing.label}.`); missing.input.focus(); return; }
      const id = commandId();
      const template = { name: t.name, language: t.language };
      const components = templateComponents(inputs);
      if (components.length) template.components = components;
      send.disabled = true;
      try {
        sentLabels.set(id, `Template ${t.name}: ${preview.textContent}`);
        await sendCommand(c, { id, type: "template", template });
        setMessage(msg, "ok", "Sent to the gateway.");
        pick.input.value = "";
        drawParams();
        refreshLater(c);
      } catch (e) {
        sentLabels.delete(id);
        setMessage(msg, "error", `Not sent: ${e.message}`);
      } finally { send.disabled = false; }
    });
    return { el: form, show };
  }

  loadList().then((available) => { if (available) connect(); });
  return () => {
    state.stopped = true;
    clearTimeout(state.timer);
    if (threadEls.reply) threadEls.reply.stop();
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

/** The distinct placeholders of a template text ({{1}}, {{name}}), in order. */
function placeholders(text) {
  return [...new Set([...String(text || "").matchAll(/\{\{\s*([A-Za-z0-9_]+)\s*\}\}/g)].map((m) => m[1]))];
}

/**
 * The parameters a template needs: [{component, key?, index?, kind, label}] for its header
 * (text placeholders, or one media link), body placeholders and URL or copy-code buttons.
 */
function templateParams(t) {
  const out = [];
  for (const comp of t.components || []) {
    const kind = String(comp.type || "").toUpperCase();
    if (kind === "HEADER") {
      const format = String(comp.format || "TEXT").toUpperCase();
      if (["IMAGE", "VIDEO", "DOCUMENT"].includes(format)) {
        out.push({ component: "header", kind: "media", format: format.toLowerCase(), label: `Header ${format.toLowerCase()} URL` });
      } else {
        for (const k of placeholders(comp.text)) out.push({ component: "header", key: k, kind: "text", label: `Header {{${k}}}` });
      }
    } else if (kind === "BODY") {
      for (const k of placeholders(comp.text)) out.push({ component: "body", key: k, kind: "text", label: `Body {{${k}}}` });
    } else if (kind === "BUTTONS") {
      (comp.buttons || []).forEach((b, i) => {
        const bt = String(b.type || "").toUpperCase();
        if (bt === "URL" && placeholders(b.url).length) {
          out.push({ component: "button", index: i, kind: "url", label: `Button “${b.text || i + 1}” link {{1}}` });
        } else if (bt === "COPY_CODE") {
          out.push({ component: "button", index: i, kind: "coupon", label: `Button “${b.text || i + 1}” code` });
        }
      });
    }
  }
  return out;
}

/** The Cloud API components for the filled-in parameters. */
function templateComponents(inputs) {
  const text = (p) => (/^\d+$/.test(p.key) ? { type: "text", text: p.input.value.trim() }
    : { type: "text", parameter_name: p.key, text: p.input.value.trim() });
  const out = [];
  for (const component of ["header", "body"]) {
    const ps = inputs.filter((p) => p.component === component);
    if (!ps.length) continue;
    out.push({ type: component, parameters: ps.map((p) => (p.kind === "media"
      ? { type: p.format, [p.format]: { link: p.input.value.trim() } } : text(p))) });
  }
  for (const p of inputs.filter((q) => q.component === "button")) {
    out.push(p.kind === "url"
      ? { type: "button", sub_type: "url", index: String(p.index), parameters: [{ type: "text", text: p.input.value.trim() }] }
      : { type: "button", sub_type: "copy_code", index: String(p.index), parameters: [{ type: "coupon_code", coupon_code: p.input.value.trim() }] });
  }
  return out;
}
