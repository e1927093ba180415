// torch.hub's checkpoint cache: $TORCH_HOME/hub/checkpoints/<file name of the URL>, where
// torch.hub.load_state_dict_from_url (and so torch.hub.load('facebookresearch/dinov2', ...))
// puts what it downloads. A file Python fetched is used as it is, and the other way round.
// The name comes from the URL reals asks for (never from a redirect or a Content-Disposition), and
// must be one file name (checkPathComponent).
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { checkPathComponent, downloadFile, isOffline, notCachedError, type DownloadOptions } from './download.js';

/** torch.hub.get_dir(): $TORCH_HOME/hub, TORCH_HOME defaulting to $XDG_CACHE_HOME/torch, else ~/.cache/torch. */
export function torchHubDir(): string {
  const torchHome = process.env.TORCH_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'torch');
  return join(torchHome, 'hub');
}

/** torch.hub's HASH_REGEX: a `-<hex>.` in the file name is the start of the file's sha256. */
const HASH_PREFIX = /-([a-f0-9]*)\./;

export interface TorchHubOptions extends Pick<DownloadOptions, 'progress' | 'maxBytes' | 'timeoutS'> {
  /** Never download (also HF_HUB_OFFLINE=1): a file not in the cache is an error naming the URL and path. */
  offline?: boolean;
  /** The cached file's name, when it is not the URL's. */
  fileName?: string;
}

/** The local path of the checkpoint at `url`, downloaded into the torch hub cache when missing. */
export async function torchHubCheckpoint(url: string, options: TorchHubOptions = {}): Promise<string> {
  const name = checkPathComponent(options.fileName ?? basename(new URL(url).pathname), `${url}: the cache file name`);
  const path = join(torchHubDir(), 'checkpoints', name);
  if (existsSync(path)) return path;
  if (isOffline(options.offline)) throw notCachedError(url, path, 'offline (--offline or HF_HUB_OFFLINE=1) and not in the torch hub cache');
  const hashPrefix = HASH_PREFIX.exec(name)?.[1];
  return downloadFile(url, path, { sha256: hashPrefix === '' ? undefined : hashPrefix, progress: options.progress, maxBytes: options.maxBytes, timeoutS: options.timeoutS });
}
