// One file from a URL to a path: streamed to a temporary name beside it, checked (the bytes the
// server announced, the size and sha256 where upstream publishes them), then renamed, so that a
// killed or truncated download never leaves a file under the final name.
// A server is not trusted: a download that stalls is given up, one that sends more than its
// Content-Length, its published size or its cap is stopped at that byte, and no name it sends
// becomes a path without passing checkPathComponent and a containment check.
import { createHash } from 'node:crypto';
import { closeSync, constants, fsyncSync, mkdirSync, openSync, realpathSync, renameSync, rmSync, statfsSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import cliProgress from 'cli-progress';
import { namingPath, removeDeadTemporaries, writeAll } from '../io/file.js';

export interface DownloadOptions {
  /** The file's sha256 (hex), or a prefix of it (torch hub's `-<hex>` file-name suffix). */
  sha256?: string;
  /** The file's exact size in bytes (the hub's metadata): another Content-Length, or a body that runs past it, is refused. */
  size?: number;
  /** The most bytes the file may have, for hosts that publish no size: a larger Content-Length or body is refused. */
  maxBytes?: number;
  /** Seconds within which at least STALL_BYTES (or the rest of the file) must arrive; default downloadTimeoutS(). */
  timeoutS?: number;
  /** Draw a progress bar on stderr (default: when stderr is a terminal). */
  progress?: boolean;
  /** Request headers (e.g. a Hugging Face token). */
  headers?: Record<string, string>;
}

/**
 * 60 s: a host that answers has sent a kilobyte long before that (huggingface_hub's read timeout
 * is 10 s, torch.hub's none), and a stalled or 1 B/s server is then given up within two minutes.
 */
export const DEFAULT_DOWNLOAD_TIMEOUT_S = 60;
/** The least a download must receive per timeout window: a server that drips a byte now and then is stalled too. */
export const STALL_BYTES = 1024;

/** The stall timeout: REALS_DOWNLOAD_TIMEOUT_S (seconds) when set, else DEFAULT_DOWNLOAD_TIMEOUT_S. */
export function downloadTimeoutS(): number {
  const raw = process.env.REALS_DOWNLOAD_TIMEOUT_S;
  if (raw === undefined || raw === '') return DEFAULT_DOWNLOAD_TIMEOUT_S;
  const seconds = /^\s*\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : NaN;
  if (!(seconds >= 0.001 && seconds <= 24 * 3600)) {
    throw new Error(`environment variable REALS_DOWNLOAD_TIMEOUT_S must be a number of seconds in [0.001, 86400], got '${raw}'`);
  }
  return seconds;
}

/** `value` for an error message: quoted and escaped (it may come from a server), cut at 80 characters. */
export function quoted(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

/**
 * `name` when it can be one component of a path on every file system: not empty, `.` or `..`,
 * at most 200 bytes (NAME_MAX is 255, less room for `.incomplete-<pid>`), with no `/`, `\` or
 * control character; else an error naming `what` (the header, file or flag it came from).
 */
export function checkPathComponent(name: string, what: string): string {
  if (name === '' || name === '.' || name === '..' || /[/\\\x00-\x1f\x7f]/.test(name) || Buffer.byteLength(name) > 200) {
    throw new Error(`${what} ${quoted(name)}: not a file name (empty, . or .., over 200 bytes, or with /, \\ or a control character); refused`);
  }
  return name;
}

/** Whether `path` lies strictly inside `folder`, as spelled (symlinks are not followed). */
export function insideFolder(folder: string, path: string): boolean {
  const rel = relative(resolve(folder), resolve(path));
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

/**
 * Makes the folders from `root` down to `path`'s one at a time, each checked to resolve (symlinks
 * followed) inside `root`, so that neither they nor a write to `path` can land outside it; else an
 * error naming `path` and where it leads.
 */
export function makeFolderInside(root: string, path: string): void {
  if (!insideFolder(root, path)) throw new Error(`${path}: outside ${root}; refused`);
  mkdirSync(root, { recursive: true });
  const realRoot = realpathSync(root);
  let folder = resolve(root);
  for (const part of relative(folder, dirname(resolve(path))).split(sep).filter((name) => name !== '')) {
    folder = join(folder, part);
    let real: string;
    try {
      mkdirSync(folder);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw namingPath(error, folder);
    }
    try {
      real = realpathSync(folder);
    } catch (error) {
      throw new Error(`${path}: ${folder} cannot be resolved (${(error as NodeJS.ErrnoException).code}); refused`);
    }
    if (!insideFolder(realRoot, real)) throw new Error(`${path}: ${folder} leads to ${real}, outside ${realRoot}; refused`);
  }
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

/** Aborts a request when fewer than STALL_BYTES arrive in a window of `seconds`. */
class StallWatch {
  readonly controller = new AbortController();
  stalled = false;
  private bytes = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(readonly seconds: number) {
    this.timer = setInterval(() => {
      if (this.bytes < STALL_BYTES) {
        this.stalled = true;
        this.controller.abort();
      }
      this.bytes = 0;
    }, seconds * 1000);
  }

  received(bytes: number): void {
    this.bytes += bytes;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

async function open(url: string, path: string, init: RequestInit, watch: StallWatch): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: watch.controller.signal });
  } catch (error) {
    if (watch.stalled) throw notCachedError(url, path, `no answer in ${watch.seconds} s (REALS_DOWNLOAD_TIMEOUT_S)`);
    const reason = describe(error);
    throw notCachedError(url, path, reason.startsWith('HPE_') ? `the answer is not valid HTTP (${reason})` : `the network is unreachable (${reason})`);
  }
}

/** Fetches `url`'s headers (given up after `timeoutS`); a network failure is an error naming the URL and where the file would go. */
export async function request(url: string, path: string, init: RequestInit = {}, timeoutS = downloadTimeoutS()): Promise<Response> {
  const watch = new StallWatch(timeoutS);
  try {
    return await open(url, path, init, watch);
  } finally {
    watch.stop();
  }
}

/** A byte count header (Content-Length, X-Linked-Size) as a number; undefined when absent or not digits. */
export const parseByteCount = (value: string | null): number | undefined => (value !== null && /^\d{1,15}$/.test(value.trim()) ? Number(value) : undefined);

/**
 * The most bytes the body of `response` may have, and what says so; an error when the server
 * announces (Content-Length) another size than the published one, or more than the cap.
 */
function bodyLimit(url: string, response: Response, options: DownloadOptions): { limit: number; source: string; exact: number | undefined } {
  // fetch decodes gzip, whose Content-Length counts the bytes on the wire and bounds nothing (a
  // 100-byte body can inflate to gigabytes): identity was asked for, and nothing else is taken.
  const encoding = (response.headers.get('content-encoding') ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity') throw new Error(`${url}: the server answers Content-Encoding ${quoted(encoding)} where identity was asked for; not downloaded`);
  const announced = parseByteCount(response.headers.get('content-length'));
  if (announced !== undefined && options.size !== undefined && announced !== options.size) {
    throw new Error(`${url}: the server announces ${announced} bytes (Content-Length) where the hub publishes ${options.size}; not downloaded`);
  }
  const biggest = Math.max(announced ?? 0, options.size ?? 0);
  if (options.maxBytes !== undefined && biggest > options.maxBytes) {
    throw new Error(`${url}: ${biggest} bytes announced, over this file's cap of ${options.maxBytes}; not downloaded`);
  }
  if (options.size !== undefined) return { limit: options.size, source: 'the size the hub publishes', exact: options.size };
  if (announced !== undefined) return { limit: announced, source: 'its Content-Length', exact: announced };
  if (options.maxBytes !== undefined) return { limit: options.maxBytes, source: "this file's cap", exact: undefined };
  return { limit: Infinity, source: '', exact: undefined };
}

/**
 * Downloads `url` to `path` (its folder is made), checked as `options` say; returns `path`.
 * Temporaries `<name>.incomplete-<pid>` in that folder whose process is gone are removed first.
 */
export async function downloadFile(url: string, path: string, options: DownloadOptions = {}): Promise<string> {
  mkdirSync(dirname(path), { recursive: true });
  removeDeadTemporaries(dirname(path), () => true, 'incomplete');
  const watch = new StallWatch(options.timeoutS ?? downloadTimeoutS());
  const temporary = `${path}.incomplete-${process.pid}`;
  let fd: number | undefined;
  let bar: cliProgress.SingleBar | null = null;
  try {
    const response = await open(url, path, { headers: { 'Accept-Encoding': 'identity', ...options.headers } }, watch);
    if (!response.ok || response.body === null) {
      throw notCachedError(url, path, `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`);
    }
    const { limit, source, exact } = bodyLimit(url, response, options);
    const { bavail, bsize } = statfsSync(dirname(path));
    if (exact !== undefined && exact > bavail * bsize) {
      throw new Error(`${url}: ${exact} bytes do not fit in the ${bavail * bsize} bytes free in ${dirname(path)}; not downloaded`);
    }
    rmSync(temporary, { force: true });
    // O_NOFOLLOW|O_EXCL: the bytes go into a new file here, never through a link someone left under this name.
    fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    const hash = createHash('sha256');
    if (options.progress ?? process.stderr.isTTY === true) {
      bar = new cliProgress.SingleBar({
        format: `${url.split('?')[0]!.split('/').pop()} |{bar}| {percentage}% {value}/{total} MB`, stream: process.stderr, hideCursor: true,
      }, cliProgress.Presets.shades_classic);
      bar.start(Math.ceil((exact ?? 0) / 2 ** 20), 0);
    }
    const of = exact !== undefined ? ` of ${exact}` : '';
    const chunks = (response.body as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
    let received = 0;
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await chunks.next();
      } catch (error) {
        if (watch.stalled) {
          throw new Error(`${url}: the download stalled (under ${STALL_BYTES} bytes in ${watch.seconds} s, after ${received} bytes${of}); run again to retry, or raise REALS_DOWNLOAD_TIMEOUT_S`);
        }
        throw new Error(`${url}: the download broke off after ${received} bytes${of} (${describe(error)}); run again to retry`);
      }
      if (next.done) break;
      const chunk = next.value;
      if (received + chunk.byteLength > limit) {
        throw new Error(`${url}: the body runs past ${limit} bytes (${source}); stopped there, not kept`);
      }
      writeAll(fd, chunk, temporary);
      hash.update(chunk);
      received += chunk.byteLength;
      watch.received(chunk.byteLength);
      bar?.update(Math.floor(received / 2 ** 20));
    }
    if (exact !== undefined && received !== exact) {
      throw new Error(`${url}: got ${received} bytes, expected ${exact} (a truncated download); run again to retry`);
    }
    const digest = hash.digest('hex');
    if (options.sha256 !== undefined && !digest.startsWith(options.sha256.toLowerCase())) {
      throw new Error(`${url}: sha256 ${digest} does not match the published ${options.sha256}; not kept`);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(temporary, path);
    return path;
  } catch (error) {
    // Closes the connection at once: a server sending past the limit is not read any further.
    watch.controller.abort();
    if (fd !== undefined) closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  } finally {
    watch.stop();
    bar?.stop();
  }
}
