// Drives the web console in headless Chromium (playwright-core) like a person would, and
// checks what it shows. Started by test_console.py, which passes:
//   SB_URL (the gateway), SB_KEY (an org's API key), SB_CONTROL (the test's control API on
//   the fakes), SB_SCREENSHOT_DIR, SB_SUMMARY (where the step summary is written), SB_CHROMIUM.
// Every step is bounded in time; the script exits non-zero on the first failure.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const URL0 = process.env.SB_URL;
const KEY = process.env.SB_KEY;
const CONTROL = process.env.SB_CONTROL;
const SHOTS = process.env.SB_SCREENSHOT_DIR;
const summary = { passed: [], skipped: {}, requests: 0 };
const T = 10000;

const TOKEN = "7100200300:AAbrowserTestTokenNumberOne123456";
const TOKEN2 = "7100200300:AAbrowserTestTokenNumberTwo654321";
const XSS = "<img src=x onerror=alert(1)>";

async function control(name, args = {}) {
  const r = await fetch(`${CONTROL}/${name}`, { method: "POST", body: JSON.stringify(args) });
  const js = await r.json();
  if (!r.ok) throw new Error(`control ${name}: ${js.error}`);
  return js;
}

function pass(step) {
  summary.passed.push(step);
  console.log(`ok - ${step}`);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

/** Polls fn() until it is truthy (deadline T ms). */
async function until(fn, what, timeout = T) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** All text of the elements 'loc' matches, joined (none: ""). */
const texts = async (loc) => (await loc.allTextContents()).join(" | ");

async function shot(page, name) {
  for (const [label, width] of [["desktop", 1280], ["360", 360]]) {
    await page.setViewportSize({ width, height: width === 360 ? 760 : 800 });
    // The layout after the resize: two frames later it is painted.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.screenshot({ path: join(SHOTS, `${name}-${label}.png`) });
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

/** Every visible form control and button has an accessible name (label, aria-label or text). */
async function checkLabels(page, where) {
  const unnamed = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll("input, select, textarea, button, a[href]")) {
      if (el.closest("[hidden]") || el.getClientRects().length === 0 && !el.classList.contains("sr-only")) continue;
      const name = (el.labels && el.labels.length ? [...el.labels].map((l) => l.textContent).join(" ") : "")
        || el.getAttribute("aria-label") || (el.tagName === "BUTTON" || el.tagName === "A" ? el.textContent : "");
      if (!name || !name.trim()) out.push(el.outerHTML.slice(0, 120));
    }
    return out;
  });
  check(unnamed.length === 0, `unlabelled controls on ${where}: ${unnamed.join(" | ")}`);
}

const connRow = (page, name) => page.locator("li.conn", { has: page.locator(".conn-name", { hasText: name }) });

