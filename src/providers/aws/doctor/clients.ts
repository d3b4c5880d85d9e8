// The SDK clients only `runctl doctor` needs (IAM, STS, Service Quotas), made with the same
// region, endpoint, credentials and bounded retry strategy as the provider's own clients, and
// loaded only by doctor so no other command pays for their import.
import { IAMClient } from '@aws-sdk/client-iam';
import { ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import { STSClient } from '@aws-sdk/client-sts';
import type { ClientOptions } from '../clients.js';
import { BoundedRetryStrategy, DEFAULT_RETRY } from '../retry.js';

export interface DoctorClients {
  region: string;
  iam: IAMClient;
  sts: STSClient;
  quotas: ServiceQuotasClient;
}

export function createDoctorClients(region: string, opts: ClientOptions): DoctorClients {
  const common = {
    region,
    retryStrategy: new BoundedRetryStrategy({ ...DEFAULT_RETRY, ...opts.retry }),
    maxAttempts: opts.retry?.maxAttempts ?? DEFAULT_RETRY.maxAttempts,
    ...(opts.endpointUrl ? { endpoint: opts.endpointUrl } : {}),
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
  };
  return { region, iam: new IAMClient(common), sts: new STSClient(common), quotas: new ServiceQuotasClient(common) };
}

export function destroyDoctorClients(clients: DoctorClients): void {
  clients.iam.destroy();
  clients.sts.destroy();
  clients.quotas.destroy();
}
