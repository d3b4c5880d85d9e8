import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Three test files at a time on CI's 2 cores: most files spend their time waiting on real
    // processes (agents, moto, training steps), not computing. Measured with the whole suite on
    // this kind of machine with two busy-looping processes beside it (a loaded CI host): 525 s
    // with two workers, 411 s with three, 365 s with four. Three, not four, to keep a margin on
    // memory and on the tests' ceilings; tests wait for states, so the extra load must not
    // change a result.
    maxWorkers: 3,
  },
});