async function main() {
  const browser = await chromium.launch({ executablePath: process.env.SB_CHROMIUM || "/usr/bin/chromium",
    headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    page.setDefaultTimeout(T);
    const urls = [];
    const dialogs = [];
    const consoleErrors = [];
    page.on("request", (r) => urls.push(r.url()));
    page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });

    // ---- Sign in: a wrong key is refused in words, the right one opens Connections.
    await page.goto(`${URL0}/console`);
    check(page.url().endsWith("/console/"), `redirected to /console/ (${page.url()})`);
    await page.getByLabel("API key").fill("sb_wrong_key_000000000000");
    await page.getByRole("button", { name: "Sign in" }).click();
    await until(async () => (await page.locator("#signin-error").textContent()).includes("not valid"), "the wrong-key message");
    await page.getByLabel("API key").fill(KEY);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: /Connections/ }).waitFor();
    await until(async () => (await page.locator(".badge.count").textContent()) === "0", "count badge 0");
    check(await page.evaluate(() => localStorage.length) === 0, "nothing in localStorage");
    check(await page.evaluate((k) => sessionStorage.getItem("switchboard.key") === k, KEY), "key in sessionStorage");
    pass("signin");

    // ---- Add integration → picker (search) → Telegram form → Test → Create.
    await control("telegram_add_bot", { token: TOKEN, username: "acme_support_bot" });
    await page.getByRole("button", { name: "Add integration" }).click();
    const picker = page.getByRole("dialog", { name: "Add integration" });
    await picker.waitFor();
    check(await picker.locator(".picker-row").count() >= 4, "the picker lists the services");
    await shot(page, "picker");
    await checkLabels(page, "the picker");
    // By keyboard: the search field has the focus; Tab reaches the one row left, Enter opens it.
    check(await picker.getByLabel("Search services").evaluate((el) => el === document.activeElement), "the search field has the focus");
    await page.keyboard.type("tele");
    await until(async () => (await picker.locator("li:not([hidden]) .picker-row").count()) === 1, "search leaves Telegram only");
    await page.keyboard.press("Tab");
    check(await picker.getByRole("button", { name: /Telegram/ }).evaluate((el) => el === document.activeElement), "Tab reaches the Telegram row");
    await page.keyboard.press("Enter");
    const form = page.getByRole("dialog", { name: "Connect Telegram" });
    await form.waitFor();
    await form.getByLabel("Connection name").fill("Support bot");
    await form.getByLabel("Bot token").fill("7100200300:AAwrongTokenForTheTestButton00");
    await form.getByRole("button", { name: "Test connection" }).click();
    await until(async () => (await texts(form.locator(".msg"))).includes("Test failed"), "a failed test in words");
    await form.getByLabel("Bot token").fill(TOKEN);
    await form.getByRole("button", { name: "Test connection" }).click();
    await until(async () => (await texts(form.locator(".msg"))).includes("@acme_support_bot"), "test ok with the account hint");
    await shot(page, "form");
    await checkLabels(page, "the Telegram form");
    await form.getByRole("button", { name: "Create connection" }).click();
    await form.waitFor({ state: "detached" });
    const row = connRow(page, "Support bot");
    await row.waitFor();
    check((await row.locator(".pill").textContent()) === "Active", "the new connection is Active");
    check((await row.locator(".account-hint").textContent()) === "@acme_support_bot", "account hint shown");
    check((await page.locator(".badge.count").textContent()) === "1", "count badge 1");
    check(await row.locator('img.provider-icon[alt="Telegram"]').count() === 1, "provider icon");
    pass("telegram_create");

    // ---- Edit: rename.
    await row.getByRole("button", { name: "Edit Support bot" }).click();
    let manage = page.getByRole("dialog", { name: "Manage connection" });
    await manage.waitFor();
    await checkLabels(page, "Manage connection");
    await manage.getByLabel("Connection name").fill("Help desk bot");
    await manage.getByRole("button", { name: "Save name" }).click();
    await until(async () => (await texts(manage.locator(".msg"))) .includes("Name saved."), "name saved");
    await manage.getByRole("button", { name: "Close" }).first().click();
    const row2 = connRow(page, "Help desk bot");
    await row2.waitFor();
    pass("rename");

    // ---- Token revoked at the provider: Test shows the error, the row goes Inactive.
    await control("telegram_remove_bot", { token: TOKEN });
    await row2.getByRole("button", { name: "Edit Help desk bot" }).click();
    manage = page.getByRole("dialog", { name: "Manage connection" });
    await manage.getByRole("button", { name: "Test connection" }).click();
    await until(async () => /Test failed: .*Unauthorized/.test(await texts(manage.locator(".msg"))), "the test error");
    await until(async () => (await manage.locator(".pill").textContent()) === "Inactive", "Inactive in the dialog");
    await manage.getByRole("button", { name: "Close" }).first().click();
    await until(async () => (await row2.locator(".pill").textContent()) === "Inactive", "Inactive in the list");
    check((await row2.locator(".conn-error").textContent()).includes("Unauthorized"), "the error shown in the row");
    await shot(page, "connections-inactive");
    pass("inactive_after_test");

    // ---- Update the token: Active again.
    await control("telegram_add_bot", { token: TOKEN2, username: "acme_support_bot" });
    await row2.getByRole("button", { name: "Edit Help desk bot" }).click();
    manage = page.getByRole("dialog", { name: "Manage connection" });
    await manage.getByLabel("Bot token").fill(TOKEN2);
    await manage.getByRole("button", { name: "Update credentials" }).click();
    await until(async () => (await texts(manage.locator(".msg"))) .includes("Credentials updated."), "credentials updated");
    await manage.getByRole("button", { name: "Close" }).first().click();
    await until(async () => (await row2.locator(".pill").textContent()) === "Active", "Active again");
    pass("update_token");
    const conn = (await control("api", { method: "GET", path: "/orgs/c/connections" })).json.find((c) => c.provider === "telegram");

    // ---- Assistants: create one, bind the bot.
    await page.getByRole("link", { name: "Assistants" }).click();
    await page.getByLabel("New assistant name").fill("Sales assistant");
    await page.getByRole("button", { name: "Create assistant" }).click();
    const arow = page.locator("li.assistant", { hasText: "Sales assistant" });
    await arow.waitFor();
    await arow.getByRole("button", { name: "Channels" }).click();
    await arow.getByLabel("Connection").selectOption({ label: "Help desk bot (Telegram)" });
    check((await arow.locator(".bind-form label").nth(1).textContent()).startsWith("Bot ID"), "the external id is labelled Bot ID");
    // A wrong bot id: the API's reason, in words, under the form.
    await arow.getByLabel("Bot ID (optional)").fill("999");
    await arow.getByRole("button", { name: "Bind" }).click();
    await until(async () => (await texts(arow.locator(".bind-form .msg"))).includes("Could not bind: "), "the bind error in words");
    await arow.getByLabel("Bot ID (optional)").fill("");
    await arow.getByRole("button", { name: "Bind" }).click();
    await arow.locator("li.binding", { hasText: "7100200300" }).waitFor();
    await checkLabels(page, "the assistants page");
    const asst = (await control("api", { method: "GET", path: "/orgs/c/assistants" })).json[0];
    const bindings = (await control("api", { method: "GET", path: `/orgs/c/assistants/${asst.id}/channels` })).json;
    check(bindings.length === 1 && bindings[0].connection_id === conn.id, "the binding exists in the API");
    // Enable/disable round trip.
    const sw = arow.getByRole("switch", { name: "Enabled" });
    await sw.uncheck();
    await until(async () => (await control("api", { method: "GET", path: `/orgs/c/assistants/${asst.id}` })).json.enabled === false, "disabled");
    await sw.check();
    await until(async () => (await control("api", { method: "GET", path: `/orgs/c/assistants/${asst.id}` })).json.enabled === true, "enabled");
    await shot(page, "assistants");
    pass("assistant_bind");

    // ---- A Meta connection: the form, then what to paste in the Meta app (webhook URL, steps).
    await control("graph_add_account", { token: "EAAGbrowserPageToken0001", account_id: "1029384756", name: "Acme Store" });
    await page.getByRole("link", { name: "Connections" }).click();
    await page.getByRole("button", { name: "Add integration" }).click();
    await page.getByRole("dialog", { name: "Add integration" }).getByRole("button", { name: /Messenger/ }).click();
    const mform = page.getByRole("dialog", { name: "Connect Messenger" });
    await mform.getByLabel("Access token").fill("EAAGbrowserPageToken0001");
    await mform.getByLabel("App secret").fill("0123456789abcdef0123456789abcdef");
    await mform.getByLabel("Verify token").fill("acme-verify-2026");
    await mform.getByRole("button", { name: "Test connection" }).click();
    await until(async () => (await texts(mform.locator(".msg"))).includes("Acme Store"), "the Meta test names the Page");
    await shot(page, "form-messenger");
    await mform.getByRole("button", { name: "Create connection" }).click();
    const cb = mform.getByLabel("Callback URL");
    await cb.waitFor();
    const hook = await cb.inputValue();
    check(/\/webhooks\/messenger\/cn_/.test(hook), `the callback URL is the connection's webhook (${hook})`);
    check((await texts(mform.locator("ol.steps li"))).includes("Verify token"), "the setup steps are shown");
    await mform.getByRole("button", { name: "Done" }).click();
    const mrow = connRow(page, "Acme Store");
    await mrow.waitFor();
    check((await mrow.locator(".account-hint").textContent()) === "Acme Store", "the Page name is the account hint");
    await mrow.getByRole("button", { name: "Edit Acme Store" }).click();
    const mmanage = page.getByRole("dialog", { name: "Manage connection" });
    check((await mmanage.getByLabel("Callback URL").inputValue()) === hook, "Manage connection shows the webhook URL");
    await mmanage.getByRole("button", { name: "Close" }).first().click();
    await until(async () => (await page.locator(".badge.count").textContent()) === "2", "count badge 2");
    await shot(page, "connections");
    pass("meta_setup");

    // ---- A contact whose name is markup is shown as text; no script runs.
    const update = (id, text, extra = {}) => ({
      update_id: 900000 + id,
      message: { message_id: 500 + id, date: Math.floor(Date.now() / 1000),
        chat: { id: 42424242, type: "private", first_name: XSS },
        from: { id: 42424242, is_bot: false, first_name: XSS }, text, ...extra },
    });
    let seq = 1;
    const deliver = async (text, extra) => {
      const r = await control("webhook", { connection_id: conn.id, token: TOKEN2, update: update(seq++, text, extra) });
      check(r.status === 200, `webhook accepted (${r.status})`);
    };
    await deliver("Hello there");
    const { conversation_id: conv, contact_id: contactId } = await control("last_conversation", { assistant_id: asst.id });
    await page.getByRole("link", { name: "Contacts" }).click();
    const cname = page.locator("tr", { has: page.locator(".contact-name") }).first().locator(".contact-name");
    await cname.waitFor();
    check((await cname.textContent()) === XSS, `the name is shown as its characters (${await cname.textContent()})`);
    check(await page.locator('img[src="x"]').count() === 0, "no img element from the name");
    check(dialogs.length === 0, `no dialog fired (${dialogs})`); // checked again at the end
    await shot(page, "contacts");
    await checkLabels(page, "the contacts page");
    pass("xss_contact");

    // ---- A dead letter: the provider refuses once; Retry sends it again.
    await control("telegram_override", { method: "sendmessage", status: 400, times: 1,
      body: { ok: false, error_code: 400, description: "Bad Request: message is too long" } });
    await control("assistant_command", { cmd: { id: "console-dl-1", conversation_id: conv, type: "text", text: "Your order has shipped" } });
    await control("command_state", { id: "console-dl-1", state: "failed" });
    await page.getByRole("link", { name: "Dead letters" }).click();
    const dl = page.locator("li.dead", { hasText: "Your order has shipped" });
    await dl.waitFor();
    check((await dl.textContent()).includes("message is too long"), "the provider's error shown");
    await shot(page, "dead-letters");
    await dl.getByRole("button", { name: "Retry" }).click();
    await control("telegram_sent", { method: "sendmessage", text: "Your order has shipped" });
    await control("command_state", { id: "console-dl-1", state: "sent" });
    await until(async () => (await page.locator("li.dead").count()) === 0, "the dead letter leaves the list");
    pass("dead_letter_retry");

    // ---- Inbox: live conversations, the thread, media, replies, hand-off.
    await inboxSteps(page, { deliver, conv, contactId, urls });

    // ---- The 10-per-hour limit on creating assistants, in words.
    for (let i = 2; i <= 10; i += 1) {
      const r = await control("api", { method: "POST", path: "/orgs/c/assistants", body: { name: `Assistant ${i}` } });
      check(r.status === 201, `assistant ${i} created (${r.status})`);
    }
    await page.getByRole("link", { name: "Assistants" }).click();
    await page.getByLabel("New assistant name").fill("One too many");
    await page.getByRole("button", { name: "Create assistant" }).click();
    await until(async () => (await texts(page.locator(".card.pad .msg"))).includes("At most 10 assistants"), "the 429 message");
    pass("assistant_429");

    // ---- Disconnect: the confirmation names the assistant that loses its channel.
    await page.getByRole("link", { name: "Connections" }).click();
    const row3 = connRow(page, "Help desk bot");
    await row3.getByRole("button", { name: "Disconnect Help desk bot" }).click();
    const confirm = page.getByRole("dialog", { name: "Disconnect" });
    await confirm.waitFor();
    check((await confirm.locator("ul.losing").textContent()).includes("Sales assistant"), "the assistant is named");
    await shot(page, "disconnect");
    await confirm.getByRole("button", { name: "Cancel" }).click();
    check(await connRow(page, "Help desk bot").count() === 1, "cancel keeps it");
    await row3.getByRole("button", { name: "Disconnect Help desk bot" }).click();
    await page.getByRole("dialog", { name: "Disconnect" }).getByRole("button", { name: "Disconnect" }).click();
    await until(async () => (await page.locator(".badge.count").textContent()) === "1", "count badge back to 1");
    check((await control("api", { method: "GET", path: `/orgs/c/connections/${conn.id}` })).status === 404, "the connection is gone");
    check((await control("api", { method: "GET", path: `/orgs/c/assistants/${asst.id}/channels` })).json.length === 0, "its binding is gone");
    await control("telegram_sent", { method: "deletewebhook" });
    pass("disconnect");

    // ---- WhatsApp outside the 24-hour window: the reply box offers the templates.
    await templateSteps(page, { asst });

    // ---- The key never appears in a URL.
    summary.requests = urls.length;
    const leaked = urls.filter((u) => u.includes(KEY) || u.includes(encodeURIComponent(KEY)));
    check(leaked.length === 0, `the key appears in ${leaked.join(", ")}`);
    check(urls.some((u) => u.includes("/orgs/c/")), "API requests were recorded");
    pass("no_key_in_urls");
    check(dialogs.length === 0, `no dialog fired (${dialogs})`);
    const unexpected = consoleErrors.filter((e) => !/Failed to load resource|status of 4\d\d/.test(e));
    check(unexpected.length === 0, `no script error (${unexpected.join(" | ")})`);

    // ---- Action connections and sign-ins, in a second org (its own list and count).
    await actionSteps(browser);
  } finally {
    await browser.close();
  }
}

