// Merging demo runs: the reproduction study runs its cells as separate `reals demo` processes (one
// per core: a seed and a protocol each), then merges their metrics.json into one result with the
// seeds and latent spaces of all of them, and writes that result's report. A latent space that
// several runs trained for the same seed (the stage-1 VAE is in every one) must have the same
// numbers in each, as a deterministic CPU run gives; anything else is refused.
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { writeReport } from './report.js';
import { ALIGN_LOSSES, DEFAULT_LATENT_CHANNELS, PROTOCOLS, TEACHER_KINDS, latentSpaces, type DemoCells, type DemoResult } from './results.js';

/**
 * The metrics.json of a demo run folder. A run from before the vf loss and `--latent-channels`
 * recorded no losses and no width: its ReaLS spaces are cos ones, its VAEs SD-VAE's 4 channels wide.
 */
export function readDemoResult(dir: string): DemoResult {
  const path = join(dir, 'metrics.json');
  if (!existsSync(path)) throw new Error(`${dir}: no metrics.json (not a finished reals demo run)`);
  const result = JSON.parse(readFileSync(path, 'utf8')) as DemoResult;
  result.cells.losses ??= ['cos'];
  for (const space of result.spaces) space.loss ??= space.role === 'reals' ? 'cos' : null;
  result.profile.vae.latentChannels ??= DEFAULT_LATENT_CHANNELS;
  return result;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Merges the runs in `dirs` into `out`: one metrics.json, report.md and report.html over every seed
 * and latent space, with `out/seed-N/<space>` linked to the run that trained it and the figures
 * copied from the first run of each.
 */
export async function mergeDemoRuns(dirs: readonly string[], out: string): Promise<DemoResult> {
  if (dirs.length === 0) throw new Error('demo merge: no run folders given');
  const sources = dirs.map((dir) => ({ dir, result: readDemoResult(dir) }));
  const first = sources[0]!.result;
  // Seeds differ by design; a teacher's settings matter only to the runs that train it, whose records are compared below.
  const settings = ({ seeds: _, teacher: __, sslTeacher: ___, ...rest }: DemoResult['profile']) => rest;
  const profile = settings(first.profile);
  for (const { dir, result } of sources) {
    const other = settings(result.profile);
    if (!sameJson(other, profile)) throw new Error(`demo merge: ${dir} ran profile ${result.profile.name} with other settings than ${sources[0]!.dir}`);
    if (!sameJson(result.classifier.testAccuracy, first.classifier.testAccuracy)) {
      throw new Error(`demo merge: ${dir}'s evaluation classifier differs from ${sources[0]!.dir}'s (test accuracy ${result.classifier.testAccuracy} vs ${first.classifier.testAccuracy})`);
    }
  }
  const cells: DemoCells = {
    teachers: TEACHER_KINDS.filter((t) => sources.some((s) => s.result.cells.teachers.includes(t))),
    protocols: PROTOCOLS.filter((p) => sources.some((s) => s.result.cells.protocols.includes(p))),
    alignWeights: [...new Set(sources.flatMap((s) => s.result.cells.alignWeights))].sort((a, b) => a - b),
    losses: ALIGN_LOSSES.filter((l) => sources.some((s) => s.result.cells.losses.includes(l))),
  };
  const spaces = latentSpaces(cells).filter((space) => sources.some((s) => s.result.spaces.some((x) => x.id === space.id)));
  const seeds = [...new Set(sources.flatMap((s) => s.result.profile.seeds))].sort((a, b) => a - b);
  const teachers: DemoResult['teachers'] = {};
  const runs: DemoResult['runs'] = {};
  const origin = new Map<string, string>();
  mkdirSync(join(out, 'figures'), { recursive: true });
  for (const { dir, result } of sources) {
    for (const [kind, record] of Object.entries(result.teachers)) {
      const known = teachers[kind as keyof typeof teachers];
      if (known !== undefined && !sameJson({ ...known, checkpoint: null, configPath: null }, { ...record, checkpoint: null, configPath: null })) throw new Error(`demo merge: the ${kind} teacher of ${dir} differs from another run's`);
      teachers[kind as keyof typeof teachers] = record;
    }
    for (const [seed, bySpace] of Object.entries(result.runs)) {
      for (const [space, scores] of Object.entries(bySpace)) {
        const key = `seed-${seed}/${space}`;
        const known = runs[seed]?.[space];
        if (known !== undefined) {
          if (!sameJson(known, scores)) throw new Error(`demo merge: ${key} has other numbers in ${dir} than in ${origin.get(key)}`);
          continue;
        }
        (runs[seed] ??= {})[space] = scores;
        origin.set(key, dir);
        const link = join(out, key);
        rmSync(link, { recursive: true, force: true });
        mkdirSync(join(out, `seed-${seed}`), { recursive: true });
        symlinkSync(relative(join(out, `seed-${seed}`), resolve(dir, key)), link);
      }
    }
    for (const figure of readdirSync(join(dir, 'figures'))) {
      if (!existsSync(join(out, 'figures', figure))) cpSync(join(dir, 'figures', figure), join(out, 'figures', figure));
    }
  }
  for (const seed of seeds) {
    for (const space of spaces) {
      if (runs[String(seed)]?.[space.id] === undefined) throw new Error(`demo merge: no run has latent space ${space.id} for seed ${seed}`);
    }
  }
  const merged: DemoResult = {
    profile: {
      ...first.profile, seeds,
      teacher: (sources.find((s) => s.result.cells.teachers.includes('supervised')) ?? sources[0]!).result.profile.teacher,
      sslTeacher: (sources.find((s) => s.result.cells.teachers.includes('ssl')) ?? sources[0]!).result.profile.sslTeacher,
    },
    cells, spaces, out, threads: first.threads, teachers, classifier: first.classifier, runs,
    // The page stays with its run: the merged report links the first run's.
    webPage: sources.map((s) => s.result.webPage).find((page) => page !== null && page !== undefined && 'dir' in page) ?? null,
    steps: sources.flatMap((s) => s.result.steps), totalSeconds: sources.reduce((sum, s) => sum + s.result.totalSeconds, 0),
  };
  await writeReport(merged);
  writeFileSync(join(out, 'metrics.json'), `${JSON.stringify(merged, null, 2)}\n`);
  return merged;
}
