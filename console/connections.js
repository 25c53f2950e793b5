// Connections: the list, Add integration (picker + provider form), Manage connection,
// Disconnect; the sign-ins that leave the page and come back to it: OAuth (Connect and
// Reconnect, back through the gateway's /oauth/callback) and Continue with Facebook (back
// here with Facebook's code, which POST /orgs/c/connections/meta exchanges).
import { api, listAll } from "./api.js";
import { h, clear, field, messageLine, setMessage, modal, confirmDialog, formatTime, nextId } from "./dom.js";
import { PROVIDERS, providerInfo, metaSteps } from "./providers.js";

let listEl;
let countEl;
let pageError;
let banner;

const SIGNIN = "switchboard.signin"; // the OAuth connection being signed in (id and name)
const META = "switchboard.meta"; // the Facebook sign-in under way (state, provider, redirect_uri)
const PENDING_MS = 30 * 60 * 1000;
let metaReturn = null; // what Facebook's redirect brought (code or error), until it is handled

export function render(main) {
  countEl = h("span.badge.count", { "aria-label": "connections", title: "Connections" }, "…");
  const add = h("button.primary", { type: "button", onclick: openPicker }, "Add integration");
  pageError = messageLine();
  banner = h("div.banner", { "aria-live": "polite" });
  listEl = h("ul.cards", { "aria-label": "Connections" });
  main.append(
    h("div.page-head", {}, h("h1", {}, "Connections ", countEl), add),
    h("p.muted.lead", {}, "Everything you have connected: test, rename, update credentials or disconnect."),
    banner, pageError, listEl,
  );
  refresh();
  signinReturned();
  if (metaReturn) metaReturned();
}

/** The page's banner: how a sign-in that left the page went (with a Dismiss button). */
function showBanner(kind, text, extra) {
  clear(banner);
  const dismiss = h("button.ghost.small-btn", { type: "button", onclick: () => clear(banner) }, "Dismiss");
  banner.append(h(`div.banner-box.${kind}`, {}, h(`p.msg.${kind}`, { role: kind === "error" ? "alert" : "status" }, text),
    extra || "", kind === "status" ? "" : dismiss));
}

function takePending(name) {
  const raw = sessionStorage.getItem(name);
  sessionStorage.removeItem(name);
  try {
    const v = JSON.parse(raw);
    return v && Date.now() - v.at < PENDING_MS ? v : null;
  } catch { return null; }
}

/** Back from an OAuth sign-in (the gateway's callback sends the browser here): how it went. */
async function signinReturned() {
  const pending = takePending(SIGNIN);
  if (!pending) return;
  try {
    const path = `/orgs/c/connections/${encodeURIComponent(pending.id)}`;
    const { data } = await api("GET", path);
    if (data.status !== "active") {
      showBanner("error", `${data.name} is not connected: ${data.error ? data.error.message || data.error.code : "the sign-in was not completed"}.`);
      return;
    }
    // A first test with the new token: it works, and the service names the account.
    const { data: t } = await api("POST", `${path}/test`);
    if (t.ok) showBanner("ok", `${data.name} is connected${t.account_hint ? ` (${t.account_hint})` : ""}.`);
    else showBanner("error", `${data.name} is signed in, but its test failed: ${t.error || "the service refused the token"}.`);
    refresh();
  } catch (e) {
    showBanner("error", `Could not check the sign-in: ${e.message}`);
  }
}

/**
 * Called once at page load: when Facebook's dialog sent the browser back here with
 * ?code&state (or ?error…), keeps them for the Connections page and takes them out of the
 * address bar at once.
 */
export function captureReturn() {
  const q = new URLSearchParams(location.search);
  if (!q.has("state") || !(q.has("code") || q.has("error") || q.has("error_code"))) return false;
  metaReturn = {
    code: q.get("code"), state: q.get("state"),
    error: q.get("error_message") || q.get("error_description") || q.get("error_reason") || q.get("error"),
    errorCode: q.get("error_code") || q.get("error"),
  };
  history.replaceState(null, "", `${location.pathname}#/connections`);
  return true;
}

