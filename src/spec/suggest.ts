// "Did you mean" suggestions: the closest candidate by edit distance, if it is close enough to be
// a plausible typo rather than a different word.

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array(rows * cols).fill(0);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[(i - 1) * cols + j]! + 1, d[i * cols + j - 1]! + 1, d[(i - 1) * cols + j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[(i - 2) * cols + j - 2]! + 1);
      d[i * cols + j] = best;
    }
  }
  return d[rows * cols - 1]!;
}

/** Lowercase without separators, so `max_spot_price`, `MaxSpotPrice` and `maxSpotPrice` compare equal. */
function fold(s: string): string {
  return s.toLowerCase().replace(/[-_\s]/g, '');
}

export function closestMatch(input: string, candidates: readonly string[]): string | undefined {
  if (input.length > 100) return undefined;
  const folded = fold(input);
  const exact = candidates.find((c) => fold(c) === folded);
  if (exact !== undefined) return exact;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(folded, fold(candidate));
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  if (best === undefined) return undefined;
  // A third of the word may be wrong (at least 1, at most 3 edits): "spto" -> "spot", not "aws" -> "local".
  const allowed = Math.min(3, Math.max(1, Math.floor(Math.max(folded.length, fold(best).length) / 3)));
  return bestDistance <= allowed ? best : undefined;
}