async function inboxSteps(page, { deliver, conv, contactId, urls }) {
  await page.getByRole("link", { name: /Inbox/ }).click();
  const item = page.locator(`button.conv[data-id="${conv}"]`);
  await item.waitFor();
  await until(async () => (await page.locator(".live").textContent()) === "Live", "the live feed connected");
  const badge = () => item.locator(".badge.unread").textContent().catch(() => "0");
  const before = Number(await badge());
  await deliver("A second message, live");
  await until(async () => Number(await badge()) === before + 1, "the unread badge rises without a reload");
  await until(async () => (await item.locator(".conv-preview").textContent()).includes("A second message, live"), "the preview updates");
  check(urls.some((u) => u.includes("/orgs/c/inbox/events?ticket=")), "EventSource uses a ticket");
  pass("inbox_live");
  pass("inbox_unread");
  await shot(page, "inbox-list");

  await item.click();
  await page.locator(".bubble", { hasText: "A second message, live" }).waitFor();
  await until(async () => !(await item.locator(".badge.unread").count()), "the badge clears once read");
  // An image arrives while the thread is open; the fake serves its file (getFile).
  await control("telegram_file", { file_id: "browser-photo-1", file_path: "photos/file_7.png" });
  await deliver(undefined, { photo: [{ file_id: "browser-photo-1", file_unique_id: "bp1", width: 320, height: 200, file_size: 2000 }], caption: "Look at this" });
  const photo = page.locator(".bubble", { hasText: "Look at this" });
  const img = photo.locator("img.media-img");
  await img.waitFor();
  await until(async () => img.evaluate((el) => el.complete && el.naturalWidth === 320 && el.naturalHeight === 200), "the image loads (320×200 from the fake)");
  check((await img.getAttribute("src")).startsWith("blob:"), "the image is fetched with the key (GET /orgs/c/media/{ref}), not a URL with a secret");
  check(urls.some((u) => /\/orgs\/c\/media\/[^/?]+$/.test(u)), "the keyed media route was used");
  // Open it: a dialog with the full image and a download link.
  await photo.getByRole("button", { name: /^Open image/ }).click();
  const viewer = page.getByRole("dialog", { name: "Image" });
  await viewer.waitFor();
  await until(async () => viewer.locator("img").evaluate((el) => el.complete && el.naturalWidth === 320), "the opened image is shown");
  const download = viewer.getByRole("link", { name: /Download/ });
  check((await download.getAttribute("href")).startsWith("blob:"), "a download link");
  check((await download.getAttribute("download")) === "file_7.png", `under the gateway's file name (${await download.getAttribute("download")})`);
  await checkLabels(page, "the image viewer");
  await shot(page, "inbox-image");
  await page.keyboard.press("Escape");
  await viewer.waitFor({ state: "detached" });
  pass("inbox_image");

  await page.getByLabel("Reply", { exact: true }).fill("Thanks, we are on it");
  await page.getByRole("button", { name: "Send" }).click();
  await control("telegram_sent", { method: "sendmessage", text: "Thanks, we are on it" });
  await page.locator(".bubble.out", { hasText: "Thanks, we are on it" }).waitFor();
  pass("inbox_reply_text");

  const pdf = "%PDF-1.4\n% test\n";
  await page.setInputFiles(".reply input[type=file]", { name: "invoice.pdf", mimeType: "application/pdf", buffer: Buffer.from(pdf) });
  await until(async () => (await page.locator(".reply .file-name").textContent()) === "invoice.pdf", "the chosen file is named");
  await page.getByLabel("Reply", { exact: true }).fill("Your invoice");
  await page.getByRole("button", { name: "Send" }).click();
  const doc = await control("telegram_sent", { method: "senddocument" });
  check(doc.params.document === pdf, `the file's bytes reached Telegram (${JSON.stringify(doc.params.document)})`);
  check(doc.params.caption === "Your invoice", `the caption went with it (${doc.params.caption})`);
  check(doc.filenames.includes("invoice.pdf"), `under its name (${doc.filenames})`);
  const sentDoc = page.locator(".bubble.out", { hasText: "Your invoice" });
  await sentDoc.waitFor();
  check((await sentDoc.textContent()).includes("invoice.pdf"), "the sent file is named in the thread");
  check(await sentDoc.locator("a[href*='.invalid']").count() === 0, "no link to the gateway's upload placeholder");
  check((await page.getByLabel("Reply", { exact: true }).inputValue()) === "", "the reply box is emptied");
  const convItem = page.locator(`button.conv[data-id="${conv}"] .conv-preview`);
  await until(async () => /\[document\]|Your invoice/.test(await convItem.textContent()), "the list shows the file as the last message");
  await shot(page, "inbox");
  pass("inbox_reply_file");

  await page.getByRole("switch", { name: "AI replies" }).uncheck();
  await until(async () => (await control("api", { method: "GET", path: `/orgs/c/contacts/${contactId}` })).json.status === "AI_REPLIES_DISABLED", "handed off");
  await control("assistant_command", { cmd: { id: "console-handoff-1", conversation_id: conv, type: "text", text: "Assistant speaking" } });
  const st = await control("command_state", { id: "console-handoff-1", state: "failed" });
  check(st.reason === "handed_off", `the assistant's command is refused as handed_off (${st.reason})`);
  // The thread shows the refused message and why, live.
  const refused = page.locator(".bubble.out", { hasText: "Assistant speaking" });
  await refused.waitFor();
  await until(async () => (await refused.textContent()).includes("handed off"), "the refusal in words");
  await until(async () => refused.evaluate((el) => {
    const r = el.getBoundingClientRect();
    const box = el.closest("ol.messages").getBoundingClientRect();
    return r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
  }), "the thread follows the new message into view");
  await shot(page, "inbox-handoff");
  await page.getByRole("switch", { name: "AI replies" }).check();
  await until(async () => (await control("api", { method: "GET", path: `/orgs/c/contacts/${contactId}` })).json.status === "SUBSCRIBED", "AI replies on again");
  pass("inbox_handoff");
}

