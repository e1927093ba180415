// The teacher study (docs/study/teachers/README.md, issue 26 item 2): each teacher's linear probe
// and LDS with `reals teacher probe`'s library function at the settings fixed in PROBE, before any
// teacher is used for alignment; one JSON file per measurement, and the table made from them.
//   node --import tsx scripts/teacher-study.ts measure hog|supervised|ssl-200|ssl-long@STEP [--out DIR]
//   node --import tsx scripts/teacher-study.ts table [--out DIR]
// --out (default docs/study/teachers): another CPU model's measurements go in a folder of their own
// (docs/study/teachers/epyc-zen5), since its probes, the random init's among them, differ in the last bits.
// ssl-200 is the demo's self-supervised teacher (scripts/teacher-long.sh's settings with a 200-step
// target); ssl-long@STEP is the long run's checkpoint at STEP (scripts/teacher-long.sh);
// supervised is the demo's stand-in (src/demo/teacher.ts) at the quick profile's settings.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runTeacherProbe, type TeacherProbeResult, type TeacherProbeRunOptions } from '../src/pipelines/teacher.js';
import { DEMO_PROFILES } from '../src/demo/pipeline.js';
import { trainTeacher } from '../src/demo/teacher.js';
import { pinStudyComputation, sourceCommit } from '../src/demo/study.js';
import { fileSha256 } from '../src/io/index.js';
import { cpuFamilyModel } from '../src/torch/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_OUT = join(ROOT, 'docs/study/teachers');
const WORK = join(ROOT, 'study-work/teachers');
const LONG_RUN = join(ROOT, 'study-work/teacher-long/000-teacher');
const VIT_TINY = 'configs/teacher/vit-tiny.json';

/** Fixed before the first measurement; never changed to favour a teacher. */
const PROBE = {
  dataPath: 'fashion-mnist', imageSize: 32, probeImages: 2000, epochs: 100, lr: 1e-3, seed: 0, ldsFarDistance: 6, hogCellSize: 4,
} satisfies Partial<TeacherProbeRunOptions>;

interface TeacherRecord {
  teacher: string;
  description: string;
  /** Training steps (0: HOG). */
  steps: number;
  /** Seconds of training: measured around it, or the sum of the run's logged step times (metrics.jsonl). */
  trainSeconds: number;
  dinoModel: string;
  checkpoint: { path: string; sha256: string } | null;
  probeSettings: typeof PROBE;
  result: TeacherProbeResult;
  probeSeconds: number;
  cpu: string;
  /** torch.cpuFamilyModel(); absent in the records made before it was kept. */
  cpuFamilyModel?: string | null;
  cores: number;
  /** 1-minute load average when the probe started and ended. */
  load: [number, number];
  date: string;
  /** The checkout's commit, `-dirty` when tracked files differ (older records: `git rev-parse HEAD`). */
  commit: string | null;
}

/** Seconds of the first `upTo` steps of a teacher train run, summed from metrics.jsonl's per-record steps_per_sec. */
function loggedTrainSeconds(runDir: string, upTo: number): number {
  let seconds = 0;
  let previous = 0;
  for (const line of readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const record = JSON.parse(line) as { step: number; steps_per_sec: number };
    if (record.step > upTo) break;
    seconds += (record.step - previous) / record.steps_per_sec;
    previous = record.step;
  }
  if (previous !== upTo) throw new Error(`${runDir}/metrics.jsonl: no record at step ${upTo} (last ${previous}); give a step that is a multiple of --log-every`);
  return seconds;
}

interface Teacher { description: string; steps: number; trainSeconds: number; dinoModel: string; dinoCkpt?: string }

