// Optimizer: parameter groups, lazily created per-parameter state, zeroGrad, and state dicts with
// PyTorch's structure and snake_case keys, so a torch.optim state_dict() loads here and ours loads
// in PyTorch. flattenStateDict/unflattenStateDict turn one into safetensors tensors + JSON metadata.
import { z } from 'zod';
import * as torch from '../torch/index.js';

type Tensor = torch.Tensor;

/** A value of a group option as PyTorch keeps it in param_groups. */
export type OptionValue = number | boolean | readonly number[];

/** One parameter group: the optimizer's options plus its parameters (schedulers set `lr`). */
export type ParamGroup<O> = O & { params: Tensor[]; initialLr?: number };
/** A group given to a constructor: options not given come from the optimizer's defaults. */
export type ParamGroupInput<O> = Partial<O> & { params: Iterable<Tensor> };

/** Per-parameter state: PyTorch's keys ('step', 'exp_avg', ...); tensors are optimizer-owned. */
export type ParamState = { step: number } & { [key: string]: Tensor | number | undefined };

/** optimizer.state_dict() as PyTorch: state by parameter index, groups with parameter indices. */
export interface OptimizerStateDict {
  state: Record<string, Record<string, Tensor | number>>;
  param_groups: SavedParamGroup[];
}
export type SavedParamGroup = { params: number[] } & Record<string, unknown>;

// Group keys that choose PyTorch's implementation (for-each kernels, CUDA graphs), not its math.
const IMPLEMENTATION_FLAGS = new Set(['foreach', 'capturable', 'differentiable', 'fused']);

