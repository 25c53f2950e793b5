// Connections: the list, Add integration (picker + provider form), Manage connection,
// Disconnect.
import { api, listAll } from "./api.js";
import { h, clear, field, messageLine, setMessage, modal, confirmDialog, formatTime } from "./dom.js";
import { PROVIDERS, COMING_SOON, providerInfo, metaSteps } from "./providers.js";

let listEl;
let countEl;
let pageError;

export function render(main) {
  countEl = h("span.badge.count", { "aria-label": "connections", title: "Connections" }, "…");
  const add = h("button.primary", { type: "button", onclick: openPicker }, "Add integration");
  pageError = messageLine();
  listEl = h("ul.cards", { "aria-label": "Connections" });
  main.append(
    h("div.page-head", {}, h("h1", {}, "Connections ", countEl), add),
    h("p.muted.lead", {}, "Everything you have connected: test, rename, update credentials or disconnect."),
    pageError, listEl,
  );
  refresh();
}

async function refresh() {
  try {
    const items = await listAll("/orgs/c/connections");
    countEl.textContent = String(items.length);
    setMessage(pageError, "error", "");
    clear(listEl);
    if (!items.length) {
      listEl.append(h("li.empty", {}, "No connections yet. Choose Add integration to connect a channel."));
    }
    for (const c of items) listEl.append(row(c));
  } catch (e) {
    setMessage(pageError, "error", `Could not load the connections: ${e.message}`);
  }
}

function statusPill(c) {
  const active = c.status === "active";
  return h(`span.pill.${active ? "ok" : "bad"}`, { dataset: { status: c.status } }, active ? "Active" : "Inactive");
}

function row(c) {
  const info = providerInfo(c.provider);
  const rowMsg = messageLine();
  const li = h("li.card.conn", { dataset: { id: c.id } },
    h("img.provider-icon", { src: info.icon, alt: info.name, width: 36, height: 36 }),
    h("div.conn-main", {},
      h("div.conn-title", {}, h("span.conn-name", {}, c.name || info.name), statusPill(c)),
      h("div.conn-meta", {},
        h("span.provider-name", {}, info.name),
        c.account_hint ? h("span.account-hint", {}, c.account_hint) : null,
        c.last_checked_at ? h("span.muted", {}, `checked ${formatTime(c.last_checked_at)}`) : null),
      c.status !== "active" && c.error
        ? h("p.conn-error", {}, c.error.message || c.error.code)
        : null,
      rowMsg),
    h("div.conn-actions", {},
      h("button", { type: "button", onclick: () => openManage(c), "aria-label": `Edit ${c.name}` }, "Edit"),
      h("button.danger-ghost", { type: "button", onclick: () => disconnect(c, rowMsg), "aria-label": `Disconnect ${c.name}` }, "Disconnect")));
  return li;
}

// ---- Add integration: the picker

