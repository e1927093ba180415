// One file from a URL to a path: streamed to a temporary name beside it, checked (the bytes the
// server announced, the size and sha256 where upstream publishes them), then renamed, so that a
// killed or truncated download never leaves a file under the final name.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import cliProgress from 'cli-progress';

export interface DownloadOptions {
  /** The file's sha256 (hex), or a prefix of it (torch hub's `-<hex>` file-name suffix). */
  sha256?: string;
  /** The file's size in bytes. */
  size?: number;
  /** Draw a progress bar on stderr (default: when stderr is a terminal). */
  progress?: boolean;
  /** Request headers (e.g. a Hugging Face token). */
  headers?: Record<string, string>;
}

/** The value of HF_HUB_OFFLINE or `--offline`: no request leaves the machine. */
export function isOffline(offline?: boolean): boolean {
  return offline === true || ['1', 'ON', 'YES', 'TRUE'].includes((process.env.HF_HUB_OFFLINE ?? '').toUpperCase());
}

/** The error of a file that is neither cached nor downloadable; it says where to put it by hand. */
export function notCachedError(url: string, path: string, reason: string): Error {
  return new Error(`${reason}: cannot fetch ${url}; download it by hand to ${path}`);
}

const describe = (error: unknown): string => {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message;
};

/** Fetches `url`; a network failure is an error naming the URL and where the file would go. */
export async function request(url: string, path: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (error) {
    throw notCachedError(url, path, `the network is unreachable (${describe(error)})`);
  }
}

/** Downloads `url` to `path` (its folder is made), checked as `options` say; returns `path`. */
export async function downloadFile(url: string, path: string, options: DownloadOptions = {}): Promise<string> {
  mkdirSync(dirname(path), { recursive: true });
  const response = await request(url, path, { headers: options.headers });
  if (!response.ok || response.body === null) {
    throw notCachedError(url, path, `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`);
  }
  const announced = Number(response.headers.get('content-length') ?? NaN);
  const expected = options.size ?? (Number.isFinite(announced) ? announced : undefined);
  const temporary = `${path}.incomplete-${process.pid}`;
  const fd = openSync(temporary, 'w');
  const hash = createHash('sha256');
  const showBar = options.progress ?? process.stderr.isTTY === true;
  const bar = showBar ? new cliProgress.SingleBar({
    format: `${url.split('?')[0]!.split('/').pop()} |{bar}| {percentage}% {value}/{total} MB`, stream: process.stderr, hideCursor: true,
  }, cliProgress.Presets.shades_classic) : null;
  bar?.start(Math.ceil((expected ?? 0) / 2 ** 20), 0);
  let received = 0;
  try {
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        writeSync(fd, chunk);
        hash.update(chunk);
        received += chunk.byteLength;
        bar?.update(Math.floor(received / 2 ** 20));
      }
    } catch (error) {
      throw new Error(`${url}: the download broke off after ${received} bytes${expected !== undefined ? ` of ${expected}` : ''} (${describe(error)}); run again to retry`);
    }
    if (expected !== undefined && received !== expected) {
      throw new Error(`${url}: got ${received} bytes, expected ${expected} (a truncated download); run again to retry`);
    }
    const digest = hash.digest('hex');
    if (options.sha256 !== undefined && !digest.startsWith(options.sha256.toLowerCase())) {
      throw new Error(`${url}: sha256 ${digest} does not match the published ${options.sha256}; not kept`);
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(temporary, path);
    return path;
  } catch (error) {
    try { closeSync(fd); } catch { /* already closed */ }
    rmSync(temporary, { force: true });
    throw error;
  } finally {
    bar?.stop();
  }
}
