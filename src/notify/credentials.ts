// Webhook URLs that are credentials. Slack's and Discord's incoming webhooks accept a message from
// anyone who knows the URL (https://api.slack.com/messaging/webhooks: "Keep it secret, keep it
// safe"; Discord's webhook URL embeds the webhook token), so such a URL must not be committed:
// `validate` warns and points at `urlFrom`. The notifier never prints a URL: see redactUrl.

const TOKEN_PARAM = /^(?:token|access_token|auth|key|api[-_]?key|secret|sig|signature|code|password|pass)$/i;

/**
 * Why a plain `url` looks like it carries a credential, or undefined when it does not.
 * Recognises Slack (`hooks.slack.com/services/…`, `/workflows/…`, `/triggers/…`), Discord
 * (`discord.com/api/webhooks/…`, also discordapp.com and ptb./canary. hosts), user:password@ in the
 * URL, and query parameters named like tokens (token, key, api_key, sig, …).
 */
export function credentialInUrl(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  const host = url.hostname.toLowerCase();
  if (host === 'hooks.slack.com' && /^\/(?:services|workflows|triggers)\//.test(url.pathname)) return 'it is a Slack webhook URL, which is itself the credential';
  if (/^(?:(?:ptb|canary)\.)?discord(?:app)?\.com$/.test(host) && /^\/api(?:\/v\d+)?\/webhooks\//.test(url.pathname)) {
    return 'it is a Discord webhook URL, which embeds the webhook token';
  }
  if (url.username || url.password) return 'it has a user name or password in it';
  for (const name of url.searchParams.keys()) {
    if (TOKEN_PARAM.test(name)) return `its query parameter "${name}" looks like a token`;
  }
  return undefined;
}

/**
 * `text` with every appearance of the URL (whole, and its path and query on their own) replaced,
 * for error messages that libraries build from the request: a URL from `urlFrom` is a secret.
 */
export function redactUrl(text: string, raw: string | undefined): string {
  if (!raw) return text;
  let out = text.split(raw).join('<redacted URL>');
  try {
    const url = new URL(raw);
    const tail = `${url.pathname}${url.search}`;
    if (tail.length > 1) out = out.split(tail).join('/<redacted>');
    if (url.password) out = out.split(url.password).join('<redacted>');
  } catch {
    // not a URL: the whole string was replaced above
  }
  return out;
}