function openPicker() {
  const { body, close } = modal("Add integration", { wide: true });
  const search = field("Search services", "input", { type: "search", placeholder: "WhatsApp, Telegram…", autocomplete: "off" });
  const list = h("ul.picker", { "aria-label": "Services" });
  const soon = h("ul.picker.soon", { "aria-label": "Coming soon" });
  const empty = h("p.muted", { hidden: true }, "No service matches.");
  const rows = [];
  for (const [id, p] of Object.entries(PROVIDERS)) {
    const btn = h("button.picker-row", { type: "button", dataset: { provider: id },
      onclick: () => { close(); openCreate(id); } },
    h("img.provider-icon", { src: p.icon, alt: "", width: 32, height: 32 }),
    h("span.picker-text", {}, h("strong", {}, p.name), h("span.muted", {}, p.blurb)),
    h("span.chev", { "aria-hidden": "true" }, "›"));
    const li = h("li", {}, btn);
    rows.push({ li, text: `${p.name} ${p.blurb}`.toLowerCase() });
    list.append(li);
  }
  for (const s of COMING_SOON) {
    const li = h("li", {}, h("div.picker-row.disabled", { "aria-disabled": "true" },
      h("img.provider-icon", { src: "icons/action.svg", alt: "", width: 32, height: 32 }),
      h("span.picker-text", {}, h("strong", {}, s.name), h("span.muted", {}, s.blurb)),
      h("span.pill.soon", {}, "Coming soon")));
    rows.push({ li, text: `${s.name} ${s.blurb}`.toLowerCase() });
    soon.append(li);
  }
  const soonHead = h("h3.section", {}, "Actions");
  search.input.addEventListener("input", () => {
    const q = search.input.value.trim().toLowerCase();
    let shown = 0;
    for (const r of rows) {
      r.li.hidden = q !== "" && !r.text.includes(q);
      if (!r.li.hidden) shown += 1;
    }
    soonHead.hidden = [...soon.children].every((li) => li.hidden);
    empty.hidden = shown > 0;
  });
  body.append(search.wrap, h("h3.section", {}, "Channels"), list, soonHead, soon, empty);
  search.input.focus();
}

// ---- The provider's form (create)

function credentialFields(info, { editing = false, masked = {} } = {}) {
  return info.fields.map((f) => {
    const attrs = { type: f.secret ? "password" : "text", name: f.key, autocomplete: "off", spellcheck: "false" };
    if (editing && masked[f.key]) attrs.placeholder = `${masked[f.key]} (unchanged)`;
    const fl = field(f.label, "input", attrs, f.hint);
    fl.key = f.key;
    fl.optional = f.optional;
    return fl;
  });
}

function readCredentials(fields, { onlyFilled = false } = {}) {
  const out = {};
  for (const f of fields) {
    const v = f.input.value.trim();
    if (v || (!onlyFilled && !f.optional)) out[f.key] = v;
  }
  return out;
}

function testResultText(r) {
  if (r.ok) return `Connection works${r.account_hint ? `: ${r.account_hint}` : ""}.`;
  return `Test failed: ${r.error || "the provider refused the credentials"}.`;
}

function openCreate(provider) {
  const info = providerInfo(provider);
  const { body, close } = modal(`Connect ${info.name}`, { wide: true });
  const form = h("form.form", { novalidate: true });
  const name = field("Connection name", "input", { type: "text", name: "name", maxlength: 1024, placeholder: info.name },
    "Shown in this console; defaults to the account's name.");
  const creds = credentialFields(info);
  const testMsg = messageLine("status");
  const formMsg = messageLine();
  const testBtn = h("button", { type: "button" }, "Test connection");
  const createBtn = h("button.primary", { type: "submit" }, "Create connection");
  form.append(h("div.form-provider", {}, h("img.provider-icon", { src: info.icon, alt: "", width: 40, height: 40 }),
    h("p.muted", {}, info.blurb)), name.wrap, ...creds.map((c) => c.wrap));
  if (info.meta) form.append(setupBlock(info, null));
  form.append(h("div.actions", {}, testBtn, createBtn), testMsg, formMsg);
  body.append(form);
  name.input.focus();

  testBtn.addEventListener("click", async () => {
    testBtn.disabled = true;
    setMessage(testMsg, "status", "Testing…");
    try {
      const { data } = await api("POST", "/orgs/c/connections/test", { body: { provider, credentials: readCredentials(creds) } });
      setMessage(testMsg, data.ok ? "ok" : "error", testResultText(data));
    } catch (e) {
      setMessage(testMsg, "error", `Test failed: ${e.message}`);
    } finally {
      testBtn.disabled = false;
    }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    createBtn.disabled = true;
    setMessage(formMsg, "error", "");
    const req = { provider, credentials: readCredentials(creds) };
    if (name.input.value.trim()) req.name = name.input.value.trim();
    try {
      const { data } = await api("POST", "/orgs/c/connections", { body: req });
      await refresh();
      if (info.meta) {
        // What to paste in the Meta app needs the new connection's webhook URL.
        clear(body);
        body.append(h("p.msg.ok", { role: "status" }, `${data.name} is connected.`), setupBlock(info, data),
          h("div.actions", {}, h("button.primary", { type: "button", onclick: close }, "Done")));
      } else {
        close();
      }
    } catch (e) {
      setMessage(formMsg, "error", `Could not create the connection: ${e.message}`);
    } finally {
      createBtn.disabled = false;
    }
  });
}

