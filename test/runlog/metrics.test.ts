import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricsLog, parseMetrics } from '../../src/runlog/metrics.js';

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'reals-metrics-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('each log call is one JSON line in the file at once, and in the history by name', () => withDir((dir) => {
  const path = join(dir, 'metrics.jsonl');
  const log = new MetricsLog(path);
  log.log(100, { loss: 0.5, lr: 1e-4 }, 1000.25);
  assert.equal(readFileSync(path, 'utf8'), '{"step":100,"time":1000.25,"loss":0.5,"lr":0.0001}\n', 'written before close');
  log.log(200, { loss: 0.25 });
  log.log(300, { loss: NaN, grad_norm: 3 });
  log.close();
  assert.throws(() => log.log(400, { loss: 1 }), /closed/);

  assert.deepEqual(log.series('loss'), [[100, 0.5], [200, 0.25], [300, NaN]]);
  assert.deepEqual(log.series('grad_norm'), [[300, 3]]);
  assert.deepEqual(log.series('missing'), []);
  const records = parseMetrics(readFileSync(path, 'utf8'));
  assert.equal(records.length, 3);
  assert.ok(Math.abs(records[1]!.time - Date.now() / 1000) < 60);
  assert.deepEqual(records[2]!.values, { loss: NaN, grad_norm: 3 }, 'NaN is written as null and read back as NaN');
  assert.throws(() => new MetricsLog(path).log(1, { step: 2 }), /"step" is reserved/);
}));

test('resuming from step T keeps the records up to T, drops later ones and a torn last line, then appends', () => withDir((dir) => {
  const path = join(dir, 'metrics.jsonl');
  const first = new MetricsLog(path);
  for (const step of [100, 200, 300, 400]) first.log(step, { loss: step / 1000 }, step);
  first.close();
  appendFileSync(path, '{"step":500,"time":50');

  const resumed = new MetricsLog(path, { resumeStep: 200 });
  assert.deepEqual(resumed.series('loss'), [[100, 0.1], [200, 0.2]]);
  resumed.log(300, { loss: 0.31 }, 301);
  resumed.close();
  assert.deepEqual(parseMetrics(readFileSync(path, 'utf8')).map((r) => [r.step, r.values.loss]), [[100, 0.1], [200, 0.2], [300, 0.31]]);

  const fresh = new MetricsLog(path);
  fresh.close();
  assert.equal(readFileSync(path, 'utf8'), '', 'without resumeStep the file starts empty');
  const created = new MetricsLog(join(dir, 'new.jsonl'), { resumeStep: 5 });
  created.log(6, { loss: 1 }, 6);
  created.close();
  assert.equal(readFileSync(join(dir, 'new.jsonl'), 'utf8'), '{"step":6,"time":6,"loss":1}\n', 'resuming without a file starts one');
}));

test('a malformed line is an error naming the file and line', () => withDir((dir) => {
  const path = join(dir, 'metrics.jsonl');
  writeFileSync(path, '{"step":1,"time":1,"loss":1}\n{"step":2,"time":2,"loss":"x"}\n');
  assert.throws(() => new MetricsLog(path, { resumeStep: 5 }), new RegExp(`${path}:2: "loss" is "x", not a number`));
  assert.throws(() => parseMetrics('{"step":1,"time":1}\nnot json\n', 'm.jsonl'), /m\.jsonl:2: not a JSON object/);
  assert.throws(() => parseMetrics('{"time":1}\n', 'm.jsonl'), /m\.jsonl:1: a record needs numeric "step" and "time"/);
}));
