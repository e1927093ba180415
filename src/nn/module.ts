// Module: named children, parameters and buffers with PyTorch's state-dict keys, train/eval, and
// dtype/device moves that keep each parameter's Tensor object (optimizers hold those objects).
import { createHash } from 'node:crypto';
import * as torch from '../torch/index.js';
import type { Tensor, DType, Device } from '../torch/index.js';

/** Ordered like PyTorch's OrderedDict: own parameters, own persistent buffers, then children. */
export type StateDict = Map<string, Tensor>;

export interface LoadStateDictResult { missingKeys: string[]; unexpectedKeys: string[] }

export class Module {
  /** Whether the module is in training mode (set recursively by train() and eval()). */
  training = true;
  // Registered names are the upstream (snake_case) keys; subclasses keep camelCase fields.
  private readonly _parameters = new Map<string, Tensor | null>();
  private readonly _buffers = new Map<string, Tensor | null>();
  private readonly _nonPersistentBuffers = new Set<string>();
  protected readonly _modules = new Map<string, Module | null>();

  constructor() {
    // Python frees a forward's intermediates at their last use; here each forward runs in a
    // torch.scope, so they are freed when it returns (its result and kept tensors survive).
    // Without this, a whole network's activations stay allocated until an outer scope closes,
    // which costs page faults and cache misses (SiT-B/2 forward: 1.45x PyTorch's time).
    const forward = this.forward;
    Object.defineProperty(this, 'forward', {
      value: (...args: unknown[]) => torch.scope(() => forward.apply(this, args)),
      writable: true,
      configurable: true,
    });
  }

  /** The computation; subclasses define it (as nn.Module, calling the base throws). */
  forward(..._args: unknown[]): unknown {
    throw new Error(`${this.constructor.name}: forward() is not implemented`);
  }

  // --- registration ------------------------------------------------------------------------

  /**
   * Registers `tensor` as parameter `name` (null: declared but absent, like bias=False): it
   * becomes a leaf that requires grad (when floating point) and outlives torch.scope.
   */
  registerParameter(name: string, tensor: Tensor): Tensor;
  registerParameter(name: string, tensor: Tensor | null): Tensor | null;
  registerParameter(name: string, tensor: Tensor | null): Tensor | null {
    this.checkName(name, this._parameters);
    let param = tensor;
    if (param !== null) {
      if (!param.isLeaf) param = param.detach();
      if (param.isFloatingPoint()) param.requiresGrad = true;
      torch.keep(param);
    }
    this._parameters.set(name, param);
    return param;
  }

  /** Registers a buffer; non-persistent buffers are left out of stateDict(). */
  registerBuffer(name: string, tensor: Tensor, options?: { persistent?: boolean }): Tensor;
  registerBuffer(name: string, tensor: Tensor | null, options?: { persistent?: boolean }): Tensor | null;
  registerBuffer(name: string, tensor: Tensor | null, options: { persistent?: boolean } = {}): Tensor | null {
    this.checkName(name, this._buffers);
    if (tensor !== null) torch.keep(tensor);
    this._buffers.set(name, tensor);
    if (options.persistent ?? true) this._nonPersistentBuffers.delete(name);
    else this._nonPersistentBuffers.add(name);
    return tensor;
  }

  addModule<M extends Module | null>(name: string, module: M): M {
    this.checkName(name, this._modules);
    this._modules.set(name, module);
    return module;
  }

  /** A name may be registered again in its own kind (replacing), never across kinds. */
  private checkName(name: string, own: Map<string, unknown>): void {
    if (name === '' || name.includes('.')) {
      throw new Error(`${this.constructor.name}: invalid name '${name}' (must be non-empty and contain no '.')`);
    }
    for (const [kind, map] of [['parameter', this._parameters], ['buffer', this._buffers], ['submodule', this._modules]] as const) {
      if (map !== own && map.has(name)) throw new Error(`${this.constructor.name}: '${name}' is already registered as a ${kind}`);
    }
  }

