// A DataLoader worker thread: decodes, crops and normalizes images straight into the batch's
// shared buffer, so the training thread never touches a JPEG.
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { loadImageInto } from './image.js';

/** A request: one item into `buffer` (a SharedArrayBuffer of float32) at `offset` elements. */
export interface DecodeTask { id: number; path: string; resolution: number; flip: boolean; buffer: SharedArrayBuffer; offset: number }
/** The answer: `error` is null on success; `ms` is the time spent on the item. */
export interface DecodeResult { id: number; error: string | null; ms: number }

const port = parentPort;
if (port === null) throw new Error('decode-worker.ts runs as a worker thread started by DataLoader');
port.on('message', async (task: DecodeTask) => {
  const start = performance.now();
  let error: string | null = null;
  try {
    await loadImageInto(task.path, task.resolution, task.flip, new Float32Array(task.buffer), task.offset);
  } catch (e) {
    error = (e as Error).message;
  }
  port.postMessage({ id: task.id, error, ms: performance.now() - start } satisfies DecodeResult);
});
