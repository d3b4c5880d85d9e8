// The yaml package, loaded on first use. It is needed only for files that have a problem (to
// place it) or that the fast path does not take; a clean runs/ folder never loads it, which
// saves a noticeable part of `runctl validate`'s start-up. yaml is CommonJS, so it can be
// required synchronously from inside the (synchronous) loader.
import { createRequire } from 'node:module';

type Yaml = typeof import('yaml');

let loaded: Yaml | undefined;

export function yaml(): Yaml {
  loaded ??= createRequire(import.meta.url)('yaml') as Yaml;
  return loaded;
}
