// A StateStore in memory, for reconciler unit tests (same contract as the file store).
import type { RunEvent, RunStatus, StateStore } from '../../src/state/types.js';

export class MemoryStore implements StateStore {
  readonly statuses = new Map<string, RunStatus>();
  readonly events = new Map<string, RunEvent[]>();
  writes = 0;

  async open(): Promise<void> {}
  async close(): Promise<void> {}
  async listRuns(): Promise<string[]> {
    return [...this.statuses.keys()].sort();
  }
  async getStatus(run: string): Promise<RunStatus | undefined> {
    const s = this.statuses.get(run);
    return s ? (structuredClone(s) as RunStatus) : undefined;
  }
  async putStatus(status: RunStatus): Promise<void> {
    this.writes++;
    this.statuses.set(status.run, structuredClone(status));
  }
  async deleteStatus(run: string): Promise<void> {
    this.statuses.delete(run);
  }
  async appendEvents(run: string, events: RunEvent[]): Promise<void> {
    const list = this.events.get(run) ?? [];
    for (const e of events) if (!list.some((x) => x.id === e.id)) list.push(structuredClone(e));
    this.events.set(run, list);
  }
  async readEvents(run: string): Promise<RunEvent[]> {
    return structuredClone(this.events.get(run) ?? []);
  }
}
