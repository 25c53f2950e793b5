// What the console knows about each service: its name, icon, the line on what connecting
// it enables, its search terms, its credential fields (with the checks the gateway makes,
// so a mistake is named before anything is sent) and, for Meta, the setup steps.

const META_FIELDS = [
  { key: "access_token", label: "Access token", secret: true,
    hint: "A long-lived Page or system-user token with the messaging permissions." },
  { key: "app_secret", label: "App secret", secret: true,
    hint: "Meta app → App settings → Basic → App secret. Used to check webhook signatures." },
  { key: "verify_token", label: "Verify token", secret: false,
    hint: "Any string you choose; type the same one in the Meta app's webhook settings." },
];

// Channels: messages in and out.
const CHANNELS = {
  whatsapp: {
    name: "WhatsApp", icon: "icons/whatsapp.svg", kind: "channel", meta: true, terms: "whatsapp cloud api meta phone number business",
    blurb: "Answer customers on your WhatsApp Business number through the Cloud API.",
    fields: [...META_FIELDS, { key: "waba_id", label: "WhatsApp Business Account ID (optional)", secret: false, optional: true,
      hint: "For the message templates: WhatsApp Manager → Account tools. Left empty, it is found from the bound phone number." }],
    externalLabel: "Phone number ID",
    externalHint: "WhatsApp Manager → Phone numbers → Phone number ID.",
    webhookFields: "messages",
  },
  messenger: {
    name: "Messenger", icon: "icons/messenger.svg", kind: "channel", meta: true, terms: "messenger facebook page meta",
    blurb: "Reply to messages sent to your Facebook Page.",
    fields: META_FIELDS, externalLabel: "Page ID",
    externalHint: "The Page's ID (Page → About → Page transparency).",
    webhookFields: "messages, messaging_postbacks, message_deliveries, message_reads, message_reactions",
  },
  instagram: {
    name: "Instagram", icon: "icons/instagram.svg", kind: "channel", meta: true, terms: "instagram direct dm meta",
    blurb: "Handle Instagram Direct messages of your professional account.",
    fields: META_FIELDS, externalLabel: "Instagram account ID",
    externalHint: "The Instagram professional account's ID linked to your Page.",
    webhookFields: "messages, messaging_postbacks, messaging_seen, message_reactions",
  },
  telegram: {
    name: "Telegram", icon: "icons/telegram.svg", kind: "channel", meta: false, terms: "telegram bot botfather",
    blurb: "Connect a Telegram bot and chat with the people who message it.",
    fields: [{ key: "bot_token", label: "Bot token", secret: true,
      hint: "From @BotFather: /newbot or /token, like 123456789:AA…" }],
    externalLabel: "Bot ID",
    externalHint: "The digits before the colon of the bot token; leave empty to use the connection's bot.",
    externalOptional: true,
  },
};

