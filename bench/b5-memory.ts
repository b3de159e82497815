/**
 * B5: peak memory of each service while a benchmark runs. Each service's peak resident set (VmHWM) is reset when
 * the phase starts and read when it ends; the image service's process tree (Node plus its ImageMagick children) is
 * also sampled every 50 ms, since ImageMagick's memory is not the Node process's. Target: image-svc < 600 MB at
 * the default IMAGE_CONCURRENCY.
 */
import { SERVICE_KEYS } from "../services/shared/topology.js";
import type { BenchSystem } from "./lib/bench-system.js";
import { peakRss, resetPeakRss, sampleTreeRss } from "./lib/procfs.js";

const MB = 1024 * 1024;

export interface MemoryPhase {
  phase: string;
  /** Peak resident set of each service's Node process, in MB. */
  peakRssMb: Record<string, number>;
  /** Peak of image-svc plus its ImageMagick children together, sampled, in MB. */
  imageTreePeakMb: number;
  /** The largest single ImageMagick process seen, sampled, in MB. */
  imageMagickPeakMb: number;
  target: { service: "image-svc"; maxMb: number; met: boolean };
}

export interface MemoryProbe {
  stop(): MemoryPhase;
}

export function startMemoryProbe(bench: BenchSystem, phase: string): MemoryProbe {
  for (const key of SERVICE_KEYS) resetPeakRss(bench.pid(key));
  const sampler = sampleTreeRss(bench.pid("image"));
  return {
    stop() {
      const tree = sampler.stop();
      const peakRssMb = Object.fromEntries(SERVICE_KEYS.map((key) => [`${key}-svc`, Math.round((peakRss(bench.pid(key)) ?? 0) / MB)]));
      const image = peakRssMb["image-svc"] ?? 0;
      return {
        phase,
        peakRssMb,
        imageTreePeakMb: Math.round(tree.peakTree / MB),
        imageMagickPeakMb: Math.round(tree.peakChild / MB),
        target: { service: "image-svc", maxMb: 600, met: image > 0 && image < 600 },
      };
    },
  };
}
