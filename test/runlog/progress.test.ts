import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { formatDuration, progress, slowdownWatch } from '../../src/runlog/progress.js';

class Capture extends Writable {
  text = '';
  constructor(readonly isTTY: boolean, readonly columns = 200) { super(); }
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

test('formatDuration writes H:MM:SS', () => {
  assert.equal(formatDuration(0), '0:00:00');
  assert.equal(formatDuration(3 * 3600 + 4 * 60 + 5.4), '3:04:05');
  assert.equal(formatDuration(Infinity), '?');
});

test('without a terminal: a line at most every intervalSeconds and one at stop, with rate, ETA and fields', async () => {
  const stream = new Capture(false);
  let clock = 0;
  const bar = progress({ total: 1000, label: 'sit', itemsPerStep: 256, stream, intervalSeconds: 10, now: () => clock });
  for (let step = 1; step <= 100; step++) {
    clock = step * 500; // two steps per second
    bar.update(step, { loss: 0.123456, phase: 'warmup' });
  }
  bar.stop();
  await new Promise((resolve) => setImmediate(resolve));
  const lines = stream.text.trimEnd().split('\n');
  // At steps 1, 21, 41, 61, 81 (every 10 s), then the final one.
  assert.equal(lines.length, 6, stream.text);
  assert.equal(lines[1], 'sit: 21/1000 it (2.1%) | 2.00 it/s, 512.0 img/s | elapsed 0:00:11 | ETA 0:08:10 | loss=0.1235 phase=warmup');
  assert.match(lines[5]!, /^sit: 100\/1000 it \(10\.0%\) \| 2\.00 it\/s, 512\.0 img\/s \| elapsed 0:00:50 \| ETA 0:07:30 \| loss=0\.1235/);
  assert.ok(!stream.text.includes('\x1b'), 'no terminal escapes');
});

test('without a terminal: the last step is printed once, whether or not its update printed it', () => {
  for (const [steps, expected] of [[1, 1], [3, 2]] as const) {
    const stream = new Capture(false);
    let clock = 0;
    const bar = progress({ total: steps, label: 'cache', stream, intervalSeconds: 15, now: () => clock });
    for (let step = 1; step <= steps; step++) {
      clock = step * 1000;
      bar.update(step);
    }
    bar.stop();
    const lines = stream.text.trimEnd().split('\n');
    // Step 1 prints (the first update always does); with 3 steps, stop adds step 3's line.
    assert.equal(lines.length, expected, stream.text);
    assert.match(lines.at(-1)!, new RegExp(`^cache: ${steps}/${steps} it`));
  }
});

test('a resumed run counts its rate from the start step', () => {
  const stream = new Capture(false);
  let clock = 0;
  const bar = progress({ total: 400, start: 300, unit: 'step', stream, now: () => clock });
  clock = 10_000;
  bar.update(350);
  bar.stop();
  const lines = stream.text.trimEnd().split('\n');
  assert.equal(lines.at(-1), 'progress: 350/400 step (87.5%) | 5.00 step/s | elapsed 0:00:10 | ETA 0:00:10');
});

test('on a terminal: a cli-progress bar with the same fields, redrawn in place', () => {
  const stream = new Capture(true);
  let clock = 0;
  const bar = progress({ total: 10, label: 'align', stream, now: () => clock });
  for (let step = 1; step <= 10; step++) {
    clock = step * 1000;
    bar.update(step, { loss: 2 });
  }
  bar.stop();
  assert.match(stream.text, /\x1b\[/, 'terminal escapes');
  assert.match(stream.text, /align \|█+\| 10\/10 it \(100%\) \| 1\.00 it\/s \| elapsed 0:00:10 \| ETA 0:00:00 \| loss=2/);
});

test('slowdownWatch notes once when two windows in a row take 3x the warm-up rate, with the threads advice', () => {
  const notes: string[] = [];
  const watch = slowdownWatch('sit', 2, (line) => notes.push(line));
  let time = 0;
  const steps = (count: number, ms: number, from: number): number => {
    for (let s = from + 1; s <= from + count; s++) { time += ms; watch(s, time); }
    return from + count;
  };
  let step = steps(3, 500, 0);      // skipped: the first steps allocate
  step = steps(10, 40, step);       // the warm-up window: 40 ms a step
  step = steps(10, 100, step);      // 2.5x: not yet
  step = steps(10, 130, step);      // one slow window alone: not yet
  step = steps(10, 40, step);
  assert.deepEqual(notes, []);
  step = steps(20, 130, step);      // two in a row at 3.25x
  assert.equal(notes.length, 1);
  assert.match(notes[0]!, /^sit: steps now take 3\.3x as long as at the start \(130 vs 40 ms\): .*OMP_NUM_THREADS=1/);
  steps(40, 500, step);
  assert.equal(notes.length, 1, 'once');
  const single: string[] = [];
  const oneThread = slowdownWatch('align', 1, (line) => single.push(line));
  time = 0;
  for (let s = 1; s <= 13; s++) { time += 10; oneThread(s, time); }
  for (let s = 14; s <= 40; s++) { time += 50; oneThread(s, time); }
  assert.equal(single.length, 1);
  assert.doesNotMatch(single[0]!, /OMP_NUM_THREADS/, 'one thread already: no thread advice');
  const governed: string[] = [];
  const adaptive = slowdownWatch('sit', 2, (line) => governed.push(line), true);
  time = 0;
  for (let s = 1; s <= 13; s++) { time += 10; adaptive(s, time); }
  for (let s = 14; s <= 40; s++) { time += 50; adaptive(s, time); }
  assert.equal(governed.length, 1);
  assert.doesNotMatch(governed[0]!, /OMP_NUM_THREADS/, 'the governor already drops threads: no thread advice');
  assert.match(governed[0]!, /thread governor/);
});

test('progress passes each step to the slowdown watch: the note reaches the stream', () => {
  const stream = new Capture(false);
  let clock = 0;
  const bar = progress({ total: 100, label: 'sit', stream, intervalSeconds: 1000, now: () => clock, threads: 2 });
  for (let step = 1; step <= 60; step++) {
    clock += step <= 13 ? 10 : 100;
    bar.update(step);
  }
  assert.match(stream.text, /sit: steps now take 10\.0x as long as at the start/);
});
