// The deletion guard: prune deletes runs whose spec files are gone, so a runs folder that is
// empty, missing or unreadable (a bad checkout, a wrong path, a mount that did not come up) must
// never read as "delete everything". Pure: `plan` and the controller both ask it, so a plan never
// shows a prune that apply would refuse, or the other way round. Like Argo CD's `allowEmpty`.

export interface PruneGuardInput {
  /** Names of the runs the spec files define (valid ones). */
  desired: readonly string[];
  /** Runs the store knows and has not deleted, with the file each came from. */
  stored: ReadonlyArray<{ run: string; file?: string }>;
  /** Spec files with errors: runs last defined there keep their last valid spec. */
  invalidFiles: readonly string[];
  /** Input paths that could not be read (missing folder, permissions), with why. */
  unreadable: readonly string[];
  /** The user said an empty folder really means "delete every run". */
  allowEmpty?: boolean;
}

/**
 * Why pruning must wait this pass, or undefined when it may go ahead. Only says no when prune
 * would actually delete something (a stored run with no spec).
 */
export function pruneRefusal(input: PruneGuardInput): string | undefined {
  const desired = new Set(input.desired);
  const invalid = new Set(input.invalidFiles);
  const doomed = input.stored
    .filter((s) => !desired.has(s.run) && !(s.file && invalid.has(s.file)))
    .map((s) => s.run)
    .sort();
  if (doomed.length === 0) return undefined;
  const which = `${doomed.length} run${doomed.length === 1 ? '' : 's'} (${list(doomed)})`;
  if (input.unreadable.length > 0) {
    return `not pruning ${which}: the runs folder could not be read (${list(input.unreadable)}); fix the path or permissions`;
  }
  if (input.invalidFiles.length > 0) {
    return `not pruning ${which} while spec files have errors (${list(input.invalidFiles)}): an invalid file may still define them; fix it first`;
  }
  if (input.desired.length === 0 && !input.allowEmpty) {
    return (
      `not pruning ${which}: the runs folder has no TrainingRuns at all, which looks like a bad checkout or a wrong path ` +
      'rather than a wish to delete everything; to really delete every run, pass --allow-empty-prune'
    );
  }
  return undefined;
}

function list(items: readonly string[]): string {
  const shown = items.slice(0, 5).join(', ');
  return items.length > 5 ? `${shown}, and ${items.length - 5} more` : shown;
}
