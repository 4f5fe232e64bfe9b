/**
 * The memory and cores this process may use: the machine's, lowered by a Linux control group's limits (a container
 * started with `docker run -m 4g --cpus 2`, a Kubernetes pod's limits), which `os.totalmem()` and
 * `navigator.hardwareConcurrency` do not see. The defaults sized from them (the memory budget, the CPU backend's
 * scratch memory and workers) would otherwise be those of the whole host, past what the kernel lets the process use.
 */
import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";

/** Reads a text file, or null when it is missing or not readable (no cgroup, no --allow-read). */
export type ReadText = (path: string) => string | null;

const readText: ReadText = (path) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
};

/** A limit this large means none (cgroup v1 writes 2^63 rounded down to a page). */
const UNLIMITED = 2 ** 62;

/**
 * The directories that may hold this process's limits, for `controller` ("memory", "cpu"): its own group's as
 * /proc/self/cgroup names it (on a host) and every group above it (a limit on a parent, as systemd's slices set,
 * binds its children too), and the mount's root (in a container, whose root is its own group).
 */
function groupDirs(read: ReadText, controller: string): string[] {
  const dirs = new Set<string>();
  for (const line of (read("/proc/self/cgroup") ?? "").split("\n")) {
    // "id:controllers:path", where the path may itself hold colons.
    const first = line.indexOf(":"), second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second), path = line.slice(second + 1);
    if (!path.startsWith("/")) continue;
    const root = controllers === ""
      ? "/sys/fs/cgroup" // v2
      : controllers.split(",").includes(controller)
      ? `/sys/fs/cgroup/${controller}` // v1
      : null;
    if (root === null) continue;
    const parts = path.split("/").filter(Boolean);
    for (let k = parts.length; k > 0; k--) dirs.add(`${root}/${parts.slice(0, k).join("/")}`);
  }
  return [...dirs, "/sys/fs/cgroup", `/sys/fs/cgroup/${controller}`];
}

/** The host's memory in bytes, or its control group's limit where that is lower. */
export function memoryLimitBytes(read: ReadText = readText, total = totalmem()): number {
  let limit = total;
  for (const dir of groupDirs(read, "memory")) {
    for (const file of ["memory.max", "memory.limit_in_bytes"]) {
      const v = Number(read(`${dir}/${file}`)?.trim() || NaN); // "max" (v2, none) is NaN too
      if (v > 0 && v < UNLIMITED) limit = Math.min(limit, v);
    }
  }
  return limit;
}

/** The cores this process may keep busy: the host's, or its control group's CPU quota (rounded up) where lower. */
export function cpuLimit(
  read: ReadText = readText,
  count = navigator.hardwareConcurrency || cpus().length || 1,
): number {
  let limit = count;
  for (const dir of groupDirs(read, "cpu")) {
    // v2: "quota period" or "max period"; v1: the quota (-1 for none) and the period in two files.
    const v2 = read(`${dir}/cpu.max`)?.trim().split(/\s+/);
    const [quota, period] = v2 ? v2.map(Number) : [
      Number(read(`${dir}/cpu.cfs_quota_us`)?.trim() || NaN),
      Number(read(`${dir}/cpu.cfs_period_us`)?.trim() || NaN),
    ];
    if (quota! > 0 && period! > 0) limit = Math.min(limit, Math.max(1, Math.ceil(quota! / period!)));
  }
  return limit;
}