  // --- traversal ---------------------------------------------------------------------------

  /** Direct children with their names (null children skipped, each module once). */
  namedChildren(): [string, Module][] {
    const seen = new Set<Module>();
    const out: [string, Module][] = [];
    for (const [name, m] of this._modules) {
      if (m !== null && !seen.has(m)) {
        seen.add(m);
        out.push([name, m]);
      }
    }
    return out;
  }
  children(): Module[] { return this.namedChildren().map(([, m]) => m); }

  /** This module and all below it, depth first, named by their dotted paths ('' for this one). */
  namedModules(): [string, Module][] {
    const out: [string, Module][] = [];
    this.collectModules('', new Set(), out);
    return out;
  }

  private collectModules(prefix: string, seen: Set<Module>, out: [string, Module][]): void {
    if (seen.has(this)) return;
    seen.add(this);
    out.push([prefix, this]);
    for (const [name, m] of this._modules) m?.collectModules(prefix === '' ? name : `${prefix}.${name}`, seen, out);
  }
  modules(): Module[] { return this.namedModules().map(([, m]) => m); }

  private namedMembers(kind: '_parameters' | '_buffers', recurse: boolean): [string, Tensor][] {
    const seen = new Set<Tensor>();
    const out: [string, Tensor][] = [];
    const modules: [string, Module][] = recurse ? this.namedModules() : [['', this]];
    for (const [prefix, m] of modules) {
      for (const [name, t] of m[kind]) {
        if (t === null || seen.has(t)) continue;
        seen.add(t);
        out.push([prefix === '' ? name : `${prefix}.${name}`, t]);
      }
    }
    return out;
  }

  /** Parameters with dotted names, each shared tensor once (as named_parameters()). */
  namedParameters(recurse = true): [string, Tensor][] { return this.namedMembers('_parameters', recurse); }
  parameters(recurse = true): Tensor[] { return this.namedParameters(recurse).map(([, t]) => t); }
  namedBuffers(recurse = true): [string, Tensor][] { return this.namedMembers('_buffers', recurse); }
  buffers(recurse = true): Tensor[] { return this.namedBuffers(recurse).map(([, t]) => t); }

  /** Number of parameter elements; `trainableOnly` counts those that require grad. */
  numParameters(options: { trainableOnly?: boolean } = {}): number {
    return this.parameters()
      .filter((p) => !options.trainableOnly || p.requiresGrad)
      .reduce((n, p) => n + p.numel(), 0);
  }

  // --- state dict --------------------------------------------------------------------------

  /**
   * Parameters and persistent buffers as detached tensors sharing storage, keyed and ordered as
   * PyTorch's state_dict(): per module its parameters, then its buffers, then its children.
   */
  stateDict(): StateDict {
    const out: StateDict = new Map();
    this.visitState('', (key, t) => out.set(key, t.detach()));
    return out;
  }

  /** Visits the live tensors behind stateDict()'s keys, in its order. */
  private visitState(prefix: string, visit: (key: string, tensor: Tensor) => void): void {
    for (const [name, p] of this._parameters) if (p !== null) visit(prefix + name, p);
    for (const [name, b] of this._buffers) if (b !== null && !this._nonPersistentBuffers.has(name)) visit(prefix + name, b);
    for (const [name, m] of this._modules) m?.visitState(`${prefix}${name}.`, visit);
  }

