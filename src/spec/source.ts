// Turns a file into YAML text, refusing what is not a spec before the parser sees it: files over
// the size cap, binary files, text that is not UTF-8, and nothing at all.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';

/** Spec files (and runctl.yaml) larger than this are refused unread: 1 MiB. */
export const MAX_SPEC_BYTES = 1024 * 1024;

export type SourceResult =
  | { ok: true; text: string }
  | { ok: false; line: number; column: number; message: string };

/**
 * Reads `absPath` synchronously: validating a whole runs/ folder reads many small files, and a
 * synchronous read of each is several times faster than a promise per file.
 */
export function readSpecSource(absPath: string): SourceResult {
  let fd: number;
  try {
    fd = openSync(absPath, 'r');
  } catch (err) {
    return { ok: false, line: 1, column: 1, message: `cannot read the file: ${describeFsError(err)}` };
  }
  try {
    const stat = fstatSync(fd);
    if (stat.isDirectory()) return { ok: false, line: 1, column: 1, message: 'is a directory, not a YAML file' };
    if (!stat.isFile()) return { ok: false, line: 1, column: 1, message: 'is not a regular file' };
    if (stat.size > MAX_SPEC_BYTES) {
      return { ok: false, line: 1, column: 1, message: `file is ${formatSize(stat.size)}; spec files are limited to 1 MiB` };
    }
    // Read one byte past the expected size: a file that grew since fstat is caught, not truncated.
    let buffer = Buffer.allocUnsafe(stat.size + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        if (length > MAX_SPEC_BYTES) {
          return { ok: false, line: 1, column: 1, message: 'file is larger than 1 MiB; spec files are limited to 1 MiB' };
        }
        const bigger = Buffer.allocUnsafe(MAX_SPEC_BYTES + 1);
        buffer.copy(bigger, 0, 0, length);
        buffer = bigger;
      }
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
    }
    return decodeSpecBytes(buffer.subarray(0, length));
  } catch (err) {
    return { ok: false, line: 1, column: 1, message: `cannot read the file: ${describeFsError(err)}` };
  } finally {
    closeSync(fd);
  }
}

export function decodeSpecBytes(bytes: Uint8Array): SourceResult {
  if (bytes.length === 0) return { ok: false, line: 1, column: 1, message: 'file is empty; expected a TrainingRun document' };
  if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
    return { ok: false, line: 1, column: 1, message: 'file is UTF-16 encoded; save it as UTF-8' };
  }
  const nul = bytes.indexOf(0);
  if (nul !== -1) {
    const at = positionOfByte(bytes, nul);
    return { ok: false, ...at, message: `binary file (NUL byte at offset ${nul}); expected YAML text` };
  }
  if (!isUtf8(bytes)) {
    const bad = firstInvalidUtf8(bytes);
    const at = positionOfByte(bytes, bad);
    const hex = (bytes[bad] ?? 0).toString(16).padStart(2, '0');
    return { ok: false, ...at, message: `not valid UTF-8 (byte 0x${hex} at offset ${bad}); save the file as UTF-8` };
  }
  let text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  return { ok: true, text };
}

/** Offset of the first byte that does not start or continue a well-formed UTF-8 sequence. */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i] as number;
    let need: number;
    let min: number;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      min = 0x10000;
    } else {
      return i;
    }
    let cp = b & (0xff >> (need + 2));
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return bytes.length;
}

/** 1-based line and column of a byte offset, counting characters of the (mostly valid) text before it. */
function positionOfByte(bytes: Uint8Array, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset; i++) {
    if (bytes[i] === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  let column = 1;
  for (let i = lineStart; i < offset; i++) if (((bytes[i] as number) & 0xc0) !== 0x80) column++;
  return { line, column };
}

function formatSize(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  return code ?? (err instanceof Error ? err.message : String(err));
}
