// The management API client. The key lives in sessionStorage (this tab only) and is sent
// as Authorization: Bearer on every call; it never goes into a URL.

const KEY = "switchboard.key";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message, headers, detail = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
    this.detail = detail; // the API's whole error object (a provider's own code, when it gives one)
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function describe(status, code, message) {
  if (message) return message;
  if (status === 404) return "Not found.";
  if (status === 429) return "Too many requests; try again shortly.";
  if (status >= 500) return `The gateway answered ${status}.`;
  return `Request failed (${status}${code ? `, ${code}` : ""}).`;
}

/**
 * Calls the API: api("GET", "/orgs/c/connections", {query: {take: 100}}) or with a body
 * (an object is sent as JSON, FormData as multipart). Resolves {data, headers, status};
 * rejects with ApiError (message in words from the API's error object).
 */
export async function api(method, path, { body, query, key } = {}) {
  const k = key || getKey();
  const headers = { Accept: "application/json" };
  if (k) headers.Authorization = `Bearer ${k}`;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [n, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(n, v);
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  let res;
  try {
    res = await fetch(url, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new ApiError(0, "network", "The gateway could not be reached.", new Headers());
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(res.status, err.code || "", describe(res.status, err.code, err.message), res.headers, err);
    if (res.status === 401 && !key) onUnauthorized(e);
    throw e;
  }
  return { data, headers: res.headers, status: res.status };
}

/** Every item of a list (pages of 100), up to 'max' items. */
export async function listAll(path, query = {}, max = 1000) {
  const out = [];
  for (let page = 1; out.length < max; page += 1) {
    const { data, headers } = await api("GET", path, { query: { ...query, page, take: 100 } });
    out.push(...data);
    const total = Number(headers.get("pagination-count") || out.length);
    if (data.length < 100 || out.length >= total) break;
  }
  return out;
}

/** A fresh command id for the reply box. */
export function commandId() {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return `console-${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

/** The file name of a Content-Disposition header (RFC 6266 filename* first), or "". */
function dispositionName(v) {
  if (!v) return "";
  const star = v.match(/filename\*\s*=\s*UTF-8''([^;]+)/i);
  if (star) { try { return decodeURIComponent(star[1].trim()); } catch { /* fall through */ } }
  const plain = v.match(/filename\s*=\s*"([^"]*)"/i) || v.match(/filename\s*=\s*([^;]+)/i);
  return plain ? plain[1].trim() : "";
}

/**
 * Fetches a protected file (media) with the key: {url, name} with an object URL for it
 * (revoke it when done) and the file name the gateway gave (Content-Disposition), or "".
 */
export async function fetchFile(path) {
  let res;
  try {
    res = await fetch(path, { headers: { Authorization: `Bearer ${getKey()}` }, cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new ApiError(0, "network", "The gateway could not be reached.", new Headers());
  }
  if (!res.ok) {
    let err = {};
    try { err = (await res.json()).error || {}; } catch { /* not JSON */ }
    throw new ApiError(res.status, err.code || "", describe(res.status, err.code, err.message), res.headers);
  }
  const name = dispositionName(res.headers.get("content-disposition"));
  return { url: URL.createObjectURL(await res.blob()), name };
}