async function prepare(name: string): Promise<Teacher> {
  if (name === 'hog') return { description: 'HOG (9 orientations, levels [1, 2]) on 4-pixel cells: training-free', steps: 0, trainSeconds: 0, dinoModel: 'hog' };
  if (name === 'supervised') {
    const profile = DEMO_PROFILES.quick;
    const t = profile.teacher;
    const started = performance.now();
    const trained = await trainTeacher({
      config: { imgSize: 32, patchSize: 4, embedDim: t.embedDim, depth: t.depth, numHeads: t.numHeads }, inputSize: 32,
      steps: t.steps, batchSize: t.batchSize, lr: t.lr, seed: 0, testImages: profile.testImages, dir: join(WORK, 'supervised'),
    });
    return {
      description: `the demo's supervised stand-in (quick profile: ${t.steps} steps of batch ${t.batchSize}, labels; test accuracy ${trained.testAccuracy.toFixed(3)})`,
      steps: trained.steps, trainSeconds: (performance.now() - started) / 1000, dinoModel: trained.configPath, dinoCkpt: trained.checkpoint,
    };
  }
  if (name === 'ssl-200') {
    const dir = join(WORK, 'ssl-200');
    const run = spawnSync('bash', [join(ROOT, 'scripts/teacher-long.sh')], {
      stdio: 'inherit', env: { ...process.env, TEACHER_LONG_DIR: dir, TEACHER_LONG_STEPS: '200' },
    });
    if (run.status !== 0) throw new Error(`scripts/teacher-long.sh (200 steps) failed with status ${run.status}`);
    const runDir = join(dir, '000-teacher');
    return {
      description: 'self-supervised (DINO + iBOT + KoLeo), the demo\'s 200 steps: schedules over 200 steps',
      steps: 200, trainSeconds: loggedTrainSeconds(runDir, 200), dinoModel: VIT_TINY, dinoCkpt: join(runDir, 'teacher/dino-teacher.safetensors'),
    };
  }
  const long = /^ssl-long@(\d+)$/.exec(name);
  if (long !== null) {
    const step = Number(long[1]);
    const checkpoint = join(LONG_RUN, 'checkpoints', `${String(step).padStart(7, '0')}.safetensors`);
    if (!existsSync(checkpoint)) throw new Error(`${checkpoint}: the long run has no checkpoint at step ${step} yet (bash scripts/teacher-long.sh continues it)`);
    return {
      description: `self-supervised, the long run (scripts/teacher-long.sh: schedules over ${longRunTarget()} steps) at step ${step}: its EMA teacher`,
      steps: step, trainSeconds: loggedTrainSeconds(LONG_RUN, step), dinoModel: VIT_TINY, dinoCkpt: checkpoint,
    };
  }
  throw new Error(`teacher-study: unknown teacher ${name}; one of hog, supervised, ssl-200, ssl-long@STEP`);
}

/** The long run's --max-steps, from its args.json. */
function longRunTarget(): number {
  return (JSON.parse(readFileSync(join(LONG_RUN, 'args.json'), 'utf8')) as { maxSteps: number }).maxSteps;
}

function fileName(teacher: string): string {
  return `${teacher.replace('@', '-')}.json`;
}

async function measure(name: string, out: string): Promise<void> {
  pinStudyComputation();
  const teacher = await prepare(name);
  const loadStart = loadavg()[0]!;
  const started = performance.now();
  const result = await runTeacherProbe({ ...PROBE, dinoModel: teacher.dinoModel, dinoCkpt: teacher.dinoCkpt });
  const probeSeconds = (performance.now() - started) / 1000;
  const record: TeacherRecord = {
    teacher: name, description: teacher.description, steps: teacher.steps, trainSeconds: teacher.trainSeconds,
    dinoModel: teacher.dinoModel.startsWith(ROOT) ? teacher.dinoModel.slice(ROOT.length + 1) : teacher.dinoModel,
    checkpoint: teacher.dinoCkpt === undefined ? null : { path: teacher.dinoCkpt.slice(ROOT.length + 1), sha256: fileSha256(teacher.dinoCkpt) },
    probeSettings: PROBE, result, probeSeconds, cpu: cpus()[0]?.model ?? 'unknown', cpuFamilyModel: cpuFamilyModel(), cores: cpus().length, load: [loadStart, loadavg()[0]!],
    date: new Date().toISOString(), commit: sourceCommit(),
  };
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, fileName(name)), `${JSON.stringify(record, null, 2)}\n`);
  console.log(`${name}: probe ${result.accuracy.toFixed(3)}, LDS ${result.lds.toFixed(3)} (random init: ${result.randomInitAccuracy?.toFixed(3) ?? 'none'}, ${result.ldsRandomInit?.toFixed(3) ?? 'none'})`);
}

const ORDER = ['hog', 'random', 'supervised', 'ssl-200', 'ssl-long'];

