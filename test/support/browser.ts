// A real browser for the dashboard's end-to-end tests: playwright-core driving the system's
// Chromium (Debian's `chromium` package; `.ci/run` installs it when missing). No browser download.
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';

/** Where Chromium is looked for: RUNCTL_TEST_CHROMIUM, else Debian's path. */
export const CHROMIUM = process.env.RUNCTL_TEST_CHROMIUM ?? '/usr/bin/chromium';

/** Screenshots and other test outputs worth keeping (gitignored; CI may upload it). */
export const ARTIFACTS = path.resolve('test-artifacts');

export async function launchChromium(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install it (apt-get install -y chromium) or set RUNCTL_TEST_CHROMIUM to its path`);
  }
  // --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

export function artifactPath(name: string): string {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}
