import assert from "node:assert/strict";
import { cpuLimit, memoryLimitBytes, type ReadText } from "./host_limits.ts";

/** A filesystem of the given files; every other path is missing. */
const files = (map: Record<string, string>): ReadText => (path) => map[path] ?? null;

const GiB = 1024 ** 3;

Deno.test("memoryLimitBytes: the host's memory, or a lower cgroup v1 or v2 limit, own group or mount root", () => {
  assert.equal(memoryLimitBytes(files({}), 64 * GiB), 64 * GiB);
  // A container (cgroup v2, its own namespace): the root of the mount is its group.
  const v2 = { "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "4294967296\n" };
  assert.equal(memoryLimitBytes(files(v2), 64 * GiB), 4 * GiB);
  assert.equal(memoryLimitBytes(files({ ...v2, "/sys/fs/cgroup/memory.max": "max\n" }), 64 * GiB), 64 * GiB);
  // A host (v2): the process's own group, named in /proc/self/cgroup.
  const host = { "/proc/self/cgroup": "0::/system.slice/zprune.service\n" };
  const own = { ...host, "/sys/fs/cgroup/system.slice/zprune.service/memory.max": String(2 * GiB) };
  assert.equal(memoryLimitBytes(files(own), 64 * GiB), 2 * GiB);
  // A limit on a parent group (a systemd slice) binds the service below it, whose own file says max.
  const parent = {
    ...host,
    "/sys/fs/cgroup/system.slice/zprune.service/memory.max": "max\n",
    "/sys/fs/cgroup/system.slice/memory.max": String(3 * GiB),
  };
  assert.equal(memoryLimitBytes(files(parent), 64 * GiB), 3 * GiB);
  // A path may hold colons.
  const colon = { "/proc/self/cgroup": "0::/a:b/c\n", "/sys/fs/cgroup/a:b/c/memory.max": String(GiB) };
  assert.equal(memoryLimitBytes(files(colon), 64 * GiB), GiB);
  // cgroup v1, as this project's CI machine has it: no limit is 2^63 rounded down to a page.
  const v1 = {
    "/proc/self/cgroup": "4:memory:/process_api/abc\n3:cpuset:/\n",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    "/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712\n",
  };
  assert.equal(memoryLimitBytes(files(v1), 24 * GiB), 24 * GiB);
  const v1Limited = { ...v1, "/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": String(8 * GiB) };
  assert.equal(memoryLimitBytes(files(v1Limited), 24 * GiB), 8 * GiB);
  // A limit above the machine's memory changes nothing; garbage is ignored.
  assert.equal(memoryLimitBytes(files({ "/sys/fs/cgroup/memory.max": String(128 * GiB) }), 64 * GiB), 64 * GiB);
  assert.equal(memoryLimitBytes(files({ "/sys/fs/cgroup/memory.max": "lots" }), 64 * GiB), 64 * GiB);
});

Deno.test("cpuLimit: the host's cores, or a cgroup's CPU quota rounded up, at least 1", () => {
  assert.equal(cpuLimit(files({}), 64), 64);
  assert.equal(cpuLimit(files({ "/sys/fs/cgroup/cpu.max": "200000 100000\n" }), 64), 2);
  assert.equal(cpuLimit(files({ "/sys/fs/cgroup/cpu.max": "150000 100000\n" }), 64), 2);
  assert.equal(cpuLimit(files({ "/sys/fs/cgroup/cpu.max": "10000 100000\n" }), 64), 1);
  assert.equal(cpuLimit(files({ "/sys/fs/cgroup/cpu.max": "max 100000\n" }), 64), 64);
  assert.equal(cpuLimit(files({ "/sys/fs/cgroup/cpu.max": "800000 100000\n" }), 4), 4);
  const v1 = { "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "300000\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n" };
  assert.equal(cpuLimit(files(v1), 64), 3);
  assert.equal(cpuLimit(files({ ...v1, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n" }), 64), 64);
  // v1 names each hierarchy's controllers: the cpuset hierarchy's group is not the cpu controller's, though its name
  // begins alike. Only the cpu,cpuacct line's group (here /g) is looked under /sys/fs/cgroup/cpu.
  const pinned = {
    "/proc/self/cgroup": "3:cpuset:/pin\n4:cpu,cpuacct:/g\n",
    "/sys/fs/cgroup/cpu/pin/cpu.cfs_quota_us": "100000\n",
    "/sys/fs/cgroup/cpu/pin/cpu.cfs_period_us": "100000\n",
  };
  assert.equal(cpuLimit(files(pinned), 64), 64);
  const quotaOnG = {
    ...pinned,
    "/sys/fs/cgroup/cpu/g/cpu.cfs_quota_us": "250000\n",
    "/sys/fs/cgroup/cpu/g/cpu.cfs_period_us": "100000\n",
  };
  assert.equal(cpuLimit(files(quotaOnG), 64), 3, "the cpu group's 2.5 cores rounded up, not /pin's 1");
});

Deno.test("memoryLimitBytes and cpuLimit on this machine: within the host's figures", () => {
  const mem = memoryLimitBytes();
  assert.ok(mem > 0 && mem <= Deno.systemMemoryInfo().total, `${mem}`);
  const cores = cpuLimit();
  assert.ok(cores >= 1 && cores <= navigator.hardwareConcurrency, `${cores}`);
});

Deno.test("cpuLimit: a fractional quota is rounded up, never to the nearest core", () => {
  // 1.2 cores can keep 2 busy part of the time; rounding to nearest (1) would leave the quota's 0.2 unused.
  for (const [quota, want] of [[120000, 2], [101000, 2], [240000, 3], [100000, 1], [99000, 1]] as const) {
    assert.equal(cpuLimit(files({ "/sys/fs/cgroup/cpu.max": `${quota} 100000\n` }), 64), want, `${quota}`);
  }
});

Deno.test("memoryLimitBytes: 0 or a negative figure is no limit; from 2^62 up is none, just below is one", () => {
  const one = (value: string, total: number) => memoryLimitBytes(files({ "/sys/fs/cgroup/memory.max": value }), total);
  // No process runs in 0 bytes: a figure that would make every budget 0 is not taken for a limit.
  assert.equal(one("0\n", 64 * GiB), 64 * GiB);
  assert.equal(one("-1\n", 64 * GiB), 64 * GiB);
  // A host (hypothetical) with more than 2^62 bytes shows where "none" begins, whatever the machine's memory.
  const huge = 2 ** 63;
  assert.equal(one(String(2 ** 62), huge), huge, "2^62 itself means none");
  assert.equal(one("9223372036854771712\n", huge), huge, "cgroup v1's 'none' (2^63 less a page)");
  assert.equal(one(String(2 ** 62 - 4096), huge), 2 ** 62 - 4096, "a page below is a limit");
});

Deno.test("memoryLimitBytes: /proc/self/cgroup lines not of the form id:controllers:/path are skipped", () => {
  // Each malformed line names, if misread, a group whose limit would lower the answer to 1 GiB.
  const misread = {
    "/proc/self/cgroup": "/a:b\n0::relative/g\ngarbage\n",
    "/sys/fs/cgroup/a:b/memory.max": String(GiB),
    "/sys/fs/cgroup/relative/g/memory.max": String(GiB),
    "/sys/fs/cgroup/garbage/memory.max": String(GiB),
  };
  assert.equal(memoryLimitBytes(files(misread), 64 * GiB), 64 * GiB);
});