async function metaReturned() {
  const back = metaReturn;
  metaReturn = null;
  const pending = takePending(META);
  if (!pending || pending.state !== back.state) {
    showBanner("error", "Facebook sign-in failed: this answer does not belong to a sign-in started here. Start again with Continue with Facebook.");
    return;
  }
  const who = providerInfo(pending.provider).name;
  if (!back.code) {
    showBanner("error", `Facebook sign-in failed: ${back.error || "no code was given"}${back.errorCode && back.errorCode !== back.error ? ` (code ${back.errorCode})` : ""}.`);
    return;
  }
  showBanner("status", `Connecting ${who} with Facebook…`);
  try {
    const { data } = await api("POST", "/orgs/c/connections/meta", { body: { code: back.code, redirect_uri: pending.redirect_uri } });
    const made = Array.isArray(data) ? data : (data && data.connections) || [];
    await refresh();
    if (!made.length) {
      showBanner("error", "Facebook sign-in worked, but the account reaches no business number, Page or Instagram account to connect.");
      return;
    }
    showBanner("ok", `Connected with Facebook: ${made.length} connection${made.length > 1 ? "s" : ""} created.`,
      h("ul.created", { "aria-label": "Connections created" }, made.map((c) => h("li", {},
        h("img.provider-icon", { src: providerInfo(c.provider).icon, alt: "", width: 20, height: 20 }),
        h("strong", {}, c.name || providerInfo(c.provider).name), " ",
        h("span.muted", {}, [providerInfo(c.provider).name, c.account_hint].filter(Boolean).join(" · "))))));
  } catch (e) {
    const d = e.detail || {};
    const metaCode = d.meta_code || d.provider_code || (d.meta && d.meta.code);
    showBanner("error", `Facebook sign-in failed: ${e.message}${e.code ? ` (${e.code}${metaCode ? `, Meta code ${metaCode}` : ""})` : ""}`);
  }
}

