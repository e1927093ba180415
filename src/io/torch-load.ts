// torch.load without Python, for checkpoints written by torch.save (.pt/.pth/.ckpt/.bin), and
// safetensors files by extension. Two PyTorch formats (torch/serialization.py):
// - zip (torch.save since 1.6): `<root>/data.pkl` pickles the object; each storage it refers to
//   by persistent id ('storage', storage_type, key, location, numel) is the stored entry
//   `<root>/data/<key>`. The root folder's name varies with the writer.
// - legacy (`_use_new_zipfile_serialization=False`, and every file before 1.6): five pickles in a
//   row (magic number, protocol version, sys_info, the object whose persistent ids also carry
//   view_metadata, the list of storage keys) followed by each storage as an 8-byte little-endian
//   element count and its raw bytes.
// Each storage becomes one tensor and every tensor a view of it (as_strided with the saved offset
// and strides), so tensors that shared a storage when saved share memory when loaded.
// The result is plain JavaScript data as documented in pickle.ts, with Tensors for tensors.
import { closeSync, fstatSync } from 'node:fs';
import * as torch from '../torch/index.js';
import { openRegularFile, readAt } from './file.js';
import { toPlain, unpickle, type ByteSource, bufferSource, type PyCallable } from './pickle.js';
import { loadSafetensors } from './safetensors.js';
import { readStoredEntry, readZipEntries } from './zip.js';

export interface LoadOptions {
  /**
   * Device for every tensor (default 'cpu'). Unlike torch.load, which restores each storage to
   * the device it was saved from, the saved locations are ignored.
   */
  mapLocation?: torch.Device;
}

/**
 * torch.load(path, map_location=...): the saved object with its tensors as Tensors. Every error
 * names the file: a RangeError (a pickle nested deeper than the stack, a size beyond what can be
 * allocated) included.
 */
export function load(path: string, options: LoadOptions = {}): unknown {
  try {
    return loadFile(path, options);
  } catch (error) {
    if (error instanceof RangeError && !error.message.includes(path)) {
      throw new Error(`${path}: ${error.message} (a pickle nested too deeply, or a size too large to allocate: a corrupt or hostile file?)`, { cause: error });
    }
    throw error;
  }
}

function loadFile(path: string, options: LoadOptions): unknown {
  const device = options.mapLocation ?? 'cpu';
  if (path.endsWith('.safetensors')) return loadSafetensors(path, { device });
  const fd = openRegularFile(path);
  try {
    const size = fstatSync(fd).size;
    const head = readAt(fd, 0, Math.min(size, 512), path);
    if (head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) return loadZip(fd, size, path, device);
    if (head[0] === 0x80) return loadLegacy(fd, size, path, device);
    if (new TextDecoder().decode(head.subarray(257, 262)) === 'ustar') {
      throw new Error(`${path}: a tar-format checkpoint (torch.save before PyTorch 0.4) is not supported; re-save it with a recent PyTorch`);
    }
    throw new Error(`${path}: not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)`);
  } finally {
    closeSync(fd);
  }
}

const STORAGE_DTYPES: Record<string, torch.DType> = {
  DoubleStorage: 'float64', FloatStorage: 'float32', HalfStorage: 'float16', BFloat16Storage: 'bfloat16',
  LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16', CharStorage: 'int8', ByteStorage: 'uint8',
  BoolStorage: 'bool', UntypedStorage: 'uint8',
};

const TORCH_DTYPES: Record<string, torch.DType> = {
  float64: 'float64', double: 'float64', float32: 'float32', float: 'float32', float16: 'float16', half: 'float16',
  bfloat16: 'bfloat16', int64: 'int64', long: 'int64', int32: 'int32', int: 'int32', int16: 'int16', short: 'int16',
  int8: 'int8', uint8: 'uint8', bool: 'bool',
};

/** A storage class such as torch.FloatStorage, named in persistent ids. */
class StorageType {
  constructor(readonly qualifiedName: string, readonly dtype: torch.DType) {}
}

/** A storage (or, in legacy files, an element range of one) named by a persistent id. */
class StorageRef {
  constructor(readonly key: string, readonly dtype: torch.DType, readonly offset: number, readonly numel: number) {}
}

/** A tensor to be made once the storages are read: _rebuild_tensor_v2's arguments. */
class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: number[],
    readonly stride: number[],
    readonly requiresGrad: boolean,
  ) {}
}

interface StorageInfo { dtype: torch.DType; numel: number }

function isCount(v: unknown): v is number { return Number.isSafeInteger(v) && (v as number) >= 0; }

/**
 * Unpickles the object of a checkpoint with PyTorch's globals and persistent ids; fills `storages`
 * with the storages it refers to.
 */
