// `--load N` of the bench: N busy-loop processes beside the measurement, as a browser, a second
// job or a CI neighbour would be. Each loop ends by itself after `maxSeconds`, or as soon as the
// bench that started it is gone (its parent changes), so a killed bench never leaves a CPU hog behind.
import { spawn, type ChildProcess } from 'node:child_process';

/** Starts `count` busy loops, each bounded to `maxSeconds`; returns the function that stops them. */
export function startLoad(count: number, maxSeconds: number): () => void {
  const loops: ChildProcess[] = [];
  const script = `const end = Date.now() + ${Math.round(maxSeconds * 1000)}; const parent = process.ppid; let x = 0;
    while (Date.now() < end && process.ppid === parent) { for (let i = 0; i < 1e6; i++) x += i; }`;
  for (let i = 0; i < count; i++) loops.push(spawn(process.execPath, ['-e', script], { stdio: 'ignore' }));
  const stop = (): void => { for (const loop of loops) loop.kill('SIGKILL'); };
  process.once('exit', stop);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => { stop(); process.exit(128 + (signal === 'SIGINT' ? 2 : 15)); });
  return stop;
}
