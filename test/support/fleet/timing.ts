// The fleet simulator's timing model: how long EC2, SSM and S3 take, as AWS documents them or as
// measured by others, scalable so a test or benchmark runs the same sequence of waits in a fraction
// of real time. Figures that are estimates say so.
//
//   startFleet({ motoUrl, timing: scaledTiming(1 / 20) })   // the EC2 figures at 1/20 of real time
//   startFleet({ motoUrl, timing: { noticeLeadMs: 6_000 } }) // one figure set, the rest as today

/** One timing model; every duration is milliseconds, throughput is bytes per second. */
export interface FleetTiming {
  /** RunInstances until DescribeInstances says `running` (EC2's pending state). */
  bootMs: number;
  /**
   * From `running` until SSM reports the instance Online (the OS boots, the SSM agent starts and
   * registers): only then can commands be sent to it.
   */
  ssmRegistrationMs: number;
  /** Throughput of one S3 request (the agent's AWS CLI, through the fleet proxy); Infinity: no limit. */
  s3BytesPerSecond: number;
  /** From a spot interruption notice to EC2 reclaiming the instance. */
  noticeLeadMs: number;
}

/**
 * What the model stands for, on EC2 (us-east-1, a current instance type, a stock AMI):
 * - noticeLeadMs 120 s: documented. "A Spot Instance interruption notice is a warning that is issued
 *   two minutes before Amazon EC2 stops or terminates your Spot Instance" (Amazon EC2 User Guide,
 *   "Spot Instance interruption notices").
 * - bootMs 15 s: measured by others, not documented. RunInstances took 1.5 s and pending to running
 *   4.9 s on c5.xlarge (C. Percival, "EC2 boot time benchmarking", daemonology.net, 2021); pending to
 *   running 16.4-16.6 s across t3/m6i/m7i/c7i/r7i, 25.8 s in all to SSH (brevdev/ec2-coldboot-research,
 *   2025). 15 s is an estimate between them; GPU types and large images are slower.
 * - ssmRegistrationMs 25 s: an estimate. From running, the OS took 17-23 s to accept SSH in the
 *   measurements above; the SSM agent starts with the OS and registers after it; AWS gives no figure.
 * - s3BytesPerSecond 90 MB/s: an estimate for one request stream from EC2 to S3 in the same region.
 *   AWS advises parallel connections and byte ranges for more ("Best practices design patterns:
 *   optimizing Amazon S3 performance"); aggregate figures of GB/s need many streams
 *   (dvassallo/s3-benchmark, 2019).
 */
export const EC2_TIMING: Readonly<FleetTiming> = {
  bootMs: 15_000,
  ssmRegistrationMs: 25_000,
  s3BytesPerSecond: 90 * 1024 * 1024,
  noticeLeadMs: 120_000,
};

/** What the fleet did before it had a timing model: instant boot and registration, no S3 limit, EC2's notice lead. */
export const INSTANT_TIMING: Readonly<FleetTiming> = {
  bootMs: 0,
  ssmRegistrationMs: 0,
  s3BytesPerSecond: Number.POSITIVE_INFINITY,
  noticeLeadMs: 120_000,
};

/**
 * `base` at `scale` of real time: durations times scale, throughput divided by it (so a transfer
 * takes `scale` of its real time too). scale 1/20 turns the two-minute notice into 6 s.
 * Throws on a scale that is not a positive finite number.
 */
export function scaledTiming(scale: number, base: Readonly<FleetTiming> = EC2_TIMING): FleetTiming {
  if (!(scale > 0) || !Number.isFinite(scale)) throw new Error(`fleet timing: scale must be a positive number, got ${scale}`);
  return {
    bootMs: Math.round(base.bootMs * scale),
    ssmRegistrationMs: Math.round(base.ssmRegistrationMs * scale),
    s3BytesPerSecond: base.s3BytesPerSecond / scale,
    noticeLeadMs: Math.round(base.noticeLeadMs * scale),
  };
}

/** Milliseconds one S3 request carrying `bytes` takes at the model's throughput. */
export function s3TransferMs(timing: Readonly<FleetTiming>, bytes: number): number {
  return Number.isFinite(timing.s3BytesPerSecond) && bytes > 0 ? Math.round((bytes / timing.s3BytesPerSecond) * 1000) : 0;
}
