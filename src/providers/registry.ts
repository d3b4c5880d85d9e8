// Creates providers on first use, by name. The AWS SDK is imported only when a run on the aws
// provider exists, so validate/status stay fast and the SDK's messages stay away from local runs.
import os from 'node:os';
import path from 'node:path';
import type { ProviderName } from '../spec/types.js';
import type { Provider } from './types.js';

export interface ProviderSettings {
  repoRoot: string;
  /** Value of the runctl:controller tag. */
  controller: string;
  /** Defaults from runctl.yaml. */
  region?: string;
  storage?: string;
  profile?: string;
  /** AWS endpoint override (moto, LocalStack); AWS_ENDPOINT_URL works too. */
  endpointUrl?: string;
}

export interface ProviderRegistry {
  get(name: ProviderName): Promise<Provider>;
  close(): Promise<void>;
}

export function createProviderRegistry(settings: ProviderSettings): ProviderRegistry {
  const made = new Map<ProviderName, Promise<Provider>>();
  const create = async (name: ProviderName): Promise<Provider> => {
    if (name === 'local') {
      const { createLocalProvider } = await import('./local/index.js');
      return createLocalProvider({ repoRoot: settings.repoRoot, controller: settings.controller });
    }
    const { createAwsProvider } = await import('./aws/index.js');
    return createAwsProvider({
      region: settings.region,
      profile: settings.profile,
      controller: settings.controller,
      defaultStorage: settings.storage,
      endpointUrl: settings.endpointUrl ?? process.env.AWS_ENDPOINT_URL,
      priceCacheFile: path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'runctl', 'price-list.json'),
    });
  };
  return {
    get(name) {
      let p = made.get(name);
      if (!p) {
        p = create(name);
        made.set(name, p);
      }
      return p;
    },
    async close() {
      for (const p of made.values()) {
        const provider = await p.catch(() => undefined);
        await provider?.close?.();
      }
    },
  };
}
