// The bodies a notification is sent as. Pure. Shapes:
// - generic: runctl's own JSON, documented in docs/notifications.md;
// - slack: an incoming-webhook message, `text` (the fallback shown in notifications) plus Block Kit
//   `blocks` (a header, a mrkdwn section, a context line); section text is limited to 3000 chars,
//   header text to 150 (https://api.slack.com/messaging/webhooks, .../reference/block-kit/blocks);
// - discord: an execute-webhook body, `content` (at most 2000 chars) plus one embed (title <= 256,
//   description <= 4096, fields) and `allowed_mentions: {parse: []}` so text from a run can never
//   ping @everyone (https://discord.com/developers/docs/resources/webhook#execute-webhook).
import type { NotificationEvent, NotificationFormat } from './receivers.js';

/** What one notification says, whatever its format. Times are ISO 8601 (UTC). */
export interface NotificationMessage {
  run: string;
  uid?: string;
  event: NotificationEvent;
  /** The run's phase the event led to (e.g. Interrupted, Training, Completed). */
  phase: string;
  /** One sentence from the run's event log (never holds secrets: events do not). */
  message: string;
  /** When it happened (the run event's time). */
  time: string;
  generation: number;
  attempt: number;
  /** The delivery key: the same for every retry of this message, also sent as Idempotency-Key. */
  id: string;
  /** Commands that show more (no dashboard URL is known to the controller). */
  links: { describe: string; logs: string };
}

const TITLES: Record<NotificationEvent, string> = {
  Interrupted: 'interrupted',
  Resumed: 'resumed training',
  Failed: 'failed',
  Completed: 'completed',
  BudgetReached: 'reached its budget',
  CheckpointSyncStalled: 'checkpoint sync stalled',
};

// Discord embed colours (decimal RGB): red for failures, amber for trouble, green for good news.
const COLORS: Record<NotificationEvent, number> = {
  Interrupted: 0xf0a020,
  Resumed: 0x3080f0,
  Failed: 0xd03030,
  Completed: 0x30a050,
  BudgetReached: 0xf0a020,
  CheckpointSyncStalled: 0xf0a020,
};

/** `run quickstart interrupted (attempt 1): spot interruption notice` */
export function headline(m: NotificationMessage): string {
  return `run ${m.run} ${TITLES[m.event]} (attempt ${m.attempt})`;
}

/** The JSON body for a receiver of `format`. */
export function formatBody(format: NotificationFormat, m: NotificationMessage): Record<string, unknown> {
  switch (format) {
    case 'slack':
      return slackBody(m);
    case 'discord':
      return discordBody(m);
    default:
      return genericBody(m);
  }
}

function genericBody(m: NotificationMessage): Record<string, unknown> {
  return {
    run: m.run,
    ...(m.uid ? { uid: m.uid } : {}),
    event: m.event,
    phase: m.phase,
    message: m.message,
    time: m.time,
    generation: m.generation,
    attempt: m.attempt,
    id: m.id,
    links: m.links,
  };
}

function slackBody(m: NotificationMessage): Record<string, unknown> {
  const title = headline(m);
  return {
    text: clip(`${title}: ${m.message}`, 3000),
    blocks: [
      { type: 'header', text: { type: 'plain_text', text: clip(title, 150), emoji: false } },
      { type: 'section', text: { type: 'mrkdwn', text: clip(`*${escapeSlack(m.event)}* in phase *${escapeSlack(m.phase)}*\n${escapeSlack(m.message)}`, 3000) } },
      {
        type: 'context',
        elements: [{ type: 'mrkdwn', text: clip(`${m.time} · generation ${m.generation} · \`${escapeSlack(m.links.describe)}\``, 3000) }],
      },
    ],
  };
}

function discordBody(m: NotificationMessage): Record<string, unknown> {
  const title = headline(m);
  return {
    content: clip(`${title}: ${m.message}`, 2000),
    embeds: [
      {
        title: clip(title, 256),
        description: clip(m.message, 4096),
        color: COLORS[m.event],
        timestamp: m.time,
        fields: [
          { name: 'event', value: m.event, inline: true },
          { name: 'phase', value: clip(m.phase, 1024), inline: true },
          { name: 'attempt', value: String(m.attempt), inline: true },
          { name: 'more', value: clip(`\`${m.links.describe}\``, 1024), inline: false },
        ],
      },
    ],
    allowed_mentions: { parse: [] },
  };
}

/** Slack mrkdwn treats &, < and > as control characters (https://api.slack.com/reference/surfaces/formatting#escaping). */
function escapeSlack(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function clip(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}
