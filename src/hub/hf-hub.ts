// The Hugging Face hub's cache, laid out as huggingface_hub writes it, so that a model either side
// downloaded is the other's too:
//   $HF_HUB_CACHE (default $HF_HOME/hub, HF_HOME defaulting to $XDG_CACHE_HOME/huggingface)
//     models--<owner>--<name>/
//       blobs/<etag>                          the file's bytes (etag: the sha256 of LFS files)
//       refs/<revision>                       the commit a branch or tag resolved to
//       snapshots/<commit>/<path in repo>     a relative symlink to the blob
// Files come from {HF_ENDPOINT}/{repo}/resolve/{revision}/{path}, whose HEAD answer names the
// commit (X-Repo-Commit) and the blob (X-Linked-Etag, else ETag).
// Nothing the hub sends, nor any file in the cache, becomes a path unchecked: the commit is 40 hex
// digits (X-Repo-Commit, refs/<revision>), the ETag one file name (huggingface_hub's normalisation,
// then checkPathComponent), repo ids, revisions and file names follow huggingface_hub's and git's
// rules, every write lands inside the repo's folder (symlinks resolved), and a snapshot file is
// used only when it resolves to a regular file inside that folder.
import { lstatSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { removeDeadTemporaries, writeAll, writeFileAtomic } from '../io/file.js';
import {
  checkPathComponent, downloadFile, insideFolder, isOffline, makeFolderInside, notCachedError, parseByteCount, quoted, request, type DownloadOptions,
} from './download.js';

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

/** One part of a repo id, as huggingface_hub's REPO_ID_REGEX: word characters, `.` and `-`, a word character at each end. */
const REPO_ID_PART = /^\w(?:[\w.-]*\w)?$/;

/**
 * `owner/name`, as huggingface_hub's validate_repo_id takes it: each part of letters, digits,
 * `_`, `.` and `-`, starting and ending with a letter, digit or `_`; the name at most 96
 * characters; no `--` or `..` (`models--owner--name` must name one repo) and no `.git` ending.
 */
export function isHfRepoId(value: string): boolean {
  const parts = value.split('/');
  return parts.length === 2 && parts.every((part) => REPO_ID_PART.test(part)) && parts[1]!.length <= 96
    && !value.includes('--') && !value.includes('..') && !value.endsWith('.git');
}

export interface HfHubOptions extends Pick<DownloadOptions, 'progress' | 'timeoutS'> {
  /** A branch, tag or commit hash; default main. */
  revision?: string;
  /** Never ask the hub (also HF_HUB_OFFLINE=1): the revision must be in the cache. */
  offline?: boolean;
}

/** huggingface_hub's REGEX_COMMIT_HASH. */
const COMMIT = /^[0-9a-f]{40}$/;

/**
 * A revision is a commit hash or a branch or tag name as `git check-ref-format` allows it (`/`
 * separates folders of refs/, as huggingface_hub writes `refs/pr/1`): no component starting with
 * `.` (so no `..`), none ending in `.lock`, no empty component, no control character, space,
 * `~^:?*[\`, `@{`, nor a trailing `.`, and not `@`; and no component over 200 bytes, as a file name
 * in refs/ (checkPathComponent).
 */
const BAD_REF = /(^|\/)\.|\.lock(\/|$)|\/\/|^\/|\/$|\.$|^@$|@\{|[\x00-\x20\x7f~^:?*[\\]/;

function checkRevision(revision: string): void {
  if (revision === '' || BAD_REF.test(revision) || revision.split('/').some((part) => Buffer.byteLength(part) > 200)) {
    throw new Error(`--revision ${quoted(revision)}: not a branch, tag or commit hash (git check-ref-format); refused`);
  }
}

/** A file's path in the repo: `/`-separated file names (checkPathComponent), nothing absolute, no `.` or `..`. */
function checkRepoFilename(filename: string): void {
  for (const part of filename.split('/')) checkPathComponent(part, `file name ${quoted(filename)}: part`);
}

/** The folder of `repoId` in the cache. */
export function hfRepoCacheDir(repoId: string): string {
  return join(hfHubCacheDir(), `models--${repoId.replace('/', '--')}`);
}

/**
 * Why the snapshot file `path` cannot be used, or null when it can: it must resolve (symlinks
 * followed) to a regular file inside `repoDir`, as huggingface_hub's relative links to
 * `blobs/<etag>` (or its copies, where symlinks are not supported) do.
 */
function snapshotProblem(repoDir: string, path: string): string | null {
  let target: string;
  try {
    target = realpathSync(path);
  } catch (error) {
    return `cannot be resolved (${(error as NodeJS.ErrnoException).code})`;
  }
  if (!insideFolder(realpathSync(repoDir), target)) return `leads out of the repo's cache folder, to ${target}`;
  if (!statSync(target).isFile()) return `leads to ${target}, not a regular file`;
  return null;
}

/** The commit that `refs/<revision>` names, or null when there is none; an error names a ref that holds anything but a commit hash. */
function readRef(repoDir: string, revision: string): string | null {
  const refFile = join(repoDir, 'refs', revision);
  let text: string;
  try {
    text = readFileSync(refFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${refFile}: unreadable (${(error as NodeJS.ErrnoException).code})`);
  }
  const commit = text.trim();
  if (!COMMIT.test(commit)) throw new Error(`${refFile}: holds ${quoted(commit)}, not a commit hash (40 hex digits); remove it`);
  return commit;
}

/** The cached path of `filename` at `revision`, or null; an error names a ref or snapshot file that cannot be trusted. */
function cachedFile(repoDir: string, filename: string, revision: string): string | null {
  const commit = COMMIT.test(revision) ? revision : readRef(repoDir, revision);
  if (commit === null) return null;
  const path = join(repoDir, 'snapshots', commit, filename);
  if (lstatSync(path, { throwIfNoEntry: false }) === undefined) return null;
  const problem = snapshotProblem(repoDir, path);
  if (problem !== null) throw new Error(`${path}: ${problem}; remove it`);
  return path;
}

class NotFoundError extends Error {}

/** huggingface_hub's _normalize_etag: no weak `W/` prefix, no quotes around it. */
const normalizeEtag = (etag: string): string => etag.replace(/^W\//, '').replace(/^"+|"+$/g, '');

/**
 * The local path of `filename` in `repoId` at `revision`, from the cache, else downloaded into it
 * (huggingface_hub's hf_hub_download). Offline, or when the hub cannot be reached, a cached copy
 * of the revision is used; without one the error names the URL and the cache folder. Online, a
 * ref or snapshot link that cannot be trusted is replaced; offline it is an error.
 */
export async function hfHubDownload(repoId: string, filename: string, options: HfHubOptions = {}): Promise<string> {
  if (!isHfRepoId(repoId)) throw new Error(`${repoId}: not a Hugging Face repo id (owner/name)`);
  const revision = options.revision ?? 'main';
  checkRevision(revision);
  checkRepoFilename(filename);
  const repoDir = hfRepoCacheDir(repoId);
  const url = `${hfEndpoint()}/${repoId}/resolve/${encodeURIComponent(revision)}/${filename.split('/').map(encodeURIComponent).join('/')}`;
  let cached: string | null = null;
  let untrusted: Error | null = null;
  try {
    cached = cachedFile(repoDir, filename, revision);
  } catch (error) {
    untrusted = error as Error;
  }
  if (cached !== null && COMMIT.test(revision)) return cached;
  const where = join(repoDir, 'snapshots', COMMIT.test(revision) ? revision : '<commit>', filename);
  if (isOffline(options.offline)) {
    if (cached !== null) return cached;
    if (untrusted !== null) throw untrusted;
    throw notCachedError(url, where, `offline (--offline or HF_HUB_OFFLINE=1) and ${repoId}@${revision} has no ${filename} in the Hugging Face cache`);
  }
  const headers: Record<string, string> = { 'Accept-Encoding': 'identity' };
  if (process.env.HF_TOKEN !== undefined) headers.Authorization = `Bearer ${process.env.HF_TOKEN}`;
  let head: Response;
  try {
    head = await request(url, where, { method: 'HEAD', headers, redirect: 'manual' }, options.timeoutS);
  } catch (error) {
    if (cached !== null) return cached;
    throw error;
  }
  // A renamed repo answers with a redirect to its new name on the same host; a file on a CDN, with
  // one to another host, which the GET follows. Only the first is followed here, as huggingface_hub
  // does, so the token is sent to no other host (`//host/path` is another host too).
  const location = head.headers.get('location');
  const renamed = location !== null && URL.canParse(location, url) ? new URL(location, url) : null;
  if (head.status >= 300 && head.status < 400 && renamed?.origin === new URL(url).origin && head.headers.get('x-repo-commit') === null) {
    head = await request(renamed.href, where, { method: 'HEAD', headers, redirect: 'manual' }, options.timeoutS);
  }
  if (head.status === 404) throw new NotFoundError(`${url}: HTTP 404 (${repoId}@${revision} has no ${filename}, or the repo is private or gated: set HF_TOKEN)`);
  if (head.status >= 400) throw notCachedError(url, where, `HTTP ${head.status}`);
  const commit = head.headers.get('x-repo-commit');
  const rawEtag = head.headers.get('x-linked-etag') ?? head.headers.get('etag');
  if (commit === null || !COMMIT.test(commit) || rawEtag === null) {
    throw new Error(`${url}: the answer names no commit (X-Repo-Commit, 40 hex digits) or no ETag: is ${hfEndpoint()} a Hugging Face hub?`);
  }
  if (COMMIT.test(revision) && commit !== revision) throw new Error(`${url}: the answer is for commit ${commit}, not the ${revision} asked for; refused`);
  const etag = checkPathComponent(normalizeEtag(rawEtag), `${url}: the ${head.headers.has('x-linked-etag') ? 'X-Linked-Etag' : 'ETag'}`);
  const size = parseByteCount(head.headers.get('x-linked-size') ?? head.headers.get('content-length'));
  const blob = join(repoDir, 'blobs', etag);
  makeFolderInside(repoDir, blob);
  // A blob is reused as huggingface_hub reuses it, but only as a regular file of the published size.
  const existing = lstatSync(blob, { throwIfNoEntry: false });
  if (existing === undefined || !existing.isFile() || (size !== undefined && existing.size !== size)) {
    await downloadFile(url, blob, {
      headers, progress: options.progress, timeoutS: options.timeoutS, size, sha256: /^[0-9a-f]{64}$/.test(etag) ? etag : undefined,
    });
  }
  const pointer = join(repoDir, 'snapshots', commit, filename);
  makeFolderInside(repoDir, pointer);
  if (lstatSync(pointer, { throwIfNoEntry: false }) === undefined || snapshotProblem(repoDir, pointer) !== null) {
    removeDeadTemporaries(dirname(pointer), () => true, 'incomplete');
    const temporary = `${pointer}.incomplete-${process.pid}`;
    rmSync(temporary, { force: true });
    symlinkSync(relative(dirname(pointer), blob), temporary);
    // rename(2) replaces a link, never the file it leads to.
    renameSync(temporary, pointer);
  }
  if (revision !== commit) {
    const ref = join(repoDir, 'refs', revision);
    makeFolderInside(repoDir, ref);
    writeFileAtomic(ref, (fd) => writeAll(fd, Buffer.from(commit)));
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
