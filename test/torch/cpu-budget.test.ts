import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuBudgetOf, quotaThreads, readCpuQuota } from '../../src/torch/cpu-budget.js';

const REALS = join(dirname(fileURLToPath(import.meta.url)), '../../bin/reals.js');

/** A fake / with the given files (paths relative to it); removed when the test ends. */
function fakeRoot(t: { after(fn: () => void): void }, files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'reals-cgroup-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const V2_MOUNT = '29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n';
const V1_CPU_MOUNT = '35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct\n';
const OTHER_MOUNTS = '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n';

test('cgroup v2: the tightest cpu.max over the group and every group above it, "max" being none', (t) => {
  const root = fakeRoot(t, {
    'proc/self/cgroup': '0::/kubepods/pod1/app\n',
    'proc/self/mountinfo': OTHER_MOUNTS + V2_MOUNT,
    'sys/fs/cgroup/cpu.max': 'max 100000\n',
    'sys/fs/cgroup/kubepods/cpu.max': 'max 100000\n',
    'sys/fs/cgroup/kubepods/pod1/cpu.max': '150000 100000\n',
    'sys/fs/cgroup/kubepods/pod1/app/cpu.max': '400000 100000\n',
  });
  assert.deepEqual(readCpuQuota(root), { cpus: 1.5, file: join(root, 'sys/fs/cgroup/kubepods/pod1/cpu.max') });
  writeFileSync(join(root, 'sys/fs/cgroup/kubepods/pod1/app/cpu.max'), '50000 200000\n');
  assert.deepEqual(readCpuQuota(root), { cpus: 0.25, file: join(root, 'sys/fs/cgroup/kubepods/pod1/app/cpu.max') });
  for (const dir of ['kubepods/pod1/app', 'kubepods/pod1']) writeFileSync(join(root, 'sys/fs/cgroup', dir, 'cpu.max'), 'max 100000\n');
  assert.equal(readCpuQuota(root), undefined);
});

test('cgroup v1: cfs_quota_us over cfs_period_us of the cpu controller\'s group (-1: none), mounted at the group (docker without a cgroup namespace) or at the top', (t) => {
  // Docker without a cgroup namespace: /proc/self/cgroup names the host's path, the mount's root is that path.
  const docker = fakeRoot(t, {
    'proc/self/cgroup': '12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n',
    'proc/self/mountinfo': OTHER_MOUNTS + '35 25 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n',
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '200000\n',
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000\n',
  });
  assert.deepEqual(readCpuQuota(docker), { cpus: 2, file: join(docker, 'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us') });
  // The whole hierarchy mounted: the group's folder below the mount point, and the groups above it.
  const host = fakeRoot(t, {
    'proc/self/cgroup': '4:cpu,cpuacct:/batch/job7\n',
    'proc/self/mountinfo': V1_CPU_MOUNT,
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '-1\n',
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000\n',
    'sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_quota_us': '300000\n',
    'sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_period_us': '100000\n',
    'sys/fs/cgroup/cpu,cpuacct/batch/job7/cpu.cfs_quota_us': '-1\n',
    'sys/fs/cgroup/cpu,cpuacct/batch/job7/cpu.cfs_period_us': '100000\n',
  });
  assert.deepEqual(readCpuQuota(host), { cpus: 3, file: join(host, 'sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_quota_us') });
  writeFileSync(join(host, 'sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_quota_us'), '-1\n');
  assert.equal(readCpuQuota(host), undefined);
});

test('a hybrid host (v1 cpu controller beside v2) and mount points with escaped spaces', (t) => {
  const root = fakeRoot(t, {
    'proc/self/cgroup': '4:cpu:/slurm/job\n0::/user.slice\n',
    'proc/self/mountinfo': OTHER_MOUNTS + '30 23 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n' +
      '35 25 0:30 / /sys/fs/cgroup/cpu\\040limits rw,nosuid - cgroup cgroup rw,cpu\n',
    'sys/fs/cgroup/cpu limits/slurm/job/cpu.cfs_quota_us': '50000\n',
    'sys/fs/cgroup/cpu limits/slurm/job/cpu.cfs_period_us': '100000\n',
  });
  assert.deepEqual(readCpuQuota(root), { cpus: 0.5, file: join(root, 'sys/fs/cgroup/cpu limits/slurm/job/cpu.cfs_quota_us') });
});

test('what is not a limit is none: no files, malformed or oversized files, zero periods, and group paths that leave their mount', (t) => {
  assert.equal(readCpuQuota(fakeRoot(t, {})), undefined);
  const limit = (cpuMax: string): ReturnType<typeof readCpuQuota> => readCpuQuota(fakeRoot(t, {
    'proc/self/cgroup': '0::/app\n', 'proc/self/mountinfo': V2_MOUNT, 'sys/fs/cgroup/app/cpu.max': cpuMax,
  }));
  for (const bad of ['', 'max', '100000', '-1 100000', '100000 0', '1e5 100000', '0x10 100000', '100000 100000 5', `${'1'.repeat(5000)} 100000`]) {
    assert.equal(limit(bad), undefined, `cpu.max '${bad.slice(0, 20)}'`);
  }
  assert.equal(limit('100000 100000\n')?.cpus, 1, 'the same folder with a good file');
  // The process's group outside the mounted part of the hierarchy (another namespace's), or climbing out of it.
  for (const group of ['/other', '/app/../../../etc', '/..']) {
    const root = fakeRoot(t, {
      'proc/self/cgroup': `0::${group}\n`,
      'proc/self/mountinfo': '29 23 0:26 /app /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n',
      'sys/fs/cgroup/cpu.max': '100000 100000\n',
      'etc/cpu.max': '100000 100000\n',
    });
    assert.equal(readCpuQuota(root), undefined, group);
  }
  // A relative mount point is not a place to read from.
  assert.equal(readCpuQuota(fakeRoot(t, {
    'proc/self/cgroup': '0::/\n', 'proc/self/mountinfo': '29 23 0:26 / sys/fs/cgroup rw - cgroup2 cgroup2 rw\n', 'sys/fs/cgroup/cpu.max': '100000 100000\n',
  })), undefined);
});

test('the budget: the affinity count within the quota\'s threads, a partial CPU counting from a half', () => {
  assert.deepEqual([0.1, 0.5, 1, 1.4, 1.5, 2.49, 3].map(quotaThreads), [1, 1, 1, 1, 2, 2, 3]);
  assert.deepEqual(cpuBudgetOf(8, undefined), { cpus: 8, affinity: 8 });
  assert.deepEqual(cpuBudgetOf(8, { cpus: 2, file: 'f' }), { cpus: 2, affinity: 8, quota: { cpus: 2, file: 'f' } });
  assert.deepEqual(cpuBudgetOf(2, { cpus: 6, file: 'f' }), { cpus: 2, affinity: 2, quota: { cpus: 6, file: 'f' } });
});

/** A cgroup v1 cpu folder this process can make a child group in (root, a writable cpu controller), else why not. */
function writableCpuController(): { dir: string } | { why: string } {
  if (process.getuid?.() !== 0) return { why: 'not root' };
  if (availableParallelism() < 2) return { why: 'fewer than 2 CPUs: a quota of one changes nothing' };
  for (const dir of ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct']) {
    try {
      const probe = mkdtempSync(join(dir, 'reals-test-'));
      rmdirSync(probe);
      return { dir };
    } catch {
      // not this one
    }
  }
  return { why: 'no writable cgroup v1 cpu controller' };
}

test('under a real quota of one CPU, reals env reports it and runs one thread in bf16 and fp32; OMP_NUM_THREADS stays the user\'s', (t) => {
  const controller = writableCpuController();
  if ('why' in controller) {
    t.skip(controller.why);
    return;
  }
  const group = mkdtempSync(join(controller.dir, 'reals-test-'));
  t.after(() => rmdirSync(group));
  writeFileSync(join(group, 'cpu.cfs_period_us'), '100000');
  writeFileSync(join(group, 'cpu.cfs_quota_us'), '100000');
  assert.equal(readFileSync(join(group, 'cpu.cfs_quota_us'), 'utf8').trim(), '100000');
  const env = (extra: Record<string, string>): Record<string, unknown> => {
    // The shell joins the group, then becomes node: only that process (and its threads) is limited.
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...extra };
    for (const name of ['OMP_NUM_THREADS', 'MKL_NUM_THREADS']) if (!(name in extra)) delete childEnv[name];
    const run = spawnSync('sh', ['-c', `echo $$ > '${group}/cgroup.procs' && exec "${process.execPath}" "${REALS}" env`], { encoding: 'utf8', env: childEnv });
    assert.equal(run.status, 0, run.stderr);
    return JSON.parse(run.stdout) as Record<string, unknown>;
  };
  const limited = env({});
  assert.deepEqual(limited.cpus, { cpus: 1, affinity: availableParallelism(), quota: { cpus: 1, file: join(group, 'cpu.cfs_quota_us') } });
  assert.deepEqual(limited.threads, { fp32: 1, bf16: 1 });
  assert.deepEqual(env({ OMP_NUM_THREADS: '2' }).threads, { fp32: 2, bf16: 2 }, 'a chosen count is left alone');
});
