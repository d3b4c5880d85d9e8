// Deterministic, content-addressed code bundles: a ustar .tar.gz of `code.path` with sorted
// entries and normalised metadata (mtime 0, uid/gid 0, no user names, modes 0644/0755), leaving
// out what .gitignore files and `code.exclude` leave out. The id is the sha256 of the
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
}

export interface BundleOptions {
  /** Where the .tar.gz is written; default `<repoRoot>/.runctl/bundles`. */
  outDir?: string;
}

export class BundleError extends Error {
  override name = 'BundleError';
}

type Entry =
  | { rel: string; kind: 'dir' }
  | { rel: string; kind: 'file'; abs: string; size: number; executable: boolean }
  | { rel: string; kind: 'symlink'; target: string };

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
  const root = path.resolve(repo, code.path);
  const rootStat = await stat(root).catch(() => undefined);
  if (!rootStat?.isDirectory()) {
    throw new BundleError(`code.path "${code.path}" is not a directory (looked for ${root})`);
  }
  const outDir = path.resolve(opts.outDir ?? path.join(repo, '.runctl', 'bundles'));
  const alwaysSkip = new Set([path.join(repo, '.runctl'), outDir]);

  const levels = await ancestorIgnores(repo, root);
  const excluded = ignore().add(code.exclude);
  const skippedSymlinks: string[] = [];
  const entries: Entry[] = [];
  await walk(root, '', levels, { root, excluded, alwaysSkip, entries, skippedSymlinks });
  entries.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));

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
  return {
    sha256,
    file,
    bytes: size,
    fileCount: entries.filter((e) => e.kind !== 'dir').length,
    skippedSymlinks: skippedSymlinks.sort(),
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
  alwaysSkip: Set<string>;
  entries: Entry[];
  skippedSymlinks: string[];
}

async function walk(dirAbs: string, dirRel: string, levels: IgnoreLevel[], ctx: WalkContext): Promise<void> {
  const own = await readGitignore(dirAbs);
  const here = own ? [...levels, { dir: dirAbs, matcher: own }] : levels;
  const names = (await readdir(dirAbs)).sort();
  for (const name of names) {
    const abs = path.join(dirAbs, name);
    const rel = dirRel ? `${dirRel}/${name}` : name;
    if (name === '.git' || ctx.alwaysSkip.has(abs)) continue;
    const st = await lstat(abs);
    const isDir = st.isDirectory();
    if (isIgnored(abs, rel, isDir, here, ctx.excluded)) continue;
    if (isDir) {
      ctx.entries.push({ rel, kind: 'dir' });
      await walk(abs, rel, here, ctx);
    } else if (st.isSymbolicLink()) {
      const target = await readlink(abs);
      const lands = path.posix.normalize(path.posix.join(path.posix.dirname(rel), toPosix(target)));
      if (path.isAbsolute(target) || lands === '..' || lands.startsWith('../')) {
        ctx.skippedSymlinks.push(rel);
      } else {
        ctx.entries.push({ rel, kind: 'symlink', target: toPosix(target) });
      }
    } else if (st.isFile()) {
      if (st.size > MAX_USTAR_SIZE) throw new BundleError(`${rel} is larger than 8 GiB; add it to code.exclude`);
      ctx.entries.push({ rel, kind: 'file', abs, size: st.size, executable: (st.mode & 0o111) !== 0 });
    }
    // sockets, fifos and devices have no place in a code bundle
  }
}

/** Git's precedence: deeper .gitignore files override shallower ones; code.exclude has the last word. */
function isIgnored(abs: string, rel: string, isDir: boolean, levels: IgnoreLevel[], excluded: Ignore): boolean {
  let ignored = false;
  for (const level of levels) {
    const local = toPosix(path.relative(level.dir, abs));
    const verdict = level.matcher.test(isDir ? `${local}/` : local);
    if (verdict.ignored) ignored = true;
    else if (verdict.unignored) ignored = false;
  }
  const verdict = excluded.test(isDir ? `${rel}/` : rel);
  if (verdict.ignored) ignored = true;
  else if (verdict.unignored) ignored = false;
  return ignored;
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
