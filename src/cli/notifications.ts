// Wiring of the notifier (src/notify/) into the controller commands (reconcile, apply): where its
// lines go, and how long a command that is finishing waits for deliveries in flight.
import { Notifier } from '../notify/notifier.js';
import type { RunLeases } from '../reconciler/controller.js';
import type { RunctlMetrics } from '../reconciler/metrics.js';
import type { ProjectConfig } from '../spec/types.js';
import type { RunEvent, StateStore } from '../state/types.js';

/** How long a finishing `reconcile`/`apply` waits for notifications still being delivered. */
export const NOTIFICATION_DRAIN_MS = 10_000;

export function controllerNotifier(opts: {
  store: StateStore;
  project: ProjectConfig;
  metrics?: RunctlMetrics;
  leases?: RunLeases;
  print(line: string): void;
  onEvent(e: RunEvent): void;
  /** Called when a run's deliveries are done, so the controller can let go of its lease. */
  nudge(run: string): void;
}): Notifier {
  return new Notifier({
    store: opts.store,
    project: opts.project.notifications,
    metrics: opts.metrics,
    onEvent: opts.onEvent,
    onIdle: opts.leases ? (run) => opts.nudge(run) : undefined,
    mayAct: opts.leases ? (run) => opts.leases?.held(run) !== undefined : undefined,
    onError: (run, err) => opts.print(`${run}: notifications: ${err instanceof Error ? err.message : String(err)} (tried again on the run's next change)`),
  });
}

/**
 * Waits (at most 10 s; after Ctrl-C only for requests in flight) for deliveries, then stops the notifier. What is left stays owed in
 * the run's event log; the next controller sends it.
 */
export async function finishNotifications(notifier: Notifier, print: (line: string) => void, hurry?: AbortSignal, timeoutMs = NOTIFICATION_DRAIN_MS): Promise<void> {
  const left = await notifier.drain(timeoutMs, hurry);
  await notifier.stop();
  if (left > 0) {
    print(
      `runctl: ${left} notification${left === 1 ? ' is' : 's are'} not delivered yet (receiver slow or failing); the next \`runctl reconcile\` sends ${left === 1 ? 'it' : 'them'} (\`runctl describe RUN\` shows each attempt)`,
    );
  }
}