  /**
   * Copies `stateDict` into this module's parameters and buffers in place (no grad, converting
   * dtype and device as copy_ does). Checks everything before copying anything: a shape
   * mismatch always throws; missing and unexpected keys throw when `strict`, otherwise they are
   * returned. The error names every offending key.
   */
  loadStateDict(stateDict: StateDict | Record<string, Tensor>, options: { strict?: boolean } = {}): LoadStateDictResult {
    const strict = options.strict ?? true;
    const source = stateDict instanceof Map ? stateDict : new Map(Object.entries(stateDict));
    const own = new Map<string, Tensor>();
    this.visitState('', (key, t) => own.set(key, t));
    const missingKeys = [...own.keys()].filter((k) => !source.has(k));
    const unexpectedKeys = [...source.keys()].filter((k) => !own.has(k));
    const mismatches: string[] = [];
    for (const [key, target] of own) {
      const value = source.get(key);
      if (value !== undefined && !sameShape(value.shape, target.shape)) {
        mismatches.push(`${key}: checkpoint [${value.shape}] vs model [${target.shape}]`);
      }
    }
    const problems: string[] = [];
    if (strict && missingKeys.length > 0) problems.push(`missing keys [${missingKeys.join(', ')}]`);
    if (strict && unexpectedKeys.length > 0) problems.push(`unexpected keys [${unexpectedKeys.join(', ')}]`);
    if (mismatches.length > 0) problems.push(`shape mismatch [${mismatches.join(', ')}]`);
    if (problems.length > 0) throw new Error(`loadStateDict(${this.constructor.name}): ${problems.join(', ')}`);
    torch.noGrad(() => {
      for (const [key, target] of own) {
        const value = source.get(key);
        if (value !== undefined) target.copy_(value);
      }
    });
    return { missingKeys, unexpectedKeys };
  }

  // --- modes, conversion, gradients ----------------------------------------------------------

  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }
  eval(): this { return this.train(false); }

  /** Calls `fn` on every submodule and then on this module (as nn.Module.apply). */
  apply(fn: (module: Module) => void): this {
    for (const m of this.children()) m.apply(fn);
    fn(this);
    return this;
  }

  /**
   * Moves parameters and buffers to a device and/or converts floating-point ones to a dtype
   * (integer buffers keep theirs, as PyTorch). Each Tensor object stays the same (its storage
   * is swapped), so references held elsewhere, e.g. by an optimizer, stay valid.
   */
  to(target: Device | DType | { device?: Device; dtype?: DType }): this {
    const { device, dtype } = typeof target !== 'string' ? target
      : target in torch.DTYPE_CODE ? { device: undefined, dtype: target as DType } : { device: target, dtype: undefined };
    if (dtype !== undefined && !torch.isFloatingPoint(dtype)) {
      throw new Error(`${this.constructor.name}.to: dtype must be floating point, got ${dtype}`);
    }
    const convert = (t: Tensor): Tensor => t.to({ device, dtype: t.isFloatingPoint() ? dtype : undefined });
    const tensors = new Set([...this.parameters(), ...this.buffers()]);
    torch.noGrad(() => {
      for (const t of tensors) {
        const grad = t.grad;
        const converted = convert(t);
        if (converted.dtype === t.dtype && converted.device === t.device) {
          converted.dispose();
          continue;
        }
        // As PyTorch's module._apply: `param.data = converted` keeps the object and requiresGrad.
        t.data = converted;
        converted.dispose();
        if (grad !== null) t.grad = convert(grad);
      }
    });
    return this;
  }

  /** Sets every parameter's grad to null (PyTorch 2's default set_to_none). */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /** Sets requiresGrad on every parameter (false freezes the module). */
  requiresGrad_(requiresGrad = true): this {
    for (const p of this.parameters()) p.requiresGrad = requiresGrad;
    return this;
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * SHA-256 (hex) of a module's state dict: each key, then its tensor's bytes (contiguous, on the
 * CPU), in stateDict() order. Two modules with equal hashes compute the same function; it names
 * what a cache or a sample folder was made with.
 */
export function stateDictHash(module: Module): string {
  const hash = createHash('sha256');
  for (const [name, t] of module.stateDict()) {
    torch.scope(() => {
      const values = t.contiguous().cpu().toArray();
      hash.update(name).update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    });
  }
  return hash.digest('hex');
}