function setupBlock(info, conn) {
  const steps = h("ol.steps", {}, metaSteps(info).map((s) => h("li", {}, s)));
  const box = h("section.setup", { "aria-label": "Meta app setup" }, h("h3", {}, "Set up the webhook in your Meta app"), steps);
  if (conn && conn.webhook_url) {
    const url = h("input", { type: "text", readonly: true, value: conn.webhook_url, id: `wh-${conn.id}`, "aria-label": "Callback URL" });
    const copy = h("button", { type: "button" }, "Copy");
    copy.addEventListener("click", async () => {
      url.select();
      try { await navigator.clipboard.writeText(conn.webhook_url); copy.textContent = "Copied"; } catch { copy.textContent = "Select and copy"; }
    });
    box.append(h("div.field", {}, h("label", { for: url.id }, "Callback URL"), h("div.inline", {}, url, copy)));
  } else {
    box.append(h("p.hint", {}, "The Callback URL appears here once the connection is created."));
  }
  return box;
}

// ---- Manage connection

function openManage(c) {
  const info = providerInfo(c.provider);
  const { body, close } = modal("Manage connection", { wide: true });
  let current = c;
  const head = h("div.form-provider", {});
  const renderHead = () => {
    clear(head);
    append(head, [h("img.provider-icon", { src: info.icon, alt: info.name, width: 40, height: 40 }),
      h("div", {}, h("div.conn-title", {}, h("strong", {}, current.name), statusPill(current)),
        h("div.muted", {}, [info.name, current.account_hint].filter(Boolean).join(" · ")),
        current.status !== "active" && current.error ? h("p.conn-error", {}, current.error.message || current.error.code) : null)]);
  };
  renderHead();

  // Rename
  const nameForm = h("form.form.section-form", { novalidate: true });
  const name = field("Connection name", "input", { type: "text", name: "name", maxlength: 1024, value: c.name });
  const nameMsg = messageLine();
  const saveName = h("button", { type: "submit" }, "Save name");
  nameForm.append(name.wrap, h("div.actions", {}, saveName), nameMsg);
  nameForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    saveName.disabled = true;
    try {
      const { data } = await api("PATCH", `/orgs/c/connections/${encodeURIComponent(c.id)}`, { body: { name: name.input.value.trim() } });
      current = data;
      renderHead();
      setMessage(nameMsg, "ok", "Name saved.");
      refresh();
    } catch (e) {
      setMessage(nameMsg, "error", `Could not rename: ${e.message}`);
    } finally { saveName.disabled = false; }
  });

  // Test
  const testMsg = messageLine("status");
  const testBtn = h("button", { type: "button" }, "Test connection");
  testBtn.addEventListener("click", async () => {
    testBtn.disabled = true;
    setMessage(testMsg, "status", "Testing…");
    try {
      const { data } = await api("POST", `/orgs/c/connections/${encodeURIComponent(c.id)}/test`);
      setMessage(testMsg, data.ok ? "ok" : "error", testResultText(data));
      const fresh = await api("GET", `/orgs/c/connections/${encodeURIComponent(c.id)}`);
      current = fresh.data;
      renderHead();
      refresh();
    } catch (e) {
      setMessage(testMsg, "error", `Test failed: ${e.message}`);
    } finally { testBtn.disabled = false; }
  });
  const testRow = h("div.section-form", {}, h("h3", {}, "Test"), h("p.muted", {}, "Ask the provider whether the saved credentials still work."),
    h("div.actions", {}, testBtn), testMsg);

  // Update credentials (or Reconnect for sign-in connections)
  const credForm = h("form.form.section-form", { novalidate: true });
  const creds = credentialFields(info, { editing: true, masked: c.credentials || {} });
  const credMsg = messageLine();
  const saveCreds = h("button", { type: "submit" }, "Update credentials");
  credForm.append(h("h3", {}, "Credentials"), h("p.muted", {}, "Leave a field empty to keep its current value."), ...creds.map((f) => f.wrap), h("div.actions", {}, saveCreds), credMsg);
  credForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const credentials = readCredentials(creds, { onlyFilled: true });
    if (!Object.keys(credentials).length) { setMessage(credMsg, "error", "Type at least one new value."); return; }
    saveCreds.disabled = true;
    try {
      const { data } = await api("PATCH", `/orgs/c/connections/${encodeURIComponent(c.id)}`, { body: { credentials } });
      current = data;
      renderHead();
      for (const f of creds) f.input.value = "";
      setMessage(credMsg, "ok", "Credentials updated.");
      refresh();
    } catch (e) {
      setMessage(credMsg, "error", `Could not update the credentials: ${e.message}`);
    } finally { saveCreds.disabled = false; }
  });

  body.append(head, nameForm, testRow);
  if (c.kind === "action" && (c.provider === "oauth2" || c.provider === "intercom")) body.append(reconnectBlock(c));
  else if (info.fields.length) body.append(credForm);
  if (info.meta) body.append(setupBlock(info, c));
  body.append(h("div.actions", {}, h("button.ghost", { type: "button", onclick: close }, "Close")));
}

