// Turns log text from storage, read in chunks of any size, into the lines a person should see.
// A chunk may end mid-line (a line still being written, or the job's last line without a
// newline); a line may hold carriage-return progress (tqdm redraws its bar with `\r` and prints
// a newline only at the end). Terminal semantics decide: what follows the last `\r` of a line is
// what the line shows.

/**
 * What a line drawn with carriage returns shows: the text after its last `\r` that is not empty
 * (so `text\r\n` line endings and a bar that ends with `\r` keep their text).
 */
export function collapseCarriageReturns(line: string): string {
  if (!line.includes('\r')) return line;
  const parts = line.split('\r');
  for (let i = parts.length - 1; i >= 0; i--) if (parts[i] !== '') return parts[i] as string;
  return '';
}

/** Assembles chunks of one attempt's log into whole lines, each collapsed as a terminal shows it. */
export class LogLines {
  private partial = '';

  /** The complete lines `text` finishes (without their newlines). */
  push(text: string): string[] {
    if (!text) return [];
    const joined = this.partial + text;
    const parts = joined.split('\n');
    this.partial = parts.pop() as string;
    return parts.map(collapseCarriageReturns);
  }

  /** The unfinished last line as it shows now (a progress bar's latest state), if any. */
  pending(): string | undefined {
    if (this.partial === '') return undefined;
    return collapseCarriageReturns(this.partial);
  }

  /** Ends the stream: the unfinished line, if any, becomes a line of its own. */
  flush(): string | undefined {
    const last = this.pending();
    this.partial = '';
    return last;
  }
}