function snakeCase(key: string): string { return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`); }

/** `defaults` with the options given (undefined counts as not given); an unknown key is an error. */
export function withDefaults<O extends Record<string, OptionValue>>(defaults: O, options: Record<string, unknown>, where: string): O {
  const merged = { ...defaults } as Record<string, OptionValue>;
  for (const [key, value] of Object.entries(options)) {
    if (!(key in defaults)) throw new Error(`${where}: unknown option '${key}' (options: ${Object.keys(defaults).join(', ')})`);
    if (value !== undefined) merged[key] = Array.isArray(value) ? [...value] : value as OptionValue;
  }
  return merged as O;
}

export abstract class Optimizer<O extends { lr: number } & Record<string, OptionValue>, S extends ParamState> {
  readonly defaults: O;
  readonly paramGroups: ParamGroup<O>[] = [];
  /** State by parameter, created at the parameter's first step (as PyTorch's `optimizer.state`). */
  readonly state = new Map<Tensor, S>();

  constructor(params: Iterable<Tensor> | Iterable<ParamGroupInput<O>>, defaults: O) {
    this.defaults = defaults;
    const items = [...params] as (Tensor | ParamGroupInput<O>)[];
    if (items.length === 0) throw new Error(`${this.constructor.name}: got an empty parameter list`);
    const groups = items[0] instanceof torch.Tensor ? [Object.assign({} as Partial<O>, { params: items as Tensor[] })] : (items as ParamGroupInput<O>[]);
    for (const group of groups) this.addParamGroup(group);
  }

  /** The tensor keys of a parameter's state besides 'step'; each starts as zeros like the parameter. */
  protected abstract stateKeys(group: ParamGroup<O>): string[];
  /** One update of `param` from `grad` (already under noGrad); `state.step` is the steps taken so far. */
  protected abstract updateParam(param: Tensor, grad: Tensor, state: S, group: ParamGroup<O>): void;
  /** Throws if an option value is out of range; `where` names the group. */
  protected abstract validateOptions(options: O, where: string): void;
  /** Keys a saved group may carry that must have one fixed value for this optimizer. */
  protected impliedGroupKeys(): Record<string, unknown> { return {}; }

  addParamGroup(input: ParamGroupInput<O>): void {
    const where = `param group ${this.paramGroups.length}`;
    const { params: given, ...givenOptions } = input;
    const options = withDefaults(this.defaults, givenOptions, `${this.constructor.name}: ${where}`);
    const params = [...given];
    for (const [i, p] of params.entries()) {
      if (!(p instanceof torch.Tensor)) throw new TypeError(`${this.constructor.name}: ${where} params[${i}] is not a Tensor`);
      if (!p.isLeaf) throw new Error(`${this.constructor.name}: ${where} params[${i}] is not a leaf tensor and cannot be optimized`);
      if (this.paramGroups.some((g) => g.params.includes(p)) || params.indexOf(p) !== i) {
        throw new Error(`${this.constructor.name}: ${where} params[${i}] appears in more than one place in the parameter groups`);
      }
    }
    this.validateOptions(options, where);
    this.paramGroups.push({ ...options, params });
  }

  /** Drops the gradients (setToNone, PyTorch 2's default) or zeroes them in place. */
  zeroGrad(setToNone = true): void {
    for (const group of this.paramGroups) {
      for (const p of group.params) {
        if (setToNone) {
          p.grad = null;
          continue;
        }
        const grad = p.grad;
        if (grad === null) continue;
        if (grad.gradFn !== null) grad.detach_();
        else grad.requiresGrad_(false);
        grad.zero_();
        grad.dispose();
      }
    }
  }

  /** One optimization step over every parameter that has a gradient; the others are skipped. */
  step(): void {
    torch.noGrad(() => torch.scope(() => {
      for (const group of this.paramGroups) {
        for (const param of group.params) {
          const grad = param.grad;
          if (grad === null) continue;
          let state = this.state.get(param);
          if (state === undefined) {
            state = this.initialState(param, group);
            this.state.set(param, state);
          }
          this.updateParam(param, grad, state, group);
        }
      }
    }));
  }

  private initialState(param: Tensor, group: ParamGroup<O>): S {
    const state: ParamState = { step: 0 };
    for (const key of this.stateKeys(group)) state[key] = torch.keep(torch.zerosLike(param));
    return state as S;
  }

  /**
   * `{state, param_groups}` as PyTorch's state_dict(): parameters are numbered in group order,
   * 'step' is a float32 scalar tensor (torch >= 1.12), the other state tensors are the live ones.
   */
  stateDict(): OptimizerStateDict {
    const index = new Map<Tensor, number>();
    const paramGroups = this.paramGroups.map((group) => {
      const saved: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(group)) {
        if (key !== 'params' && value !== undefined) saved[snakeCase(key)] = Array.isArray(value) ? [...value] : value;
      }
      saved.params = group.params.map((p) => {
        index.set(p, index.size);
        return index.size - 1;
      });
      return saved as SavedParamGroup;
    });
    const state: OptimizerStateDict['state'] = {};
    for (const [param, s] of this.state) {
      const entry: Record<string, Tensor | number> = {};
      for (const [key, value] of Object.entries(s)) {
        if (key === 'step') entry.step = torch.tensor(s.step, { dtype: 'float32' });
        else if (value !== undefined) entry[key] = value;
      }
      state[String(index.get(param))] = entry;
    }
    return { state, param_groups: paramGroups };
  }

  /**
   * Loads a state dict from stateDict() or PyTorch's: same number of groups and of parameters per
   * group, every state tensor shaped like its parameter (cast to its dtype and device, and copied).
   * Group options come from the state dict, as in PyTorch. Nothing changes if validation fails.
   */
  loadStateDict(stateDict: OptimizerStateDict): void {
    const name = `${this.constructor.name}.loadStateDict`;
    const saved = stateDict.param_groups;
    if (!Array.isArray(saved) || saved.length !== this.paramGroups.length) {
      throw new Error(`${name}: the state dict has ${Array.isArray(saved) ? saved.length : 'no'} param groups, this optimizer has ${this.paramGroups.length}`);
    }
    const byIndex = new Map<number, [Tensor, O]>();
    const options = saved.map((group, g) => {
      const current = this.paramGroups[g]!;
      if (!Array.isArray(group.params) || group.params.length !== current.params.length) {
        throw new Error(`${name}: param_groups[${g}] has ${Array.isArray(group.params) ? group.params.length : 'no'} params, this optimizer's group ${g} has ${current.params.length}`);
      }
      const loaded = this.groupOptions(group, `param_groups[${g}]`, name);
      group.params.forEach((id, i) => byIndex.set(id, [current.params[i]!, loaded.options]));
      return loaded;
    });
    const state = new Map<Tensor, S>();
    const created: Tensor[] = [];
    try {
      for (const [id, entry] of Object.entries(stateDict.state)) {
        const target = byIndex.get(Number(id));
        if (target === undefined) throw new Error(`${name}: state '${id}' belongs to no parameter of param_groups`);
        const [param, group] = target;
        state.set(param, this.loadParamState(entry, param, { ...group, params: [param] }, `state[${id}]`, name, created));
      }
    } catch (error) {
      for (const t of created) t.dispose();
      throw error;
    }
    // The old state tensors are left to the garbage collector: a caller may still hold them.
    this.state.clear();
    for (const [param, s] of state) this.state.set(param, s);
    options.forEach(({ options: o, initialLr }, g) => {
      const group = this.paramGroups[g]!;
      Object.assign(group, o);
      if (initialLr === undefined) delete group.initialLr;
      else group.initialLr = initialLr;
    });
  }

  private groupOptions(group: SavedParamGroup, where: string, name: string): { options: O; initialLr?: number } {
    const options = {} as Record<string, OptionValue>;
    for (const [key, fallback] of Object.entries(this.defaults)) {
      const value = group[snakeCase(key)];
      const sameKind = Array.isArray(fallback)
        ? Array.isArray(value) && value.length === fallback.length && value.every((v) => typeof v === 'number')
        : typeof value === typeof fallback;
      if (!sameKind) throw new Error(`${name}: ${where}.${snakeCase(key)} is ${JSON.stringify(value)}, expected a value like ${JSON.stringify(fallback)}`);
      options[key] = Array.isArray(value) ? [...value] : value as OptionValue;
    }
    const implied = this.impliedGroupKeys();
    for (const [key, value] of Object.entries(group)) {
      if (key === 'params' || key === 'initial_lr' || IMPLEMENTATION_FLAGS.has(key)) continue;
      if (key in implied) {
        if (value !== implied[key]) throw new Error(`${name}: ${where}.${key} is ${JSON.stringify(value)}, but ${this.constructor.name} has ${JSON.stringify(implied[key])}`);
      } else if (!Object.keys(this.defaults).some((k) => snakeCase(k) === key)) {
        throw new Error(`${name}: unknown key '${key}' in ${where}`);
      }
    }
    this.validateOptions(options as O, where);
    const initialLr = group.initial_lr;
    if (initialLr !== undefined && typeof initialLr !== 'number') throw new Error(`${name}: ${where}.initial_lr is not a number`);
    return { options: options as O, initialLr };
  }

  private loadParamState(
    entry: Record<string, Tensor | number>, param: Tensor, group: ParamGroup<O>, where: string, name: string, created: Tensor[],
  ): S {
    const keys = this.stateKeys(group);
    const missing = ['step', ...keys].filter((k) => !(k in entry));
    const unexpected = Object.keys(entry).filter((k) => k !== 'step' && !keys.includes(k));
    if (missing.length > 0 || unexpected.length > 0) {
      throw new Error(`${name}: ${where} has missing keys [${missing.join(', ')}], unexpected keys [${unexpected.join(', ')}]`);
    }
    const step = entry.step;
    const state: ParamState = { step: step instanceof torch.Tensor ? step.item() : step! };
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`${name}: ${where}.step is ${state.step}, expected a count of steps`);
    for (const key of keys) {
      const value = entry[key];
      if (!(value instanceof torch.Tensor)) throw new Error(`${name}: ${where}.${key} is not a tensor`);
      if (value.shape.join() !== param.shape.join() || value.ndim !== param.ndim) {
        throw new Error(`${name}: ${where}.${key} has shape [${value.shape}], its parameter has shape [${param.shape}]`);
      }
      // Copied so that the caller's tensors are never updated in place (PyTorch deep-copies).
      const t = torch.keep(torch.noGrad(() => value.to({ dtype: param.dtype, device: param.device }, { copy: true })));
      created.push(t);
      state[key] = t;
    }
    return state as S;
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint form: one safetensors file holds every tensor as `${prefix}state.<index>.<key>` and
// the JSON-able rest (param_groups, non-tensor state values) goes in its header metadata.

