// The CPUs a run may use: those the process may run on (os.availableParallelism(): the affinity
// mask that taskset, SLURM's cpusets and docker --cpuset-cpus set), and no more than the CPU time
// its control group may take (the bandwidth limit that docker --cpus, Kubernetes' CPU limits and
// systemd's CPUQuota= set: cgroup v2's cpu.max, v1's cpu.cfs_quota_us over cpu.cfs_period_us, on
// the process's group and every group above it). Threads past the quota make a run slower, not
// faster: the group is stopped for the rest of each period once its threads have spent the
// period's time, and every parallel region then waits on a thread that cannot run (on 2 CPUs
// under a quota of one, the tiny SiT trained 1.6x and sampled 2.1x slower on 2 threads than on
// one; bench/README.md). libtorch, OpenMP and OpenBLAS count the CPUs and not the quota.
import { closeSync, openSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { isAbsolute, join, posix } from 'node:path';

/** A CPU bandwidth limit: `cpus` CPUs' worth of time (quota over period), read from `file`. */
export interface CpuQuota {
  cpus: number;
  file: string;
}

export interface CpuBudget {
  /** The intra-op threads a run may use: the affinity count, within the quota. */
  cpus: number;
  /** The CPUs the process may run on (os.availableParallelism()). */
  affinity: number;
  /** The tightest CPU bandwidth limit over the process's control groups, if any. */
  quota?: CpuQuota;
}

/** The threads a quota of `cpus` CPUs' time keeps busy: a partial CPU counts from a half (1.5 CPUs: 2 threads). */
export function quotaThreads(cpus: number): number {
  return Math.max(1, Math.floor(cpus + 0.5));
}

export function cpuBudgetOf(affinity: number, quota: CpuQuota | undefined): CpuBudget {
  const cpus = quota === undefined ? affinity : Math.min(affinity, quotaThreads(quota.cpus));
  return quota === undefined ? { cpus, affinity } : { cpus, affinity, quota };
}

// The kernel's files here are small; anything longer is not what this reads, and is ignored.
const MAX_CGROUP_FILE_BYTES = 4096;
const MAX_MOUNTINFO_BYTES = 4 << 20;
/** Control groups nest; no real hierarchy is this deep. */
const MAX_CGROUP_DEPTH = 64;

/** The file's text, or undefined where it cannot be read or is longer than `maxBytes`. */
function readBounded(path: string, maxBytes: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const buffer = Buffer.allocUnsafe(maxBytes + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
      if (length > maxBytes) return undefined;
    }
    return buffer.subarray(0, length).toString('utf8');
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** mountinfo escapes space, tab, newline and backslash in paths as octal (\040). */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

interface CgroupMount {
  version: 1 | 2;
  /** The hierarchy's path that is mounted (mountinfo's root field). */
  root: string;
  mountPoint: string;
}

/** The cgroup v2 mounts and the v1 mounts of the cpu controller, from mountinfo's text. */
function cgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mount-point options [optional fields] - type source super-options
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    const [root, mountPoint] = [fields[3], fields[4]];
    const [fsType, , superOptions] = fields.slice(separator + 1);
    if (separator < 0 || root === undefined || mountPoint === undefined || superOptions === undefined) continue;
    const version = fsType === 'cgroup2' ? 2 : fsType === 'cgroup' && superOptions.split(',').includes('cpu') ? 1 : undefined;
    if (version === undefined) continue;
    mounts.push({ version, root: unescapeMountPath(root), mountPoint: unescapeMountPath(mountPoint) });
  }
  return mounts;
}

/** The process's group in each hierarchy, from /proc/self/cgroup: v2's ("0::/path") and v1's cpu controller's. */
function processGroups(cgroup: string): { 1?: string; 2?: string } {
  const groups: { 1?: string; 2?: string } = {};
  for (const line of cgroup.split('\n')) {
    const [, id, controllers, path] = /^(\d+):([^:]*):(\/.*)$/.exec(line) ?? [];
    if (id === undefined || controllers === undefined || path === undefined) continue;
    if (id === '0' && controllers === '') groups[2] = path;
    else if (controllers.split(',').includes('cpu')) groups[1] = path;
  }
  return groups;
}

/** A positive whole number of microseconds, as the kernel writes them; undefined for anything else. */
function microseconds(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,15}$/.test(text)) return undefined;
  const value = Number(text);
  return value > 0 ? value : undefined;
}

/** One group's limit in CPUs: cpu.max ("max 100000" or "150000 100000") or cfs_quota_us (-1: none) over cfs_period_us. */
function groupLimit(dir: string, version: 1 | 2): CpuQuota | undefined {
  if (version === 2) {
    const file = join(dir, 'cpu.max');
    const [, quota, period] = /^(\S+) (\S+)$/.exec((readBounded(file, MAX_CGROUP_FILE_BYTES) ?? '').trim()) ?? [];
    const q = microseconds(quota);
    const p = microseconds(period);
    return q === undefined || p === undefined ? undefined : { cpus: q / p, file };
  }
  const file = join(dir, 'cpu.cfs_quota_us');
  const q = microseconds(readBounded(file, MAX_CGROUP_FILE_BYTES)?.trim());
  const p = microseconds(readBounded(join(dir, 'cpu.cfs_period_us'), MAX_CGROUP_FILE_BYTES)?.trim());
  return q === undefined || p === undefined ? undefined : { cpus: q / p, file };
}

/**
 * The tightest CPU bandwidth limit on this process: its group's and every enclosing group's, in
 * cgroup v2 and in v1's cpu controller, or undefined where none is set (or none can be read).
 * `fsRoot` is where /proc and /sys are found ('/'; tests give a folder of fake ones). A group's
 * path outside its mount (another namespace's) or with '..' in it is not followed.
 */
export function readCpuQuota(fsRoot = '/'): CpuQuota | undefined {
  const cgroup = readBounded(join(fsRoot, 'proc/self/cgroup'), MAX_MOUNTINFO_BYTES);
  const mountinfo = readBounded(join(fsRoot, 'proc/self/mountinfo'), MAX_MOUNTINFO_BYTES);
  if (cgroup === undefined || mountinfo === undefined) return undefined;
  const groups = processGroups(cgroup);
  let tightest: CpuQuota | undefined;
  for (const mount of cgroupMounts(mountinfo)) {
    const group = groups[mount.version];
    if (group === undefined || !isAbsolute(mount.mountPoint) || group.split('/').includes('..')) continue;
    const root = mount.root === '/' ? '' : mount.root;
    if (group !== root && !group.startsWith(`${root}/`)) continue;
    const segments = group.slice(root.length).split('/').filter((segment) => segment !== '' && segment !== '.');
    if (segments.length > MAX_CGROUP_DEPTH) continue;
    for (let depth = segments.length; depth >= 0; depth--) {
      const dir = join(fsRoot, mount.mountPoint, posix.join('/', ...segments.slice(0, depth)));
      const limit = groupLimit(dir, mount.version);
      if (limit !== undefined && (tightest === undefined || limit.cpus < tightest.cpus)) tightest = limit;
    }
  }
  return tightest;
}

/** This process's budget, read once: the kernel's limits do not change under a run often enough to look again. */
export const cpuBudget: CpuBudget = cpuBudgetOf(availableParallelism(), readCpuQuota());