function table(out: string): void {
  const records = readdirSync(out).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(readFileSync(join(out, f), 'utf8')) as TeacherRecord);
  // Every ViT teacher is vit-tiny's config, and its random init is the config under manualSeed(PROBE.seed): one row, the same in every file.
  const vits = records.filter((r) => r.result.randomInitAccuracy !== null);
  const randoms = new Set(vits.map((r) => JSON.stringify([r.result.randomInitAccuracy, r.result.ldsRandomInit, r.result.ldsRandomInitStd])));
  if (randoms.size > 1) throw new Error(`teacher-study: the random-init backbone differs between the files: ${[...randoms].join(' ')}`);
  const rank = (r: TeacherRecord) => ORDER.indexOf(r.teacher.replace(/@.*/, '')) * 1e9 + r.steps;
  const n = PROBE.probeImages;
  const lds = (mean: number, std: number) => `${mean.toFixed(3)} ± ${(std / Math.sqrt(n)).toFixed(3)}`;
  // The paired s.e. is ~1e-4: four decimals.
  const gain = (r: TeacherProbeResult) => (r.ldsRandomInit === null ? '' : `${(r.lds - r.ldsRandomInit).toFixed(4)} ± ${(r.ldsGainStd! / Math.sqrt(n)).toFixed(4)}`);
  const seconds = (s: number) => (s === 0 ? '0' : s < 600 ? `${s.toFixed(0)} s` : `${(s / 3600).toFixed(2)} h`);
  const rows = [...records].sort((a, b) => rank(a) - rank(b)).map((r) => {
    const cells = [r.teacher, String(r.steps), r.result.accuracy.toFixed(3), lds(r.result.lds, r.result.ldsStd), gain(r.result), seconds(r.trainSeconds), seconds(r.probeSeconds),
      `${r.load[0].toFixed(1)}-${r.load[1].toFixed(1)}`, r.description];
    return `| ${cells.join(' | ')} |`;
  });
  if (vits.length > 0) {
    const r = vits[0]!.result;
    rows.splice(records.some((x) => x.teacher === 'hog') ? 1 : 0, 0,
      `| random init | 0 | ${r.randomInitAccuracy!.toFixed(3)} | ${lds(r.ldsRandomInit!, r.ldsRandomInitStd!)} | 0 | 0 | (with each ViT row) | | vit-tiny's config under torch.manualSeed(${PROBE.seed}): what training adds to |`);
  }
  const cpusSeen = [...new Set(records.map((r) => `${r.cpu} (${r.cores} cores)`))].join(', ');
  const text = `# Teachers, measured before use

Generated by \`node --import tsx scripts/teacher-study.ts table\` from the JSON files here (one per
measurement, \`scripts/teacher-study.ts measure <teacher>\`); do not edit by hand.

Each teacher's linear probe and LDS, with \`reals teacher probe\`'s function (\`runTeacherProbe\`)
at settings fixed before the first measurement: Fashion-MNIST, ${PROBE.probeImages} train and
${PROBE.probeImages} test images (seeded subsets, seed ${PROBE.seed}), the frozen features (CLS token
and mean patch token, standardised) into one Linear layer trained by Adam (lr ${PROBE.lr},
${PROBE.epochs} epochs); LDS (iREPA's local-vs-distant similarity) of the final patch tokens on the
8x8 grid of 32-pixel images (patch 4; HOG on ${PROBE.hogCellSize}-pixel cells, the demo's f4 latent
grid), far pairs at Manhattan distance >= ${PROBE.ldsFarDistance}, over the ${PROBE.probeImages} test images.
Every ViT is vit-tiny (\`configs/teacher/vit-tiny.json\`: 64 wide, depth 4, patch 4). fp32.

The probe reads pooled features (DINOv2's linear eval: CLS token and mean patch token). HOG's CLS
stand-in is its mean token, so its probe sees one global orientation histogram, with the layout
pooled away: a lower bound on what its tokens hold. The alignment losses read the patch tokens
position by position, which is what LDS scores (iREPA: LDS, not the probe, tracks generation FID).
One seed: on ${PROBE.probeImages} test images a probe accuracy p has a binomial standard error of
sqrt(p (1 - p) / ${PROBE.probeImages}), about 0.011, so accuracies closer than about 0.03 are not told apart.
LDS is given with its standard error over the test images (their standard deviation / sqrt(${PROBE.probeImages}));
two rows whose LDS differ by more than 3 times the larger s.e. differ at 95% even unpaired (1.96 sqrt 2 < 3).
A ViT's gain over its random init is paired image by image (the same images, in the same order), so
its s.e. is that of the per-image differences: the gain is resolved beyond about 2 of those.

| teacher | steps | probe accuracy | LDS ± s.e. | LDS - random init ± paired s.e. | training | probe | load (1 min) | what |
|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Training time: measured around the supervised teacher's training; for the self-supervised runs,
the sum of their logged step times (metrics.jsonl). Times are on a shared machine at the load shown,
one thread, niced: compare them only within a row's load. CPU: ${cpusSeen}.

The long run continues with \`bash scripts/teacher-long.sh\` (it resumes from its newest
checkpoint); a milestone is measured with \`node --import tsx scripts/teacher-study.ts measure ssl-long@STEP\`.
At its target the run exports the EMA teacher to \`study-work/teacher-long/000-teacher/teacher/\`
(\`dino-model.json\`, \`dino-teacher.safetensors\`: 208,000 float32 parameters, 0.8 MB), the file the
demo could ship if the table shows it clearly better than its random init; the same command
reproduces it (fp32 on one thread: the same bits on the same CPU, float32 rounding apart elsewhere).
The alignment study's \`ssl\` cells use the copy of that export committed in
\`docs/study/teachers/ssl-long/\` once there is one (\`SSL_TEACHER_DIR\` in src/demo/align-study.ts;
the protocol's addendum of 2026-12-07), so that every cell, in any session, aligns to the same teacher.
`;
  writeFileSync(join(out, 'README.md'), text);
}

const { positionals, values } = parseArgs({ allowPositionals: true, options: { out: { type: 'string', default: DEFAULT_OUT } } });
const [command, teacher] = positionals;
const out = resolve(values.out);
if (command === 'measure' && teacher !== undefined) await measure(teacher, out);
else if (command === 'table') table(out);
else throw new Error('usage: node --import tsx scripts/teacher-study.ts measure hog|supervised|ssl-200|ssl-long@STEP [--out DIR] | table [--out DIR]');