function reconnectBlock(c) {
  const msg = messageLine();
  const btn = h("button.primary", { type: "button" }, "Reconnect");
  btn.addEventListener("click", async () => {
    try {
      const { data } = await api("POST", `/orgs/c/connections/${encodeURIComponent(c.id)}/authorize`);
      if (data && data.authorize_url && /^https?:\/\//.test(data.authorize_url)) location.assign(data.authorize_url);
      else setMessage(msg, "error", "The gateway gave no sign-in address.");
    } catch (e) {
      setMessage(msg, "error", `Could not start the sign-in: ${e.message}`);
    }
  });
  return h("div.section-form", {}, h("h3", {}, "Sign-in"), h("p.muted", {}, "Sign in to the service again when its tokens expired or were revoked."), h("div.actions", {}, btn), msg);
}

// ---- Disconnect

async function disconnect(c, rowMsg) {
  let losing = [];
  try {
    const assistants = await listAll("/orgs/c/assistants");
    for (const a of assistants) {
      const bindings = await listAll(`/orgs/c/assistants/${encodeURIComponent(a.id)}/channels`);
      if (bindings.some((b) => b.connection_id === c.id)) losing.push(a.name);
    }
  } catch (e) {
    setMessage(rowMsg, "error", `Could not check which assistants use it: ${e.message}`);
    return;
  }
  const lines = [h("p", {}, "Disconnect ", h("strong", {}, c.name), "? Its credentials are deleted and its webhook is removed.")];
  if (losing.length) {
    lines.push(h("p", {}, "These assistants lose a channel:"), h("ul.losing", {}, losing.map((n) => h("li", {}, n))));
  } else {
    lines.push(h("p.muted", {}, "No assistant uses this connection."));
  }
  const ok = await confirmDialog("Disconnect", lines, "Disconnect");
  if (!ok) return;
  try {
    await api("DELETE", `/orgs/c/connections/${encodeURIComponent(c.id)}`);
    refresh();
  } catch (e) {
    setMessage(rowMsg, "error", `Could not disconnect: ${e.message}`);
  }
}

function append(el, children) {
  for (const x of children) if (x) el.append(x);
}