const metadataSchema = z.object({
  param_groups: z.array(z.looseObject({ params: z.array(z.number().int().nonnegative()) })),
  state: z.record(z.string(), z.record(z.string(), z.number())),
});
export type OptimizerMetadata = z.infer<typeof metadataSchema>;

export function flattenStateDict(stateDict: OptimizerStateDict, prefix = 'opt.'): { tensors: Record<string, Tensor>; metadata: OptimizerMetadata } {
  const tensors: Record<string, Tensor> = {};
  const state: OptimizerMetadata['state'] = {};
  for (const [id, entry] of Object.entries(stateDict.state)) {
    for (const [key, value] of Object.entries(entry)) {
      if (value instanceof torch.Tensor) tensors[`${prefix}state.${id}.${key}`] = value;
      else (state[id] ??= {})[key] = value;
    }
  }
  return { tensors, metadata: { param_groups: stateDict.param_groups, state } };
}

/**
 * The inverse of flattenStateDict: picks the `${prefix}state.*` tensors out of `tensors` (which
 * may hold other entries, e.g. model.* and ema.*) and validates `metadata` (from a file header).
 */
export function unflattenStateDict(tensors: Record<string, Tensor>, metadata: unknown, prefix = 'opt.'): OptimizerStateDict {
  const parsed = metadataSchema.safeParse(metadata);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`unflattenStateDict: bad optimizer metadata at '${issue.path.join('.')}': ${issue.message}`);
  }
  const state: OptimizerStateDict['state'] = {};
  for (const [id, values] of Object.entries(parsed.data.state)) state[id] = { ...values };
  for (const [name, tensor] of Object.entries(tensors)) {
    if (!name.startsWith(prefix)) continue;
    const match = /^state\.(\d+)\.([A-Za-z0-9_]+)$/.exec(name.slice(prefix.length));
    if (match === null) throw new Error(`unflattenStateDict: tensor '${name}' is not of the form ${prefix}state.<index>.<key>`);
    (state[match[1]!] ??= {})[match[2]!] = tensor;
  }
  return { state, param_groups: parsed.data.param_groups as SavedParamGroup[] };
}