async function templateSteps(page, { asst }) {
  const wa = { token: "EAAGbrowserWhatsAppToken01", account_id: "2233445566", name: "Acme WhatsApp",
    phone_number_id: "109900112233", display: "+1 555-010-7788", waba_id: "209900112233",
    app_secret: "wa-app-secret-0123456789abcdef" };
  const templates = [
    { id: "tpl1", name: "order_update", language: "en_US", status: "APPROVED", category: "UTILITY",
      components: [{ type: "HEADER", format: "TEXT", text: "Hi {{1}}" },
        { type: "BODY", text: "Order {{1}} has shipped to {{2}}." }] },
    { id: "tpl2", name: "spring_sale", language: "en_US", status: "PENDING", category: "MARKETING",
      components: [{ type: "BODY", text: "Spring sale!" }] },
    { id: "tpl3", name: "thanks", language: "de_DE", status: "APPROVED", category: "UTILITY",
      components: [{ type: "BODY", text: "Danke!" }] },
  ];
  const conn = await control("whatsapp_connection", { ...wa, assistant_id: asst.id, templates });
  await page.getByRole("link", { name: /Inbox/ }).click();
  await until(async () => (await page.locator(".live").textContent()) === "Live", "the live feed connected");
  const { conversation_id: wconv } = await control("whatsapp_inbound", { ...wa, connection_id: conn.id, assistant_id: asst.id,
    message_id: "wamid.BROWSER1", phone: "15550142233", name: "Dana", text: "Is my order on its way?", hours_ago: 25 });
  const item = page.locator(`button.conv[data-id="${wconv}"]`);
  await item.waitFor();
  const cv = (await control("api", { method: "GET", path: `/orgs/c/conversations/${wconv}` })).json;
  check(Date.parse(cv.window_expires_at) < Date.now(), `the window closed an hour ago (${cv.window_expires_at})`);
  await item.click();
  await page.locator(".bubble", { hasText: "Is my order on its way?" }).waitFor();
  const reply = page.locator(".reply");
  await until(async () => (await texts(reply.locator(".window-note"))).includes("24-hour"), "the closed window is explained");
  check(!(await page.getByLabel("Reply", { exact: true }).isVisible()), "no free-form reply outside the window");
  const select = reply.getByLabel("Template", { exact: true });
  await until(async () => (await select.locator("option").count()) === 3, "the approved templates are offered");
  const options = await texts(select.locator("option"));
  check(options.includes("order_update") && options.includes("thanks") && !options.includes("spring_sale"), `only approved ones (${options})`);
  await select.selectOption({ label: "order_update (en_US)" });
  await reply.getByLabel("Header {{1}}").fill("Dana");
  await reply.getByLabel("Body {{1}}").fill("4711");
  // A missing parameter is caught before anything is sent.
  await reply.getByRole("button", { name: "Send template" }).click();
  await until(async () => (await texts(reply.locator(".msg"))).includes("Fill in Body {{2}}"), "the missing parameter named");
  check((await control("graph_sends", wa)).count === 0, "nothing was sent");
  await reply.getByLabel("Body {{2}}").fill("Berlin");
  await until(async () => (await reply.locator(".template-preview").textContent()).includes("Order 4711 has shipped to Berlin."), "the preview with the parameters");
  await checkLabels(page, "the template picker");
  await shot(page, "inbox-template");
  await reply.getByRole("button", { name: "Send template" }).click();
  const sent = await control("graph_sent", wa);
  const want = { name: "order_update", language: { code: "en_US" }, components: [
    { type: "header", parameters: [{ type: "text", text: "Dana" }] },
    { type: "body", parameters: [{ type: "text", text: "4711" }, { type: "text", text: "Berlin" }] }] };
  check(sent.body.type === "template" && JSON.stringify(sent.body.template) === JSON.stringify(want),
    `the template reached Meta as it expects (${JSON.stringify(sent.body)})`);
  check(sent.body.to === "15550142233", `to the contact's phone (${sent.body.to})`);
  await page.locator(".bubble.out", { hasText: "order_update" }).waitFor();
  check((await control("graph_sends", wa)).count === 1, "sent once");
  // The customer writes again: the window is open, the free-form reply box is back.
  await control("whatsapp_inbound", { ...wa, connection_id: conn.id, assistant_id: asst.id,
    message_id: "wamid.BROWSER2", phone: "15550142233", name: "Dana", text: "Thanks!", hours_ago: 0 });
  await page.locator(".bubble", { hasText: "Thanks!" }).waitFor();
  await until(async () => page.getByLabel("Reply", { exact: true }).isVisible(), "free-form replies again");
  check((await texts(reply.locator(".window-note"))).includes("Free-form replies are possible until"), "the open window is explained");
  check(await reply.getByRole("button", { name: "Send a template" }).isVisible(), "templates stay at hand");
  pass("inbox_template");
}