function unpickleCheckpoint(source: ByteSource, start: number, name: string, storages: Map<string, StorageInfo>): { value: unknown; end: number } {
  const rebuildTensor = (args: unknown[]): TensorRef => {
    const [storage, offset, size, stride, requiresGrad] = args;
    if (!(storage instanceof StorageRef)) throw new Error(`expected a storage, got ${String(storage)}`);
    if (!isCount(offset) || !Array.isArray(size) || !size.every(isCount) || !Array.isArray(stride) || !stride.every(isCount) || size.length !== stride.length) {
      throw new Error(`invalid tensor geometry (offset ${String(offset)}, size [${String(size)}], stride [${String(stride)}])`);
    }
    return new TensorRef(storage, storage.offset + offset, size, stride, requiresGrad === true);
  };
  const rebuildParameter = (args: unknown[]): TensorRef => {
    const [data, requiresGrad] = args;
    if (!(data instanceof TensorRef)) throw new Error(`expected a tensor, got ${String(data)}`);
    return new TensorRef(data.storage, data.offset, data.size, data.stride, requiresGrad === true);
  };
  const globals: Record<string, unknown> = {
    'torch._utils._rebuild_tensor': rebuildTensor,
    'torch._utils._rebuild_tensor_v2': rebuildTensor,
    'torch._utils._rebuild_parameter': rebuildParameter,
    'torch.device': ((args) => (args[1] === undefined || args[1] === null ? String(args[0]) : `${String(args[0])}:${String(args[1])}`)) as PyCallable,
    'torch.Size': ((args) => [...(args[0] as number[])]) as PyCallable,
  };
  const findGlobal = (module: string, global: string): unknown => {
    if ((module === 'torch' || module === 'torch.storage') && Object.hasOwn(STORAGE_DTYPES, global)) return new StorageType(`${module}.${global}`, STORAGE_DTYPES[global]!);
    if (module === 'torch' && Object.hasOwn(TORCH_DTYPES, global)) return TORCH_DTYPES[global];
    const qualified = `${module}.${global}`;
    return Object.hasOwn(globals, qualified) ? globals[qualified] : undefined;
  };
  const persistentLoad = (pid: unknown): unknown => {
    if (!Array.isArray(pid)) throw new Error(`${name}: unknown persistent id ${String(pid)}`);
    // A pickled nn.Module names its class this way; the instance itself follows as a record.
    if (pid[0] === 'module') return pid[1];
    const [kind, type, key, , numel, view] = pid;
    if (kind !== 'storage' || !(type instanceof StorageType) || typeof key !== 'string' || !isCount(numel)) {
      throw new Error(`${name}: unsupported persistent id (${pid.map(String).join(', ')})`);
    }
    const known = storages.get(key);
    if (known !== undefined && (known.dtype !== type.dtype || known.numel !== numel)) {
      throw new Error(`${name}: storage ${key} is referenced both as ${known.numel} ${known.dtype} and as ${numel} ${type.dtype}`);
    }
    storages.set(key, { dtype: type.dtype, numel });
    if (view === undefined || view === null) return new StorageRef(key, type.dtype, 0, numel);
    const [, viewOffset, viewNumel] = view as unknown[];
    if (!isCount(viewOffset) || !isCount(viewNumel) || viewOffset + viewNumel > numel) {
      throw new Error(`${name}: storage view (${String(view)}) lies outside storage ${key} of ${numel} elements`);
    }
    return new StorageRef(key, type.dtype, viewOffset, viewNumel);
  };
  return unpickle(source, start, { name, findGlobal, persistentLoad });
}

/** Replaces storage and tensor references by tensors, given one tensor per storage key. */
function materialize(raw: unknown, bases: Map<string, torch.Tensor>, path: string): unknown {
  try {
    return toPlain(raw, (leaf) => {
      if (leaf instanceof TensorRef) {
        const { storage, offset, size, stride } = leaf;
        const numel = size.reduce((a, b) => a * b, 1);
        const last = offset + size.reduce((sum, s, i) => sum + (s - 1) * stride[i]!, 0);
        const available = storage.offset + storage.numel;
        if (numel > 0 && last >= available) {
          throw new Error(`${path}: a tensor of size [${size}] and stride [${stride}] at offset ${offset} runs past storage ${storage.key} (${available} elements)`);
        }
        const t: torch.Tensor = torch.callOp('aten::as_strided', bases.get(storage.key)!, size, stride, offset);
        if (leaf.requiresGrad) t.requiresGrad = true;
        return t;
      }
      if (leaf instanceof StorageRef) return bases.get(leaf.key)!.narrow(0, leaf.offset, leaf.numel);
      if (leaf instanceof StorageType) return { __global__: leaf.qualifiedName };
      throw new Error(`${path}: unpickled a ${leaf.constructor.name}, which has no plain JavaScript form`);
    });
  } finally {
    // The views keep the storages alive; these handles are no longer needed.
    for (const base of bases.values()) base.dispose();
  }
}

