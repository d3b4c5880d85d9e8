import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two test files at a time even on 2 cores: most files spend their time waiting on real
    // processes (agents, moto, training steps), so CI's wall time nearly halves; tests wait for
    // states with generous ceilings, so the extra load must not change a result.
    maxWorkers: 2,
  },
});
