// Terminal rendering for the CLI: pure functions of their inputs; output only via an injected writer.
export * from './colors.js';
export * from './describe.js';
export * from './format.js';
export * from './live-display.js';
export * from './progress.js';
export * from './table.js';
export * from './text.js';
