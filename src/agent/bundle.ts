// Deterministic, content-addressed code bundles: a ustar .tar.gz of `code.path` with sorted
// entries and normalised metadata (mtime 0, uid/gid 0, no user names, modes 0644/0755), leaving
// out what .gitignore files and `code.exclude` leave out, and shipping what `code.include` asks for
// even when a .gitignore leaves it out (precedence: .gitignore < include < exclude). The id is the sha256 of the
// *uncompressed* tar stream, so it does not depend on the zlib build that compressed it: same
// content, same id, and a provider that already holds `bundles/<id>.tar.gz` uploads nothing.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, readFile, readdir, readlink, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import ignore, { type Ignore } from 'ignore';
import type { CodeSpec } from '../spec/types.js';

export interface BundleResult {
  /** sha256 (hex) of the uncompressed tar stream; the bundle's storage key is bundles/<sha256>.tar.gz. */
  sha256: string;
  /** Absolute path of the .tar.gz on this machine. */
  file: string;
  /** Size of the .tar.gz in bytes. */
  bytes: number;
  /** Regular files and symlinks in the bundle. */
  fileCount: number;
  /** Paths (relative to code.path) left out because they are symlinks leading outside the tree. */
  skippedSymlinks: string[];
  /** Bytes of the regular files in the bundle, before compression. */
  contentBytes: number;
  /** Files shipped only because `code.include` matched them (a .gitignore leaves them out), with sizes in bytes. */
  includedOnly: Array<{ path: string; bytes: number }>;
  /** `code.include` patterns that matched no file a .gitignore leaves out (likely a mistake). */
  includeUnmatched: string[];
}

/** What a bundle holds, without building it (`runctl plan --show-bundle`). */
export type BundleListing = Omit<BundleResult, 'sha256' | 'file' | 'bytes'> & {
  /** Every file and symlink in the bundle (forward slashes, relative to code.path), sorted, with sizes in bytes. */
  files: Array<{ path: string; bytes: number; viaInclude: boolean }>;
};

export interface BundleOptions {
  /** Where the .tar.gz is written; default `<repoRoot>/.runctl/bundles`. */
  outDir?: string;
}

export class BundleError extends Error {
  override name = 'BundleError';
}

type Entry =
  | { rel: string; kind: 'dir' }
  | { rel: string; kind: 'file'; abs: string; size: number; executable: boolean; viaInclude?: boolean }
  | { rel: string; kind: 'symlink'; target: string; viaInclude?: boolean };

interface IgnoreLevel {
  /** Absolute directory of the .gitignore; its patterns are relative to it. */
  dir: string;
  matcher: Ignore;
}

const BLOCK = 512;
/** Largest size an ustar header holds (11 octal digits). */
const MAX_USTAR_SIZE = 0o77777777777;

