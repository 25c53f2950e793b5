// The console's shell: sign-in, navigation between pages (#/name), sign-out.
import { api, getKey, setKey, setUnauthorizedHandler } from "./api.js";
import { clear } from "./dom.js";
import * as connections from "./connections.js";
import * as assistants from "./assistants.js";
import * as inbox from "./inbox.js";
import * as contacts from "./contacts.js";
import * as deadLetters from "./dead-letters.js";

const PAGES = {
  connections, assistants, inbox, contacts, "dead-letters": deadLetters,
};

const $ = (id) => document.getElementById(id);
let cleanup = null;

function showSignin(message) {
  if (cleanup) { cleanup(); cleanup = null; }
  $("shell").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("signin-key").value = "";
  $("signin-key").focus();
}

async function route() {
  if (!getKey()) { showSignin(); return; }
  $("signin").hidden = true;
  $("shell").hidden = false;
  const name = (location.hash.replace(/^#\/?/, "").split("/")[0]) || "connections";
  const page = PAGES[name] ? name : "connections";
  for (const a of document.querySelectorAll("nav a[data-page]")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (cleanup) { cleanup(); cleanup = null; }
  const main = clear($("main"));
  const result = PAGES[page].render(main);
  cleanup = typeof result === "function" ? result : null;
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("signin-key").value.trim();
  const err = $("signin-error");
  if (!key) { err.textContent = "Type the API key."; return; }
  const btn = ev.submitter || $("signin-form").querySelector("button");
  btn.disabled = true;
  err.textContent = "";
  try {
    await api("GET", "/orgs/c/assistants", { key, query: { take: 1 } });
    setKey(key);
    route();
  } catch (e) {
    err.textContent = e.status === 401 ? "This key is not valid (or was revoked)." : e.message;
  } finally {
    btn.disabled = false;
  }
});

$("signout").addEventListener("click", () => { setKey(null); showSignin("Signed out."); });
setUnauthorizedHandler(() => { setKey(null); showSignin("The key is no longer accepted; sign in again."); });
window.addEventListener("hashchange", route);
connections.captureReturn(); // back from Facebook's sign-in dialog: ?code&state, taken out of the URL
route();