let metaConfig = null;
/** Facebook sign-in's public settings ({app_id, config_id, dialog_url}), or null when not configured. */
function metaSignin() {
  if (!metaConfig) {
    metaConfig = fetch("config.json", { cache: "no-store", credentials: "omit" })
      .then((r) => (r.ok ? r.json() : {}))
      .then((c) => (c && c.meta_signin && c.meta_signin.app_id && c.meta_signin.config_id && /^https?:\/\//.test(c.meta_signin.dialog_url) ? c.meta_signin : null))
      .catch(() => null);
  }
  return metaConfig;
}

function randomState() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Opens Facebook Login for Business in this tab; it comes back to /console/ with ?code&state. */
function continueWithFacebook(provider, conf) {
  const state = randomState();
  const redirect = `${location.origin}/console/`;
  sessionStorage.setItem(META, JSON.stringify({ state, provider, redirect_uri: redirect, at: Date.now() }));
  const q = new URLSearchParams({ client_id: conf.app_id, config_id: conf.config_id, redirect_uri: redirect,
    response_type: "code", state });
  location.assign(`${conf.dialog_url}?${q}`);
}

/** Starts the OAuth sign-in of connection 'c': the gateway's authorize address, in this tab. */
async function startSignin(c, msg, btn) {
  if (btn) btn.disabled = true;
  try {
    const { data } = await api("POST", `/orgs/c/connections/${encodeURIComponent(c.id)}/authorize`);
    if (!data || !/^https?:\/\//.test(data.authorize_url || "")) throw new Error("The gateway gave no sign-in address.");
    sessionStorage.setItem(SIGNIN, JSON.stringify({ id: c.id, name: c.name, at: Date.now() }));
    location.assign(data.authorize_url);
  } catch (e) {
    setMessage(msg, "error", `Could not start the sign-in: ${e.message}`);
    if (btn) btn.disabled = false;
  }
}

/** "Connect" for a sign-in connection never signed in, "Reconnect" for one that lost its tokens. */
function signinLabel(c) {
  if (c.status === "active") return "Sign in again";
  return c.error && /sign in needed/.test(c.error.message || "") ? "Connect" : "Reconnect";
}

async function refresh() {
  try {
    const items = await listAll("/orgs/c/connections");
    countEl.textContent = String(items.length);
    setMessage(pageError, "error", "");
    clear(listEl);
    if (!items.length) {
      listEl.append(h("li.empty", {}, "No connections yet. Choose Add integration to connect a channel or a service."));
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
      info.signin && c.status !== "active"
        ? h("button.primary", { type: "button", "aria-label": `${signinLabel(c)} ${c.name}`,
          onclick: (ev) => startSignin(c, rowMsg, ev.currentTarget) }, signinLabel(c))
        : null,
      h("button", { type: "button", onclick: () => openManage(c), "aria-label": `Edit ${c.name}` }, "Edit"),
      h("button.danger-ghost", { type: "button", onclick: () => disconnect(c, rowMsg), "aria-label": `Disconnect ${c.name}` }, "Disconnect")));
  return li;
}

// ---- Add integration: the picker

function openPicker() {
  const { body, close } = modal("Add integration", { wide: true });
  const search = field("Search services", "input", { type: "search", placeholder: "WhatsApp, Telegram, MCP, OAuth…", autocomplete: "off" });
  const empty = h("p.muted", { hidden: true }, "No service matches.");
  const sections = [["channel", "Channels", "Services"], ["action", "Actions", "Action services"]].map(([kind, title, label]) => ({
    kind, head: h("h3.section", {}, title), list: h("ul.picker", { "aria-label": label }), rows: [],
  }));
  for (const [id, p] of Object.entries(PROVIDERS)) {
    const sec = sections.find((x) => x.kind === p.kind);
    const btn = h("button.picker-row", { type: "button", dataset: { provider: id },
      onclick: () => { close(); openCreate(id); } },
    h("img.provider-icon", { src: p.icon, alt: "", width: 32, height: 32 }),
    h("span.picker-text", {}, h("strong", {}, p.name), h("span.muted", {}, p.blurb)),
    h("span.chev", { "aria-hidden": "true" }, "›"));
    const li = h("li", {}, btn);
    sec.rows.push({ li, text: `${p.name} ${p.blurb} ${p.terms || ""} ${id}`.toLowerCase() });
    sec.list.append(li);
  }
  search.input.addEventListener("input", () => {
    const q = search.input.value.trim().toLowerCase();
    let shown = 0;
    for (const sec of sections) {
      let here = 0;
      for (const r of sec.rows) {
        r.li.hidden = q !== "" && !r.text.includes(q);
        if (!r.li.hidden) here += 1;
      }
      sec.head.hidden = here === 0;
      shown += here;
    }
    empty.hidden = shown > 0;
  });
  body.append(search.wrap, ...sections.flatMap((x) => [x.head, x.list]), empty);
  search.input.focus();
}

// ---- The provider's form (create)

/**
 * The provider's credential controls: {nodes, read(onlyFilled), check(creds, partial)}.
 * read() gives the credentials object the API takes (empty optional fields left out; with
 * onlyFilled, every empty field left out, for an update). check() names the first mistake
 * as [field key, words] the way the gateway would refuse it, or null.
 */
function credentialControls(info, { editing = false, masked = {} } = {}) {
  const controls = info.fields.map((f) => {
    if (f.control === "headerMode") return headerModeControl(f, editing, masked);
    if (f.control === "pairs") return pairsControl(f, editing, masked);
    const attrs = { type: f.secret ? "password" : f.type || "text", name: f.key, autocomplete: "off", spellcheck: "false" };
    if (editing && masked[f.key]) attrs.placeholder = `${masked[f.key]} (unchanged)`;
    else if (f.placeholder) attrs.placeholder = f.placeholder;
    const fl = field(f.label, "input", attrs, f.hint);
    return { f, wrap: fl.wrap, focus: fl.input, read: () => fl.input.value.trim() || undefined,
      reset: () => { fl.input.value = ""; } };
  });
  return {
    nodes: controls.map((c) => c.wrap),
    read({ onlyFilled = false } = {}) {
      const out = {};
      for (const c of controls) {
        const v = c.read();
        if (v !== undefined) out[c.f.key] = v;
        else if (!onlyFilled && !c.f.optional) out[c.f.key] = "";
      }
      return out;
    },
    check(creds, partial) {
      for (const c of controls) {
        c.focus.removeAttribute("aria-invalid");
        if (!partial && !c.f.optional && !creds[c.f.key]) return mark(c, `Type the ${c.f.label.replace(/ \(optional\)$/, "")}.`);
      }
      const bad = info.validate ? info.validate(creds) : null;
      return bad ? mark(controls.find((c) => c.f.key === bad[0]), bad[1]) : null;
    },
    reset() { for (const c of controls) c.reset(); },
  };
}

function mark(c, text) {
  if (c) { c.focus.setAttribute("aria-invalid", "true"); c.focus.focus(); }
  return text;
}

/** Where an API key goes: Authorization: Bearer (header left out), a header, or query:<name>. */
function headerModeControl(f, editing, masked) {
  const id = nextId("f");
  const modes = [["bearer", "Authorization: Bearer <key>"], ["header", "A header"], ["query", "A query parameter"]];
  const select = h("select", { id, name: "header_mode" });
  if (editing) select.append(h("option", { value: "keep" }, masked.header ? "Unchanged" : "Unchanged (Authorization: Bearer)"));
  for (const [v, label] of modes) if (!editing || v !== "bearer") select.append(h("option", { value: v }, label));
  const name = field("Header or parameter name", "input", { type: "text", name: "header_name", autocomplete: "off", spellcheck: "false", placeholder: "X-Api-Key" });
  const sync = () => { name.wrap.hidden = select.value === "bearer" || select.value === "keep";
    name.input.placeholder = select.value === "query" ? "api_key" : "X-Api-Key"; };
  select.addEventListener("change", sync);
  sync();
  const hint = editing ? "The current setting is kept unless you choose another." : "Most APIs take Authorization: Bearer; some want their own header or a query parameter.";
  const wrap = h("div.field-group", {}, h("div.field", {}, h("label", { for: id }, f.label), select, h("p.hint", {}, hint)), name.wrap);
  return {
    f, wrap, focus: name.input,
    read() {
      const n = name.input.value.trim();
      if (select.value === "header") return n || "";
      if (select.value === "query") return `query:${n}`;
      return undefined;
    },
    reset() { select.selectedIndex = 0; name.input.value = ""; sync(); },
  };
}

/** Rows of name and value (MCP headers, extra authorize parameters), read as one object. */
function pairsControl(f, editing, masked) {
  const legendId = nextId("lg");
  const rows = h("div.pairs");
  const add = h("button.small-btn", { type: "button" }, f.add);
  let n = 0;
  const addRow = () => {
    n += 1;
    const k = h("input", { type: "text", autocomplete: "off", spellcheck: "false", "aria-label": `${f.nameLabel} ${n}`, placeholder: f.nameLabel });
    const v = h("input", { type: f.secret ? "password" : "text", autocomplete: "off", spellcheck: "false", "aria-label": `${f.valueLabel} ${n}`, placeholder: f.valueLabel });
    const rm = h("button.ghost", { type: "button", "aria-label": `Remove ${f.nameLabel.toLowerCase()} ${n}` }, "×");
    const row = h("div.pair", {}, k, v, rm);
    rm.addEventListener("click", () => { row.remove(); add.disabled = false; });
    rows.append(row);
    add.disabled = rows.children.length >= f.max;
    return k;
  };
  add.addEventListener("click", () => addRow().focus());
  const current = editing && masked[f.key] && Object.keys(masked[f.key]).length
    ? `Now: ${Object.keys(masked[f.key]).join(", ")}. Rows typed here replace all of them.` : "";
  if (!editing) addRow();
  const wrap = h("fieldset.field.pairs-field", { "aria-labelledby": legendId },
    h("legend", { id: legendId }, f.label), rows, h("div", {}, add), h("p.hint", {}, [f.hint, current].filter(Boolean).join(" ")));
  return {
    f, wrap, focus: add,
    read() {
      const out = {};
      let any = false;
      for (const row of rows.children) {
        const [k, v] = row.querySelectorAll("input");
        if (!k.value.trim() && !v.value) continue;
        out[k.value.trim()] = v.value;
        any = true;
      }
      return any ? out : undefined;
    },
    reset() { clear(rows); add.disabled = false; if (!editing) addRow(); },
  };
}

function testResultText(r, info) {
  if (r.ok) return `Connection works${r.account_hint ? `: ${r.account_hint}` : ""}.`;
  if (info && info.signin && r.error === "sign in needed") return "The settings are valid. Create the connection, then Connect to sign in.";
  return `Test failed: ${r.error || "the provider refused the credentials"}.`;
}

function openCreate(provider) {
  const info = providerInfo(provider);
  const { body, close } = modal(`Connect ${info.name}`, { wide: true });
  const form = h("form.form", { novalidate: true });
  const name = field("Connection name", "input", { type: "text", name: "name", maxlength: 1024, placeholder: info.name },
    info.kind === "action" ? "Shown in this console and to the assistants' Actions." : "Shown in this console; defaults to the account's name.");
  const creds = credentialControls(info);
  const testMsg = messageLine("status");
  const formMsg = messageLine();
  const testBtn = h("button", { type: "button", hidden: !info.fields.length }, "Test connection");
  const createBtn = h("button.primary", { type: "submit" }, "Create connection");
  form.append(h("div.form-provider", {}, h("img.provider-icon", { src: info.icon, alt: "", width: 40, height: 40 }),
    h("p.muted", {}, info.blurb)));
  if (info.meta) {
    const fb = h("div.fb-signin", { hidden: true });
    form.append(fb);
    metaSignin().then((conf) => {
      if (!conf) return;
      fb.append(h("button.facebook", { type: "button", onclick: () => continueWithFacebook(provider, conf) }, "Continue with Facebook"),
        h("p.hint", {}, `Sign in with Facebook and choose the ${provider === "whatsapp" ? "business accounts and phone numbers" : provider === "messenger" ? "Pages" : "Instagram accounts"} to connect: their connections are created and subscribed for you.`),
        h("p.or", {}, "or paste the credentials"));
      fb.hidden = false;
    });
  }
  form.append(name.wrap, ...creds.nodes);
  if (info.signinNote) form.append(h("p.hint.signin-note", {}, info.signinNote));
  if (info.meta) form.append(setupBlock(info, null));
  form.append(h("div.actions", {}, testBtn, createBtn), testMsg, formMsg);
  body.append(form);
  name.input.focus();

  const gather = () => {
    const credentials = creds.read();
    const bad = creds.check(credentials, false);
    return bad ? { bad } : { credentials };
  };
  testBtn.addEventListener("click", async () => {
    setMessage(formMsg, "error", "");
    const { bad, credentials } = gather();
    if (bad) { setMessage(testMsg, "error", bad); return; }
    testBtn.disabled = true;
    setMessage(testMsg, "status", "Testing…");
    try {
      const { data } = await api("POST", "/orgs/c/connections/test", { body: { provider, credentials } });
      setMessage(testMsg, data.ok ? "ok" : info.signin && data.error === "sign in needed" ? "ok" : "error", testResultText(data, info));
    } catch (e) {
      setMessage(testMsg, "error", `Test failed: ${e.message}`);
    } finally {
      testBtn.disabled = false;
    }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setMessage(formMsg, "error", "");
    const { bad, credentials } = gather();
    if (bad) { setMessage(formMsg, "error", bad); return; }
    createBtn.disabled = true;
    const req = { provider, credentials };
    if (name.input.value.trim()) req.name = name.input.value.trim();
    try {
      const { data } = await api("POST", "/orgs/c/connections", { body: req });
      await refresh();
      if (info.meta) {
        // What to paste in the Meta app needs the new connection's webhook URL.
        clear(body);
        body.append(h("p.msg.ok", { role: "status" }, `${data.name} is connected.`), setupBlock(info, data),
          h("div.actions", {}, h("button.primary", { type: "button", onclick: close }, "Done")));
      } else if (info.signin) {
        // Created inactive: it works once someone signs in to the service.
        clear(body);
        const msg = messageLine();
        const connect = h("button.primary", { type: "button" }, "Connect");
        connect.addEventListener("click", () => startSignin(data, msg, connect));
        body.append(h("p.msg.ok", { role: "status" }, `${data.name} is created.`),
          h("p", {}, `Sign in to ${info.name === "OAuth 2.0" ? "the service" : info.name} to make it active: Connect opens its sign-in page, which brings you back here.`),
          h("div.actions", {}, h("button.ghost", { type: "button", onclick: close }, "Later"), connect), msg);
        connect.focus();
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

  // Update credentials; Connect / Reconnect for sign-in connections
  const credForm = h("form.form.section-form", { novalidate: true });
  const creds = credentialControls(info, { editing: true, masked: c.credentials || {} });
  const credMsg = messageLine();
  const saveCreds = h("button", { type: "submit" }, "Update credentials");
  credForm.append(h("h3", {}, "Credentials"), h("p.muted", {}, "Leave a field empty to keep its current value."), ...creds.nodes, h("div.actions", {}, saveCreds), credMsg);
  credForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const credentials = creds.read({ onlyFilled: true });
    if (!Object.keys(credentials).length) { setMessage(credMsg, "error", "Type at least one new value."); return; }
    const bad = creds.check(credentials, true);
    if (bad) { setMessage(credMsg, "error", bad); return; }
    saveCreds.disabled = true;
    try {
      const { data } = await api("PATCH", `/orgs/c/connections/${encodeURIComponent(c.id)}`, { body: { credentials } });
      current = data;
      renderHead();
      creds.reset();
      setMessage(credMsg, "ok", "Credentials updated.");
      refresh();
    } catch (e) {
      setMessage(credMsg, "error", `Could not update the credentials: ${e.message}`);
    } finally { saveCreds.disabled = false; }
  });

  body.append(head, nameForm, testRow);
  if (info.signin) body.append(signinBlock(() => current));
  if (info.fields.length) body.append(credForm);
  if (info.meta) body.append(setupBlock(info, c));
  body.append(h("div.actions", {}, h("button.ghost", { type: "button", onclick: close }, "Close")));
}

function signinBlock(current) {
  const c = current();
  const msg = messageLine();
  const btn = h(`button.${c.status === "active" ? "ghost" : "primary"}`, { type: "button" }, signinLabel(c));
  btn.addEventListener("click", () => startSignin(current(), msg, btn));
  const text = c.status === "active"
    ? "Signed in. Sign in again to use another account or to grant other scopes."
    : "Sign in to the service to make this connection active: its sign-in page brings you back here.";
  return h("div.section-form", {}, h("h3", {}, "Sign-in"), h("p.muted", {}, text), h("div.actions", {}, btn), msg);
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