export async function createBundle(repoRoot: string, code: CodeSpec, opts: BundleOptions = {}): Promise<BundleResult> {
  const repo = path.resolve(repoRoot);
  const outDir = path.resolve(opts.outDir ?? path.join(repo, '.runctl', 'bundles'));
  const collected = await collectEntries(repo, code, outDir);
  const { entries } = collected;

  await mkdir(outDir, { recursive: true });
  const tmp = path.join(outDir, `.bundle-${process.pid}-${Date.now()}.tmp`);
  const hash = createHash('sha256');
  try {
    await pipeline(Readable.from(tarStream(entries, hash)), createGzip({ level: 9 }), createWriteStream(tmp));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const sha256 = hash.digest('hex');
  const file = path.join(outDir, `${sha256}.tar.gz`);
  await rename(tmp, file);
  const { size } = await stat(file);
  return { sha256, file, bytes: size, ...summary(collected) };
}

/**
 * What createBundle would put in the bundle of `code`, without writing it: every file with its
 * size, and what `code.include` adds. Throws BundleError like createBundle.
 */
export async function listBundle(repoRoot: string, code: CodeSpec, opts: BundleOptions = {}): Promise<BundleListing> {
  const repo = path.resolve(repoRoot);
  const outDir = path.resolve(opts.outDir ?? path.join(repo, '.runctl', 'bundles'));
  const collected = await collectEntries(repo, code, outDir);
  const files = collected.entries.flatMap((e) =>
    e.kind === 'dir' ? [] : [{ path: e.rel, bytes: e.kind === 'file' ? e.size : 0, viaInclude: e.viaInclude === true }],
  );
  return { ...summary(collected), files };
}

interface Collected {
  entries: Entry[];
  skippedSymlinks: string[];
  includeUnmatched: string[];
}

function summary(c: Collected): Omit<BundleResult, 'sha256' | 'file' | 'bytes'> {
  const files = c.entries.filter((e) => e.kind !== 'dir');
  return {
    fileCount: files.length,
    skippedSymlinks: c.skippedSymlinks,
    contentBytes: files.reduce((sum, e) => sum + (e.kind === 'file' ? e.size : 0), 0),
    includedOnly: files.filter((e) => e.viaInclude).map((e) => ({ path: e.rel, bytes: e.kind === 'file' ? e.size : 0 })),
    includeUnmatched: c.includeUnmatched,
  };
}

async function collectEntries(repo: string, code: CodeSpec, outDir: string): Promise<Collected> {
  const root = path.resolve(repo, code.path);
  const rootStat = await stat(root).catch(() => undefined);
  if (!rootStat?.isDirectory()) {
    throw new BundleError(`code.path "${code.path}" is not a directory (looked for ${root})`);
  }
  const alwaysSkip = new Set([path.join(repo, '.runctl'), outDir]);
  const levels = await ancestorIgnores(repo, root);
  const excluded = ignore().add(code.exclude);
  const include = includeMatcher(code.include ?? []);
  const skippedSymlinks: string[] = [];
  const entries: Entry[] = [];
  await walk(root, '', levels, { root, excluded, include, alwaysSkip, entries, skippedSymlinks });
  entries.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  skippedSymlinks.sort();
  return { entries, skippedSymlinks, includeUnmatched: include ? include.unmatched() : [] };
}

/**
 * code.include as a matcher: `matches(rel)` for a file a .gitignore leaves out; `mayMatchInside(dirRel)`
 * says whether an ignored folder must be walked at all (a pattern with a literal first segment
 * that differs cannot match inside it), so an ignored .venv or node_modules is not read for nothing.
 */
interface IncludeMatcher {
  matches(rel: string): boolean;
  mayMatchInside(dirRel: string): boolean;
  unmatched(): string[];
}

function includeMatcher(patterns: readonly string[]): IncludeMatcher | undefined {
  if (patterns.length === 0) return undefined;
  const all = ignore().add([...patterns]);
  const positive = patterns.filter((p) => !p.startsWith('!'));
  const each = positive.map((p) => ({ pattern: p, matcher: ignore().add(p), used: false }));
  const segments = positive.map((p) => p.replace(/^\//, '').replace(/\/+$/, '').split('/'));
  return {
    matches(rel) {
      if (!all.ignores(rel)) return false;
      for (const e of each) if (!e.used && e.matcher.ignores(rel)) e.used = true;
      return true;
    },
    mayMatchInside(dirRel) {
      const dir = dirRel.split('/');
      return segments.some((segs) => {
        if (segs.length === 1) return true; // no slash: matches at any depth
        for (let i = 0; i < Math.min(segs.length, dir.length); i++) {
          const s = segs[i] as string;
          if (s === '**') return true;
          if (/[*?[\\]/.test(s)) continue; // a wildcard segment may match this folder
          if (s !== dir[i]) return false;
        }
        return true;
      });
    },
    unmatched() {
      return each.filter((e) => !e.used).map((e) => e.pattern);
    },
  };
}

/** .gitignore files between the repository root and the code root apply to the code, as in git. */
async function ancestorIgnores(repo: string, root: string): Promise<IgnoreLevel[]> {
  const rel = path.relative(repo, root);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return [];
  const levels: IgnoreLevel[] = [];
  let dir = repo;
  for (const part of ['', ...rel.split(path.sep).slice(0, -1)]) {
    dir = part ? path.join(dir, part) : dir;
    const matcher = await readGitignore(dir);
    if (matcher) levels.push({ dir, matcher });
  }
  return levels;
}

async function readGitignore(dir: string): Promise<Ignore | undefined> {
  const text = await readFile(path.join(dir, '.gitignore'), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : ignore().add(text);
}

interface WalkContext {
  root: string;
  excluded: Ignore;
  include: IncludeMatcher | undefined;
  alwaysSkip: Set<string>;
  entries: Entry[];
  skippedSymlinks: string[];
}

/**
 * Adds the entries under dirAbs. `onlyIncluded`: the folder is one a .gitignore leaves out, walked
 * only for what code.include asks for; its folders are added only when something in them is.
 * Returns the number of entries added.
 */
async function walk(dirAbs: string, dirRel: string, levels: IgnoreLevel[], ctx: WalkContext, onlyIncluded = false): Promise<number> {
  const own = onlyIncluded ? undefined : await readGitignore(dirAbs);
  const here = own ? [...levels, { dir: dirAbs, matcher: own }] : levels;
  const names = (await readdir(dirAbs)).sort();
  let added = 0;
  for (const name of names) {
    const abs = path.join(dirAbs, name);
    const rel = dirRel ? `${dirRel}/${name}` : name;
    if (name === '.git' || ctx.alwaysSkip.has(abs)) continue;
    const st = await lstat(abs);
    const isDir = st.isDirectory();
    const verdict = onlyIncluded ? 'gitignored' : ignoredBy(abs, rel, isDir, here, ctx.excluded);
    if (verdict === 'excluded' || (onlyIncluded && isExcluded(rel, isDir, ctx.excluded))) continue;
    let viaInclude = false;
    if (verdict === 'gitignored') {
      if (!ctx.include) continue;
      if (isDir) {
        if (!ctx.include.mayMatchInside(rel)) continue;
        const at = ctx.entries.length;
        const inside = await walk(abs, rel, here, ctx, true);
        if (inside > 0) {
          ctx.entries.splice(at, 0, { rel, kind: 'dir' });
          added += inside + 1;
        }
        continue;
      }
      if (!ctx.include.matches(rel)) continue;
      viaInclude = true;
    }
    if (isDir) {
      ctx.entries.push({ rel, kind: 'dir' });
      added += 1 + (await walk(abs, rel, here, ctx));
    } else if (st.isSymbolicLink()) {
      const target = await readlink(abs);
      const lands = path.posix.normalize(path.posix.join(path.posix.dirname(rel), toPosix(target)));
      if (path.isAbsolute(target) || lands === '..' || lands.startsWith('../')) {
        ctx.skippedSymlinks.push(rel);
      } else {
        ctx.entries.push({ rel, kind: 'symlink', target: toPosix(target), ...(viaInclude ? { viaInclude } : {}) });
        added++;
      }
    } else if (st.isFile()) {
      if (st.size > MAX_USTAR_SIZE) throw new BundleError(`${rel} is larger than 8 GiB; add it to code.exclude`);
      ctx.entries.push({ rel, kind: 'file', abs, size: st.size, executable: (st.mode & 0o111) !== 0, ...(viaInclude ? { viaInclude } : {}) });
      added++;
    }
    // sockets, fifos and devices have no place in a code bundle
  }
  return added;
}

/**
 * Git's precedence: deeper .gitignore files override shallower ones; code.exclude has the last
 * word. 'gitignored' (left out by a .gitignore: code.include may still ship it), 'excluded' (by
 * code.exclude: never shipped) or undefined (shipped).
 */
function ignoredBy(abs: string, rel: string, isDir: boolean, levels: IgnoreLevel[], excluded: Ignore): 'gitignored' | 'excluded' | undefined {
  let ignored = false;
  for (const level of levels) {
    const local = toPosix(path.relative(level.dir, abs));
    const verdict = level.matcher.test(isDir ? `${local}/` : local);
    if (verdict.ignored) ignored = true;
    else if (verdict.unignored) ignored = false;
  }
  const verdict = excluded.test(isDir ? `${rel}/` : rel);
  if (verdict.ignored) return 'excluded';
  if (verdict.unignored) return undefined;
  return ignored ? 'gitignored' : undefined;
}

function isExcluded(rel: string, isDir: boolean, excluded: Ignore): boolean {
  return excluded.test(isDir ? `${rel}/` : rel).ignored;
}

async function* tarStream(entries: Entry[], hash: ReturnType<typeof createHash>): AsyncGenerator<Buffer> {
  const emit = (buf: Buffer): Buffer => {
    hash.update(buf);
    return buf;
  };
  for (const entry of entries) {
    for (const block of headerBlocks(entry)) yield emit(block);
    if (entry.kind !== 'file') continue;
    let seen = 0;
    for await (const chunk of createReadStream(entry.abs)) {
      const buf = chunk as Buffer;
      seen += buf.length;
      if (seen > entry.size) break;
      yield emit(buf);
    }
    if (seen !== entry.size) {
      throw new BundleError(`${entry.rel} changed while it was being bundled; try again`);
    }
    const padding = (BLOCK - (entry.size % BLOCK)) % BLOCK;
    if (padding) yield emit(Buffer.alloc(padding));
  }
  yield emit(Buffer.alloc(BLOCK * 2));
}

function headerBlocks(entry: Entry): Buffer[] {
  const name = entry.kind === 'dir' ? `${entry.rel}/` : entry.rel;
  const linkname = entry.kind === 'symlink' ? entry.target : '';
  const pax: string[] = [];
  const split = splitUstarName(name);
  if (!split) pax.push(paxRecord('path', name));
  if (linkname && !fitsAscii(linkname, 100)) pax.push(paxRecord('linkpath', linkname));
  const blocks: Buffer[] = [];
  if (pax.length) {
    const body = Buffer.from(pax.join(''), 'utf8');
    blocks.push(
      ustarHeader({ name: 'PaxHeader', prefix: '', mode: 0o644, size: body.length, type: 'x', linkname: '' }),
      body,
      Buffer.alloc((BLOCK - (body.length % BLOCK)) % BLOCK),
    );
  }
  const fallback = split ?? { prefix: '', name: asciiPrefix(name, 100) };
  blocks.push(
    ustarHeader({
      name: fallback.name,
      prefix: fallback.prefix,
      mode: entry.kind === 'file' ? (entry.executable ? 0o755 : 0o644) : entry.kind === 'dir' ? 0o755 : 0o777,
      size: entry.kind === 'file' ? entry.size : 0,
      type: entry.kind === 'file' ? '0' : entry.kind === 'dir' ? '5' : '2',
      linkname: fitsAscii(linkname, 100) ? linkname : asciiPrefix(linkname, 100),
    }),
  );
  return blocks;
}

function ustarHeader(h: { name: string; prefix: string; mode: number; size: number; type: string; linkname: string }): Buffer {
  const buf = Buffer.alloc(BLOCK);
  buf.write(h.name, 0, 100, 'utf8');
  writeOctal(buf, 100, 8, h.mode);
  writeOctal(buf, 108, 8, 0); // uid
  writeOctal(buf, 116, 8, 0); // gid
  writeOctal(buf, 124, 12, h.size);
  writeOctal(buf, 136, 12, 0); // mtime
  buf.write('        ', 148, 8, 'ascii'); // checksum placeholder
  buf.write(h.type, 156, 1, 'ascii');
  buf.write(h.linkname, 157, 100, 'utf8');
  buf.write('ustar\0', 257, 6, 'ascii');
  buf.write('00', 263, 2, 'ascii');
  buf.write(h.prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const byte of buf) sum += byte;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return buf;
}

function writeOctal(buf: Buffer, offset: number, width: number, value: number): void {
  buf.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'ascii');
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body, 'utf8');
  let total = len + String(len).length;
  if (String(total).length !== String(len).length) total = len + String(total).length;
  return `${total}${body}`;
}

/** ustar keeps up to 155 + 100 bytes of ASCII path split at a slash; anything else goes to PAX. */
function splitUstarName(name: string): { prefix: string; name: string } | undefined {
  if (!/^[\x20-\x7e]*$/.test(name)) return undefined;
  if (name.length <= 100) return { prefix: '', name };
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (prefix.length <= 155 && rest.length <= 100 && rest.length > 0) return { prefix, name: rest };
  }
  return undefined;
}

function fitsAscii(text: string, max: number): boolean {
  return text.length <= max && /^[\x20-\x7e]*$/.test(text);
}

function asciiPrefix(text: string, max: number): string {
  return text.replace(/[^\x20-\x7e]/g, '_').slice(0, max);
}

function toPosix(p: string): string {
  return p.split(path.sep).join('/');
}
