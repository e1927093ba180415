// The Hugging Face hub's cache, laid out as huggingface_hub writes it, so that a model either side
// downloaded is the other's too:
//   $HF_HUB_CACHE (default $HF_HOME/hub, HF_HOME defaulting to $XDG_CACHE_HOME/huggingface)
//     models--<owner>--<name>/
//       blobs/<etag>                          the file's bytes (etag: the sha256 of LFS files)
//       refs/<revision>                       the commit a branch or tag resolved to
//       snapshots/<commit>/<path in repo>     a relative symlink to the blob
// Files come from {HF_ENDPOINT}/{repo}/resolve/{revision}/{path}, whose HEAD answer names the
// commit (X-Repo-Commit) and the blob (X-Linked-Etag, else ETag).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { downloadFile, isOffline, notCachedError, request, type DownloadOptions } from './download.js';

/** huggingface_hub's HF_HUB_CACHE. */
export function hfHubCacheDir(): string {
  if (process.env.HF_HUB_CACHE !== undefined) return process.env.HF_HUB_CACHE;
  const hfHome = process.env.HF_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  return join(hfHome, 'hub');
}

/** $HF_ENDPOINT, default https://huggingface.co. */
export function hfEndpoint(): string {
  return (process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
}

/** `owner/name`, as a repo id must be spelled. */
export function isHfRepoId(value: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(value) && !value.includes('..');
}

export interface HfHubOptions extends Pick<DownloadOptions, 'progress'> {
  /** A branch, tag or commit hash; default main. */
  revision?: string;
  /** Never ask the hub (also HF_HUB_OFFLINE=1): the revision must be in the cache. */
  offline?: boolean;
}

const COMMIT = /^[0-9a-f]{40}$/;

/** The folder of `repoId` in the cache. */
export function hfRepoCacheDir(repoId: string): string {
  return join(hfHubCacheDir(), `models--${repoId.replace('/', '--')}`);
}

/** The cached path of `filename` at `revision`, or null. */
function cachedFile(repoDir: string, filename: string, revision: string): string | null {
  const refFile = join(repoDir, 'refs', revision);
  const commit = COMMIT.test(revision) ? revision : existsSync(refFile) ? readFileSync(refFile, 'utf8').trim() : null;
  if (commit === null) return null;
  const path = join(repoDir, 'snapshots', commit, filename);
  return existsSync(path) ? path : null;
}

class NotFoundError extends Error {}

/**
 * The local path of `filename` in `repoId` at `revision`, from the cache, else downloaded into it
 * (huggingface_hub's hf_hub_download). Offline, or when the hub cannot be reached, a cached copy
 * of the revision is used; without one the error names the URL and the cache folder.
 */
export async function hfHubDownload(repoId: string, filename: string, options: HfHubOptions = {}): Promise<string> {
  if (!isHfRepoId(repoId)) throw new Error(`${repoId}: not a Hugging Face repo id (owner/name)`);
  const revision = options.revision ?? 'main';
  const repoDir = hfRepoCacheDir(repoId);
  const url = `${hfEndpoint()}/${repoId}/resolve/${encodeURIComponent(revision)}/${filename}`;
  const cached = cachedFile(repoDir, filename, revision);
  if (cached !== null && COMMIT.test(revision)) return cached;
  const where = join(repoDir, 'snapshots', COMMIT.test(revision) ? revision : '<commit>', filename);
  if (isOffline(options.offline)) {
    if (cached !== null) return cached;
    throw notCachedError(url, where, `offline (--offline or HF_HUB_OFFLINE=1) and ${repoId}@${revision} has no ${filename} in the Hugging Face cache`);
  }
  const headers: Record<string, string> = { 'Accept-Encoding': 'identity' };
  if (process.env.HF_TOKEN !== undefined) headers.Authorization = `Bearer ${process.env.HF_TOKEN}`;
  let head: Response;
  try {
    head = await request(url, where, { method: 'HEAD', headers, redirect: 'manual' });
  } catch (error) {
    if (cached !== null) return cached;
    throw error;
  }
  // A renamed repo answers with a relative redirect to its new name; a file on a CDN, with an absolute one.
  const location = head.headers.get('location');
  if (head.status >= 300 && head.status < 400 && location?.startsWith('/') && head.headers.get('x-repo-commit') === null) {
    head = await request(new URL(location, url).href, where, { method: 'HEAD', headers, redirect: 'manual' });
  }
  if (head.status === 404) throw new NotFoundError(`${url}: HTTP 404 (${repoId}@${revision} has no ${filename}, or the repo is private or gated: set HF_TOKEN)`);
  if (head.status >= 400) throw notCachedError(url, where, `HTTP ${head.status}`);
  const commit = head.headers.get('x-repo-commit');
  const etag = (head.headers.get('x-linked-etag') ?? head.headers.get('etag'))?.replace(/^W\//, '').replaceAll('"', '');
  if (commit === null || !COMMIT.test(commit) || etag === undefined || etag === '') {
    throw new Error(`${url}: the answer names no commit (X-Repo-Commit) or no ETag: is ${hfEndpoint()} a Hugging Face hub?`);
  }
  const size = Number(head.headers.get('x-linked-size') ?? head.headers.get('content-length') ?? NaN);
  const blob = join(repoDir, 'blobs', etag);
  if (!existsSync(blob)) {
    await downloadFile(url, blob, {
      headers, progress: options.progress, size: Number.isFinite(size) ? size : undefined, sha256: /^[0-9a-f]{64}$/.test(etag) ? etag : undefined,
    });
  }
  const pointer = join(repoDir, 'snapshots', commit, filename);
  if (!existsSync(pointer)) {
    mkdirSync(dirname(pointer), { recursive: true });
    const temporary = `${pointer}.incomplete-${process.pid}`;
    rmSync(temporary, { force: true });
    symlinkSync(relative(dirname(pointer), blob), temporary);
    renameSync(temporary, pointer);
  }
  if (revision !== commit) {
    mkdirSync(join(repoDir, 'refs'), { recursive: true });
    writeFileSync(join(repoDir, 'refs', revision), commit);
  }
  return pointer;
}

/**
 * A diffusers model folder of `repoId` (`subfolder`, e.g. `vae`, for a pipeline repo): its
 * config.json and its weights (diffusion_pytorch_model.safetensors, else the .bin), through the
 * cache. Returns the snapshot folder that holds them.
 */
export async function hfModelFolder(repoId: string, options: HfHubOptions & { subfolder?: string } = {}): Promise<string> {
  const inRepo = (name: string) => (options.subfolder ? `${options.subfolder.replace(/\/+$/, '')}/${name}` : name);
  const config = await hfHubDownload(repoId, inRepo('config.json'), options);
  try {
    await hfHubDownload(repoId, inRepo('diffusion_pytorch_model.safetensors'), options);
  } catch (error) {
    if (!(error instanceof NotFoundError) && !/has no .*diffusion_pytorch_model\.safetensors in the Hugging Face cache/.test((error as Error).message)) throw error;
    await hfHubDownload(repoId, inRepo('diffusion_pytorch_model.bin'), options);
  }
  return dirname(config);
}