// ---- Action connections: every kind through the picker and its form, Test, Create,
// Connect / Reconnect through the fake OAuth server, Continue with Facebook, and no secret
// in the page or any URL.
async function actionSteps(browser) {
  const KEY2 = process.env.SB_KEY2;
  const SERVICES = process.env.SB_SERVICES;
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  const urls = [];
  const errors = [];
  const bodies = [];
  page.on("request", (r) => urls.push(r.url()));
  page.on("framenavigated", (f) => urls.push(f.url()));
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("response", async (r) => {
    if (!r.url().includes("/orgs/c/")) return;
    try { bodies.push(await r.text()); } catch { /* a navigation away dropped it */ }
  });
  const secrets = [KEY2];
  const typed = (v) => { secrets.push(v); return v; };
  const msgs = (loc) => texts(loc.locator(".msg"));
  // A click that leaves the page (a sign-in) and comes back to a new Connections page.
  const roundTrip = async (click, what) => {
    await page.evaluate(() => { window.sbBefore = true; });
    await click();
    await until(async () => /\/console\/#\/connections$/.test(page.url())
      && (await page.evaluate(() => window.sbBefore !== true)), what, 15000);
  };

  await page.goto(`${URL0}/console/`);
  await page.getByLabel("API key").fill(KEY2);
  await page.getByRole("button", { name: "Sign in" }).click();
  await until(async () => (await page.locator(".badge.count").textContent()) === "0", "the second org has no connections");

  // The picker lists every type, channels and actions, and finds them by their terms.
  await page.getByRole("button", { name: "Add integration" }).click();
  const picker = page.getByRole("dialog", { name: "Add integration" });
  const want = ["whatsapp", "messenger", "instagram", "telegram", "api_key", "mcp", "oauth2", "intercom"];
  const have = await picker.locator(".picker-row").evaluateAll((els) => els.map((e) => e.dataset.provider));
  check(JSON.stringify(have) === JSON.stringify(want), `the picker lists every type (${have})`);
  check(await picker.locator(".picker-row.disabled, .pill.soon").count() === 0, "nothing is 'coming soon'");
  const actionsList = picker.getByRole("list", { name: "Action services" });
  check(await actionsList.locator(".picker-row").count() === 4, "four action services");
  for (const [name, icon] of [["API key", "api_key"], ["MCP server", "mcp"], ["OAuth 2.0", "oauth2"], ["Intercom", "intercom"]]) {
    const row = actionsList.getByRole("button", { name: new RegExp(`^${name.replace(".", "\\.")}`) });
    check(await row.count() === 1, `the ${name} row`);
    const img = row.locator("img.provider-icon");
    check((await img.getAttribute("src")) === `icons/${icon}.svg`, `the ${name} icon`);
    await until(async () => img.evaluate((el) => el.complete && el.naturalWidth > 0), `the ${name} icon loads`);
  }
  const search = picker.getByLabel("Search services");
  for (const [q, only] of [["model context", "mcp"], ["bearer", "api_key"], ["refresh", "oauth2"], ["helpdesk", "intercom"], ["botfather", "telegram"]]) {
    await search.fill(q);
    await until(async () => (await picker.locator("li:not([hidden]) .picker-row").evaluateAll((els) => els.map((e) => e.dataset.provider))).join() === only,
      `searching "${q}" leaves ${only}`);
  }
  await search.fill("mcp");
  await until(async () => !(await picker.getByRole("heading", { name: "Channels" }).isVisible()), "the empty section's heading hides");
  await search.fill("");
  await checkLabels(page, "the picker with every type");
  await page.keyboard.press("Escape");
  await picker.waitFor({ state: "detached" });
  pass("picker_all_types");

  const openForm = async (name, title) => {
    await page.getByRole("button", { name: "Add integration" }).click();
    await page.getByRole("dialog", { name: "Add integration" }).getByRole("button", { name: new RegExp(`^${name}`) }).click();
    const form = page.getByRole("dialog", { name: title });
    await form.waitFor();
    return form;
  };

  // ---- API key: client-side checks, a failing and a passing test, create.
  const apiKey = typed(`sk-live-${Date.now()}-browserKeyOne`);
  await control("services_set", { api_key: apiKey, api_header: "X-Api-Key" });
  let form = await openForm("API key", "Connect API key");
  await form.getByLabel("Connection name").fill("CRM API");
  await form.getByLabel("Base URL").fill("ftp://crm.example");
  await form.getByLabel("API key", { exact: true }).fill(typed("sk-wrong-browser-key-0000"));
  await form.getByLabel("Send the key as").selectOption({ label: "A header" });
  await form.getByLabel("Header or parameter name").fill("X-Api-Key");
  await form.getByLabel("Test path (optional)").fill("/ping");
  const before = (await control("services_requests", { prefix: "/api" })).count;
  await form.getByRole("button", { name: "Test connection" }).click();
  await until(async () => (await msgs(form)).includes("Type an http or https URL"), "the bad base URL named before sending");
  check(await form.getByLabel("Base URL").getAttribute("aria-invalid") === "true", "the field is marked");
  check((await control("services_requests", { prefix: "/api" })).count === before, "nothing was sent");
  await form.getByLabel("Base URL").fill(`${SERVICES}/api/v1`);
  await form.getByRole("button", { name: "Test connection" }).click();
  await until(async () => /Test failed: .*401/.test(await msgs(form)), "the wrong key fails the test");
  await form.getByLabel("API key", { exact: true }).fill(apiKey);
  await form.getByRole("button", { name: "Test connection" }).click();
  const host = SERVICES.replace(/^http:\/\//, "");
  await until(async () => (await msgs(form)).includes(`Connection works: ${host}`), "the test passes with the account hint");
  await shot(page, "form-action");
  await checkLabels(page, "the API key form");
  await form.getByRole("button", { name: "Create connection" }).click();
  await form.waitFor({ state: "detached" });
  const apiRow = connRow(page, "CRM API");
  await apiRow.waitFor();
  check((await apiRow.locator(".pill").textContent()) === "Active", "the API key connection is Active");
  check((await apiRow.locator(".account-hint").textContent()) === host, "its account hint is the host");
  check(await apiRow.locator('img.provider-icon[alt="API key"]').count() === 1, "its icon");
  const apiConn = (await control("api", { key: KEY2, method: "GET", path: "/orgs/c/connections?provider=api_key" })).json[0];
  check(apiConn.credentials.header && apiConn.credentials.api_key === `****${apiKey.slice(-4)}`, "stored with the header, masked");
  pass("api_key_create");

  // ---- MCP server with a secret header.
  const mcpKey = typed(`mcp-secret-${Date.now()}-abcdef`);
  await control("services_set", { mcp_key: mcpKey });
  form = await openForm("MCP server", "Connect MCP server");
  await form.getByLabel("Connection name").fill("Docs tools");
  await form.getByLabel("Server URL").fill(`${SERVICES}/mcp/new`);
  await form.getByLabel("Header name 1", { exact: true }).fill("X-Mcp-Key");
  await form.getByLabel("Header value 1", { exact: true }).fill(typed("mcp-wrong-secret-000000"));
  check((await form.getByLabel("Header value 1", { exact: true }).getAttribute("type")) === "password", "header values are secret fields");
  await form.getByRole("button", { name: "Test connection" }).click();
  await until(async () => /Test failed: .*401/.test(await msgs(form)), "the wrong header fails the test");
  await form.getByLabel("Header value 1", { exact: true }).fill(mcpKey);
  await form.getByRole("button", { name: "Add header" }).click();
  await form.getByLabel("Header name 2", { exact: true }).fill("Bad Header");
  await form.getByLabel("Header value 2", { exact: true }).fill("x");
  await form.getByRole("button", { name: "Test connection" }).click();
  await until(async () => (await msgs(form)).includes('"Bad Header" is not a header name'), "a bad header name is named");
  await form.getByRole("button", { name: "Remove header name 2" }).click();
  await form.getByRole("button", { name: "Test connection" }).click();
  await until(async () => (await msgs(form)).includes("Connection works: Demo MCP (2 tools)"), "the MCP test names the server and its tools");
  await checkLabels(page, "the MCP form");
  await shot(page, "form-mcp");
  await form.getByRole("button", { name: "Create connection" }).click();
  await form.waitFor({ state: "detached" });
  const mcpRow = connRow(page, "Docs tools");
  await mcpRow.waitFor();
  check((await mcpRow.locator(".account-hint").textContent()) === "Demo MCP (2 tools)", "the MCP account hint");
  pass("mcp_create");

  // ---- OAuth 2.0: create (inactive), Connect through the fake authorize page, back here active.
  const oa = await control("oauth_info");
  form = await openForm("OAuth 2.0", "Connect OAuth 2.0");
  await form.getByLabel("Connection name").fill("Billing CRM");
  await form.getByLabel("Client ID").fill("client-not-registered");
  await form.getByLabel("Client secret").fill(oa.client_secret);
  await form.getByLabel("Authorization URL").fill(`${oa.base}/authorize`);
  await form.getByLabel("Token URL").fill(`${oa.base}/token?x=1`);
  await form.getByLabel("Scopes (optional)").fill("read write");
  await form.getByLabel("API base URL").fill(`${oa.base}/api`);
  await form.getByLabel("Test path (optional)").fill("/me");
  await form.getByLabel("Parameter 1", { exact: true }).fill("prompt");
  await form.getByLabel("Value 1", { exact: true }).fill("consent");
  await form.getByRole("button", { name: "Create connection" }).click();
  await until(async () => (await msgs(form)).includes("Type an http or https URL"), "the token URL with a query is refused here");
  await form.getByLabel("Token URL").fill(`${oa.base}/token`);
  await form.getByRole("button", { name: "Test connection" }).click();
  await until(async () => (await msgs(form)).includes("The settings are valid"), "an unsaved OAuth test checks the settings");
  await form.getByRole("button", { name: "Create connection" }).click();
  await until(async () => (await msgs(form)).includes("Billing CRM is created."), "created, waiting for its sign-in");
  await checkLabels(page, "the OAuth connect step");
  // A client the service does not know: its authorize page refuses; back here, the banner says so.
  await form.getByRole("button", { name: "Connect" }).click();
  await page.waitForURL((u) => u.href.startsWith(`${oa.base}/authorize?`));
  await page.goto(`${URL0}/console/#/connections`);
  await until(async () => /Billing CRM is not connected: sign in needed/.test(await page.locator(".banner .msg").textContent()), "the failed sign-in in words");
  await page.locator(".banner").getByRole("button", { name: "Dismiss" }).click();
  check(await page.locator(".banner .msg").count() === 0, "the banner is dismissed");
  // The right client id, then the sign-in from Manage connection.
  await connRow(page, "Billing CRM").getByRole("button", { name: "Edit Billing CRM" }).click();
  let manage = page.getByRole("dialog", { name: "Manage connection" });
  await manage.getByLabel("Client ID").fill(oa.client_id);
  await manage.getByRole("button", { name: "Update credentials" }).click();
  await until(async () => (await msgs(manage)).includes("Credentials updated."), "the client id is updated");
  await roundTrip(() => manage.locator(".section-form", { has: page.getByRole("heading", { name: "Sign-in" }) })
    .getByRole("button").click(), "back from the OAuth sign-in");
  const oauthBanner = page.locator(".banner .msg");
  const oRow = connRow(page, "Billing CRM");
  await until(async () => (await oauthBanner.textContent()) === `Billing CRM is connected (${oa.base.replace(/^http:\/\//, "")}).`, "the success banner after the callback");
  await until(async () => (await oRow.locator(".account-hint").textContent().catch(() => "")) === oa.base.replace(/^http:\/\//, ""), "the account hint from the first test");
  await until(async () => (await oRow.locator(".pill").textContent()) === "Active", "the OAuth connection is Active");
  check(urls.some((u) => u.startsWith(`${oa.base}/authorize?`) && u.includes("prompt=consent") && u.includes("code_challenge_method=S256")),
    "the browser went to the service's authorize page with the extra parameter");
  check(urls.some((u) => u.includes("/oauth/callback?")), "and came back through the gateway's callback");
  await shot(page, "connections-actions");
  pass("oauth2_connect");

  // ---- The service revokes the refresh token: reconnect needed; Reconnect makes it active.
  await control("oauth_revoke");
  await oRow.getByRole("button", { name: "Edit Billing CRM" }).click();
  manage = page.getByRole("dialog", { name: "Manage connection" });
  await manage.getByRole("button", { name: "Test connection" }).click();
  await until(async () => (await msgs(manage)).includes("Test failed: reconnect needed"), "the test says reconnect needed");
  await until(async () => (await manage.locator(".pill").textContent()) === "Inactive", "Inactive in the dialog");
  await manage.getByRole("button", { name: "Close" }).first().click();
  await until(async () => (await oRow.locator(".pill").textContent()) === "Inactive", "Inactive in the list");
  check((await oRow.locator(".conn-error").textContent()).includes("reconnect needed"), "the row says reconnect needed");
  await oRow.getByRole("button", { name: "Edit Billing CRM" }).click();
  manage = page.getByRole("dialog", { name: "Manage connection" });
  const again = manage.getByRole("button", { name: "Reconnect" });
  await again.waitFor();
  await checkLabels(page, "Manage connection of an OAuth connection");
  await shot(page, "manage-reconnect");
  await roundTrip(() => again.click(), "back from the reconnect");
  await until(async () => (await page.locator(".banner .msg").textContent()).includes("Billing CRM is connected"), "connected again");
  await until(async () => (await connRow(page, "Billing CRM").locator(".pill").textContent()) === "Active", "Active again");
  const ot = (await control("api", { key: KEY2, method: "POST", path: `/orgs/c/connections/${(await control("api", { key: KEY2, method: "GET", path: "/orgs/c/connections?provider=oauth2" })).json[0].id}/test` })).json;
  check(ot.ok === true, `the reconnected token works (${JSON.stringify(ot)})`);
  pass("oauth2_reconnect");

  // ---- Intercom: nothing to type; Create, then Connect from the row.
  form = await openForm("Intercom", "Connect Intercom");
  check(!(await form.getByRole("button", { name: "Test connection" }).isVisible()), "nothing to test before signing in");
  check((await form.locator(".signin-note").textContent()).includes("Nothing to type"), "the form says there is nothing to type");
  await form.getByLabel("Connection name").fill("Support desk");
  await form.getByRole("button", { name: "Create connection" }).click();
  await until(async () => (await msgs(form)).includes("Support desk is created."), "the Intercom connection is created");
  await form.getByRole("button", { name: "Later" }).click();
  const iRow = connRow(page, "Support desk");
  await until(async () => (await iRow.locator(".pill").textContent()) === "Inactive", "inactive until signed in");
  check((await iRow.locator(".conn-error").textContent()).includes("sign in needed"), "the row says sign in needed");
  await roundTrip(() => iRow.getByRole("button", { name: "Connect Support desk", exact: true }).click(), "back from the Intercom sign-in");
  await until(async () => (await page.locator(".banner .msg").textContent()) === "Support desk is connected (Acme Workspace).", "Intercom connected, its workspace named");
  await iRow.getByRole("button", { name: "Edit Support desk" }).click();
  manage = page.getByRole("dialog", { name: "Manage connection" });
  await manage.getByRole("button", { name: "Test connection" }).click();
  await until(async () => (await msgs(manage)).includes("Connection works: Acme Workspace"), "the Intercom test names the workspace");
  check(await manage.getByRole("button", { name: "Update credentials" }).count() === 0, "no credentials to update");
  await manage.getByRole("button", { name: "Close" }).first().click();
  await until(async () => (await iRow.locator(".account-hint").textContent()) === "Acme Workspace", "the workspace as account hint");
  pass("intercom_connect");

  // ---- Edit an API key connection: rename; the service rotates its key; update it.
  await apiRow.getByRole("button", { name: "Edit CRM API" }).click();
  manage = page.getByRole("dialog", { name: "Manage connection" });
  const keyField = manage.getByLabel("API key", { exact: true });
  check((await keyField.inputValue()) === "" && (await keyField.getAttribute("placeholder")) === `****${apiKey.slice(-4)} (unchanged)`, "the key is shown masked only");
  await manage.getByLabel("Connection name").fill("CRM API (prod)");
  await manage.getByRole("button", { name: "Save name" }).click();
  await until(async () => (await msgs(manage)).includes("Name saved."), "renamed");
  const apiKey2 = typed(`sk-live-${Date.now()}-browserKeyTwo`);
  await control("services_set", { api_key: apiKey2 });
  await manage.getByRole("button", { name: "Test connection" }).click();
  await until(async () => /Test failed: .*401/.test(await msgs(manage)), "the old key fails");
  await until(async () => (await manage.locator(".pill").textContent()) === "Inactive", "inactive with the old key");
  await keyField.fill(apiKey2);
  await manage.getByRole("button", { name: "Update credentials" }).click();
  await until(async () => (await msgs(manage)).includes("Credentials updated."), "the new key is saved");
  await until(async () => (await manage.locator(".pill").textContent()) === "Active", "active with the new key");
  check((await keyField.inputValue()) === "", "the typed key is cleared");
  await manage.getByRole("button", { name: "Close" }).first().click();
  await connRow(page, "CRM API (prod)").waitFor();
  pass("action_edit");

  // ---- Continue with Facebook.
  if (process.env.SB_META_SIGNIN === "1") await metaSigninSteps(page, { msgs });
  else {
    form = await openForm("WhatsApp", "Connect WhatsApp");
    await form.getByLabel("Access token").waitFor();
    const cfg = await page.evaluate(() => fetch("config.json").then((r) => r.json()));
    check(cfg.meta_signin === null, `Meta sign-in is not configured (${JSON.stringify(cfg)})`);
    check(await form.getByRole("button", { name: "Continue with Facebook" }).count() === 0, "no Continue with Facebook without a Meta app");
    await form.getByRole("button", { name: "Close" }).click();
    pass("meta_signin_hidden");
  }

  // ---- No secret in the page (markup and field values), any URL or any API answer.
  const oauthSecrets = (await control("oauth_secrets")).secrets;
  const all = secrets.concat(oauthSecrets);
  const dom = await page.evaluate(() => document.documentElement.outerHTML
    + [...document.querySelectorAll("input, textarea")].map((e) => e.value).join("\n"));
  const inDom = all.filter((x) => dom.includes(x));
  check(inDom.length === 0, `secrets in the page: ${inDom.map((x) => `${x.slice(0, 6)}…`)}`);
  const inUrls = urls.filter((u) => all.some((x) => u.includes(x) || u.includes(encodeURIComponent(x))));
  check(inUrls.length === 0, `secrets in URLs: ${inUrls.join(", ")}`);
  const inBodies = all.filter((x) => x !== KEY2 && bodies.some((b) => b.includes(x)));
  check(inBodies.length === 0, `secrets in API answers: ${inBodies.map((x) => `${x.slice(0, 6)}…`)}`);
  check(bodies.length > 10, `API answers were recorded (${bodies.length})`);
  check(await page.evaluate(() => localStorage.length) === 0, "nothing in localStorage");
  check(errors.length === 0, `no script error (${errors.join(" | ")})`);
  pass("no_secret_in_page");
  await context.close();
}

// Continue with Facebook (gateway with a Meta app): the fake dialog's Cancel, a code Meta
// refuses, then a code that creates connections.
async function metaSigninSteps(page, { msgs }) {
  const start = async (name) => {
    await page.getByRole("button", { name: "Add integration" }).click();
    await page.getByRole("dialog", { name: "Add integration" }).getByRole("button", { name: new RegExp(`^${name}`) }).click();
    const form = page.getByRole("dialog", { name: `Connect ${name}` });
    const fb = form.getByRole("button", { name: "Continue with Facebook" });
    await fb.waitFor();
    return { form, fb };
  };
  const banner = page.locator(".banner .msg");
  const countNow = async () => Number(await page.locator(".badge.count").textContent());

  let { form, fb } = await start("WhatsApp");
  await shot(page, "form-whatsapp-facebook");
  await checkLabels(page, "the WhatsApp form with Continue with Facebook");
  await fb.click();
  await page.waitForURL(/\/dialog\/oauth\?/);
  const seen = (await control("meta_dialog")).seen.at(-1);
  check(seen.redirect_uri === `${URL0}/console/` && seen.response_type === "code" && /^[0-9a-f]{32}$/.test(seen.state),
    `the dialog was opened with the console as redirect and a state (${JSON.stringify(seen)})`);
  await page.locator("#no").click();
  await page.waitForURL(/\/console\/#\/connections$/);
  await until(async () => /Facebook sign-in failed: Permissions error \(code 200\)/.test(await banner.textContent()), "the cancelled dialog in words");
  pass("meta_signin_cancelled");

  const count0 = await countNow();
  await control("meta_dialog", { code: "fb-code-already-used" });
  ({ form, fb } = await start("Messenger"));
  await fb.click();
  await page.waitForURL(/\/dialog\/oauth\?/);
  await page.locator("#yes").click();
  await page.waitForURL(/\/console\/#\/connections$/);
  await until(async () => /Facebook sign-in failed: .+\(.+\)/.test(await banner.textContent()), "Meta's refusal with its code");
  const refusal = await banner.textContent();
  check(/100|36009|used/.test(refusal), `Meta's code or message is shown (${refusal})`);
  check(!page.url().includes("code="), "the code left the address bar");
  check(await countNow() === count0, "nothing was created");
  pass("meta_signin_refused");

  await control("meta_dialog", { code: "fb-code-good-0001" });
  ({ form, fb } = await start("WhatsApp"));
  await fb.click();
  await page.waitForURL(/\/dialog\/oauth\?/);
  await page.locator("#yes").click();
  await page.waitForURL(/\/console\/#\/connections$/);
  await until(async () => (await banner.textContent()).startsWith("Connected with Facebook"), "the connections created");
  const created = page.getByRole("list", { name: "Connections created" }).locator("li");
  check(await created.count() >= 1, "the banner lists them");
  await until(async () => await countNow() > count0, "they are in the list");
  check(!page.url().includes("code="), "the code left the address bar");
  const exchanges = (await control("graph_requests", { path: "/oauth/access_token" })).requests
    .map((r) => ({ ...r.query, ...r.params }));
  const sent = exchanges.filter((q) => q.code === "fb-code-good-0001").at(-1) || {};
  check(sent.redirect_uri === `${URL0}/console/`, `the exchange used the dialog's redirect_uri (${JSON.stringify(sent)})`);
  await shot(page, "connections-facebook");
  pass("meta_signin_created");
}

main().then(() => {
  writeFileSync(process.env.SB_SUMMARY, JSON.stringify(summary));
  console.log(`${summary.passed.length} passed, 0 failed, ${Object.keys(summary.skipped).length} skipped`);
}).catch((e) => {
  writeFileSync(process.env.SB_SUMMARY, JSON.stringify(summary));
  console.error(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