// Action connections (contract section 9): services the assistants' Actions call. Their
// forms have typed controls besides plain fields: "headerMode" (where an API key goes),
// "pairs" (rows of name and value, as an object). "signin" marks OAuth connections, which
// are created inactive and become active once someone signs in (Connect / Reconnect).
const HEADER_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Whether 'u' is what the gateway takes as a service URL: http(s), a host, no userinfo, query or fragment. */
export function serviceUrlOk(u) {
  const m = /^https?:\/\/(.*)$/.exec(u);
  if (!m || !m[1] || m[1][0] === "/" || u.length > 2048) return false;
  if (/[?#@\\\s]/.test(m[1]) || /[^\x21-\x7e]/.test(m[1])) return false;
  return !m[1].includes("/..");
}

function pathOk(p) {
  return p[0] === "/" && !p.includes("..") && !/[?#\\ ]/.test(p);
}

const TEST_PATH = { key: "test_path", label: "Test path (optional)", optional: true, placeholder: "/me",
  hint: "Requested under the base URL by Test connection; a 2xx answer passes. Without it, the base URL itself." };

export const PROVIDERS = Object.assign(CHANNELS, {
  api_key: {
    name: "API key", icon: "icons/api_key.svg", kind: "action",
    blurb: "Call any HTTP API with a key the gateway keeps secret.",
    terms: "http rest api key token bearer header query",
    fields: [
      { key: "base_url", label: "Base URL", type: "url", placeholder: "https://api.example.com/v1",
        hint: "Every request of the assistant goes under this address, and only there." },
      { key: "api_key", label: "API key", secret: true, hint: "Sent on every request; never shown again." },
      { key: "header", label: "Send the key as", control: "headerMode", optional: true },
      TEST_PATH,
    ],
    validate(c) {
      if (c.base_url !== undefined && !serviceUrlOk(c.base_url)) return ["base_url", "Type an http or https URL without query or fragment."];
      if (c.header !== undefined && !HEADER_NAME.test(c.header.startsWith("query:") ? c.header.slice(6) : c.header)) {
        return ["header", "A header or parameter name has only letters, digits, - and _ (at most 64)."];
      }
      if (c.test_path !== undefined && !pathOk(c.test_path)) return ["test_path", "A path starts with / and has no .., query or spaces."];
      return null;
    },
  },
  mcp: {
    name: "MCP server", icon: "icons/mcp.svg", kind: "action",
    blurb: "Give assistants the tools of a Model Context Protocol server.",
    terms: "mcp model context protocol tools server",
    fields: [
      { key: "url", label: "Server URL", type: "url", placeholder: "https://mcp.example.com/mcp",
        hint: "The server's Streamable HTTP endpoint." },
      { key: "headers", label: "Headers", control: "pairs", secret: true, optional: true, max: 4,
        nameLabel: "Header name", valueLabel: "Header value", add: "Add header",
        hint: "Sent on every request, for example Authorization or X-Api-Key (at most 4). The values are kept secret." },
    ],
    validate(c) {
      if (c.url !== undefined && !serviceUrlOk(c.url)) return ["url", "Type an http or https URL without query or fragment."];
      if (c.headers) {
        const names = Object.keys(c.headers);
        if (names.length > 4) return ["headers", "At most 4 headers."];
        for (const n of names) {
          if (!HEADER_NAME.test(n)) return ["headers", `"${n}" is not a header name (letters, digits, - and _).`];
          if (!c.headers[n] || /[\r\n]/.test(c.headers[n]) || c.headers[n].length > 4096) return ["headers", `Type a single-line value for ${n}.`];
        }
      }
      return null;
    },
  },
  oauth2: {
    name: "OAuth 2.0", icon: "icons/oauth2.svg", kind: "action", signin: true,
    blurb: "Sign in to a service and let the gateway refresh its tokens.",
    terms: "oauth oauth2 sign in login token refresh pkce",
    fields: [
      { key: "client_id", label: "Client ID", hint: "From the OAuth app you registered at the service." },
      { key: "client_secret", label: "Client secret", secret: true },
      { key: "authorize_url", label: "Authorization URL", type: "url", placeholder: "https://auth.example.com/oauth/authorize" },
      { key: "token_url", label: "Token URL", type: "url", placeholder: "https://auth.example.com/oauth/token" },
      { key: "scopes", label: "Scopes (optional)", optional: true, placeholder: "read write", hint: "Separated by spaces, as the service names them." },
      { key: "base_url", label: "API base URL", type: "url", placeholder: "https://api.example.com",
        hint: "Requests with the access token go under this address, and only there." },
      TEST_PATH,
      { key: "authorize_params", label: "Extra authorization parameters", control: "pairs", optional: true, max: 16,
        nameLabel: "Parameter", valueLabel: "Value", add: "Add parameter", hint: "Added to the sign-in address, for example prompt = consent." },
    ],
    validate(c) {
      for (const k of ["authorize_url", "token_url", "base_url"]) {
        if (c[k] !== undefined && !serviceUrlOk(c[k])) return [k, "Type an http or https URL without query or fragment."];
      }
      if (c.test_path !== undefined && !pathOk(c.test_path)) return ["test_path", "A path starts with / and has no .., query or spaces."];
      for (const [n, v] of Object.entries(c.authorize_params || {})) {
        if (n.length > 64 || v.length > 1024) return ["authorize_params", `The parameter ${n.slice(0, 64)} is too long.`];
      }
      return null;
    },
    signinNote: "The redirect URI to register at the service is this gateway's /oauth/callback (its public URL + /oauth/callback).",
  },
  intercom: {
    name: "Intercom", icon: "icons/intercom.svg", kind: "action", signin: true,
    blurb: "Read and update your Intercom workspace.",
    terms: "intercom support helpdesk crm conversations",
    fields: [],
    signinNote: "Nothing to type: create the connection, then sign in to your Intercom workspace with Connect.",
  },
});

export function providerInfo(id) {
  return PROVIDERS[id] || { name: id, icon: "icons/action.svg", kind: "action", fields: [], blurb: "" };
}

/** The steps to paste into the Meta app for a Meta connection. */
export function metaSteps(info) {
  return [
    `Open your app on developers.facebook.com and add the ${info.name} product if it is not there.`,
    "In its Webhooks settings, paste the Callback URL below and the same Verify token you saved here, then Verify and save.",
    `Subscribe to the webhook fields: ${info.webhookFields}.`,
    "Bind the phone number, Page or account to an assistant (Assistants → Channels).",
  ];
}
