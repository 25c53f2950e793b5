// What the console knows about each service: its name, icon, the line on what connecting
// it enables, its credential fields and, for Meta, the setup steps.

const META_FIELDS = [
  { key: "access_token", label: "Access token", secret: true,
    hint: "A long-lived Page or system-user token with the messaging permissions." },
  { key: "app_secret", label: "App secret", secret: true,
    hint: "Meta app → App settings → Basic → App secret. Used to check webhook signatures." },
  { key: "verify_token", label: "Verify token", secret: false,
    hint: "Any string you choose; type the same one in the Meta app's webhook settings." },
];

export const PROVIDERS = {
  whatsapp: {
    name: "WhatsApp", icon: "icons/whatsapp.svg", meta: true,
    blurb: "Answer customers on your WhatsApp Business number through the Cloud API.",
    fields: [...META_FIELDS, { key: "waba_id", label: "WhatsApp Business Account ID (optional)", secret: false, optional: true,
      hint: "For the message templates: WhatsApp Manager → Account tools. Left empty, it is found from the bound phone number." }],
    externalLabel: "Phone number ID",
    externalHint: "WhatsApp Manager → Phone numbers → Phone number ID.",
    webhookFields: "messages",
  },
  messenger: {
    name: "Messenger", icon: "icons/messenger.svg", meta: true,
    blurb: "Reply to messages sent to your Facebook Page.",
    fields: META_FIELDS, externalLabel: "Page ID",
    externalHint: "The Page's ID (Page → About → Page transparency).",
    webhookFields: "messages, messaging_postbacks, message_deliveries, message_reads, message_reactions",
  },
  instagram: {
    name: "Instagram", icon: "icons/instagram.svg", meta: true,
    blurb: "Handle Instagram Direct messages of your professional account.",
    fields: META_FIELDS, externalLabel: "Instagram account ID",
    externalHint: "The Instagram professional account's ID linked to your Page.",
    webhookFields: "messages, messaging_postbacks, messaging_seen, message_reactions",
  },
  telegram: {
    name: "Telegram", icon: "icons/telegram.svg", meta: false,
    blurb: "Connect a Telegram bot and chat with the people who message it.",
    fields: [{ key: "bot_token", label: "Bot token", secret: true,
      hint: "From @BotFather: /newbot or /token, like 123456789:AA…" }],
    externalLabel: "Bot ID",
    externalHint: "The digits before the colon of the bot token; leave empty to use the connection's bot.",
    externalOptional: true,
  },
};

// Action connections (contract section 9) that this console does not create yet.
export const COMING_SOON = [
  { id: "api_key", name: "API key", blurb: "Call any HTTP API with a key the gateway keeps secret." },
  { id: "mcp", name: "MCP server", blurb: "Give assistants the tools of a Model Context Protocol server." },
  { id: "oauth2", name: "OAuth 2.0", blurb: "Sign in to a service and let the gateway refresh its tokens." },
  { id: "intercom", name: "Intercom", blurb: "Read and update your Intercom workspace." },
];

export function providerInfo(id) {
  return PROVIDERS[id] || { name: id, icon: "icons/action.svg", fields: [], blurb: "" };
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