/** One tensor per storage, on `device`, from `read(key, nbytes)`. */
function readStorages(storages: Map<string, StorageInfo>, read: (key: string, nbytes: number) => Uint8Array, device: torch.Device): Map<string, torch.Tensor> {
  const bases = new Map<string, torch.Tensor>();
  try {
    for (const [key, { dtype, numel }] of storages) {
      const t = torch.fromArray(read(key, numel * torch.BYTES_PER_ELEMENT[dtype]), [numel], dtype);
      bases.set(key, device === 'cpu' ? t : t.to(device));
      if (device !== 'cpu') t.dispose();
    }
  } catch (error) {
    for (const base of bases.values()) base.dispose();
    throw error;
  }
  return bases;
}

function loadZip(fd: number, size: number, path: string, device: torch.Device): unknown {
  const entries = readZipEntries(fd, size, path);
  const pickles = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length !== 1) throw new Error(`${path}: a zip archive with ${pickles.length} <root>/data.pkl entries, not a torch.save checkpoint`);
  const root = pickles[0]!.slice(0, -'data.pkl'.length);
  if (entries.has(`${root}constants.pkl`)) {
    throw new Error(`${path}: a TorchScript archive (torch.jit.save); save its state_dict() with torch.save to load it here`);
  }
  const entryBytes = (name: string): Uint8Array => {
    const entry = entries.get(name);
    if (entry === undefined) throw new Error(`${path}: the archive has no entry ${name}`);
    return readStoredEntry(fd, entry, path);
  };
  if (entries.has(`${root}byteorder`)) {
    const order = new TextDecoder().decode(entryBytes(`${root}byteorder`));
    if (order !== 'little') throw new Error(`${path}: storages are ${order}-endian; only little-endian checkpoints are supported`);
  }

  const storages = new Map<string, StorageInfo>();
  const { value } = unpickleCheckpoint(bufferSource(entryBytes(`${root}data.pkl`)), 0, `${path} (${root}data.pkl)`, storages);
  const bases = readStorages(storages, (key, nbytes) => {
    const name = `${root}data/${key}`;
    const entry = entries.get(name);
    if (entry === undefined) throw new Error(`${path}: the archive has no entry ${name} for storage ${key}`);
    if (entry.size < nbytes) throw new Error(`${path}: entry ${name} holds ${entry.size} bytes but storage ${key} needs ${nbytes}`);
    return readStoredEntry(fd, entry, path).subarray(0, nbytes);
  }, device);
  return materialize(value, bases, path);
}

// torch/serialization.py: MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

function loadLegacy(fd: number, size: number, path: string, device: torch.Device): unknown {
  const source: ByteSource = { size, read: (position, length) => readAt(fd, position, Math.min(length, size - position), path) };
  const options = { name: path };
  const magic = unpickle(source, 0, options);
  if (magic.value !== LEGACY_MAGIC) throw new Error(`${path}: not a PyTorch checkpoint (a pickle, but without torch.save's magic number)`);
  const protocol = unpickle(source, magic.end, options);
  if (protocol.value !== LEGACY_PROTOCOL) throw new Error(`${path}: legacy checkpoint protocol ${String(protocol.value)}, expected ${LEGACY_PROTOCOL}`);
  const sysInfo = unpickle(source, protocol.end, options);
  const info = toPlain(sysInfo.value) as { little_endian?: unknown };
  if (info.little_endian !== true) throw new Error(`${path}: saved on a big-endian machine; only little-endian checkpoints are supported`);

  const storages = new Map<string, StorageInfo>();
  const main = unpickleCheckpoint(source, sysInfo.end, path, storages);
  const keyList = unpickle(source, main.end, options);
  const keys = toPlain(keyList.value);
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw new Error(`${path}: the storage key list is not a list of strings`);

  const offsets = new Map<string, number>();
  let position = keyList.end;
  for (const key of keys as string[]) {
    const storage = storages.get(key);
    if (storage === undefined) throw new Error(`${path}: storage ${key} is listed but no tensor refers to it`);
    const count = new DataView(readAt(fd, position, 8, path).buffer).getBigInt64(0, true);
    if (count !== BigInt(storage.numel)) throw new Error(`${path}: storage ${key} holds ${count} elements, the pickle says ${storage.numel}`);
    offsets.set(key, position + 8);
    position += 8 + storage.numel * torch.BYTES_PER_ELEMENT[storage.dtype];
  }
  const bases = readStorages(storages, (key, nbytes) => {
    const offset = offsets.get(key);
    if (offset === undefined) throw new Error(`${path}: storage ${key} is referenced but missing from the file`);
    return readAt(fd, offset, nbytes, path);
  }, device);
  return materialize(main.value, bases, path);
}
