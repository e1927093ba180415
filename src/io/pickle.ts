// A Python unpickler (protocols 2-5, as CPython's Lib/pickle.py `_Unpickler`), enough to read
// PyTorch checkpoints without Python. Nothing is ever executed: globals resolve only through a
// table (`findGlobal`), and an unknown class becomes a plain record.
//
// Values come out as JavaScript values:
//   None → null, bool → boolean, int → number (bigint beyond ±2^53), float → number, str → string,
//   bytes/bytearray → Uint8Array, list and tuple → Array, set/frozenset → Set,
//   dict → a plain object when every key is a string, otherwise a Map (keys keep their type:
//     numbers, arrays for tuples, ...); attributes set on a dict subclass (OrderedDict's
//     `_metadata` in state dicts) become non-enumerable properties, as Python attributes are not keys,
//   an instance of an unknown class → { __class__: 'argparse.Namespace', ...its attributes }
//     (constructor arguments, when there are any, under `__args__`),
//   a bare reference to an unknown class or function → { __global__: 'module.name' }.

/** Bytes at increasing positions: an in-memory buffer or positioned reads on a file. */
export interface ByteSource {
  readonly size: number;
  /** Up to `length` bytes starting at `position` (fewer only at the end of the source). */
  read(position: number, length: number): Uint8Array;
}

export function bufferSource(bytes: Uint8Array): ByteSource {
  return { size: bytes.length, read: (position, length) => bytes.subarray(position, position + length) };
}

/** A Python callable that `findGlobal` resolves: called by REDUCE and NEWOBJ with the argument tuple. */
export type PyCallable = (args: unknown[]) => unknown;

export interface UnpickleOptions {
  /** Names the input in error messages (a file, or a file and an archive entry). */
  name: string;
  /**
   * Resolves `module.name` to a callable or a value; undefined for an unknown global, which then
   * yields records when instantiated and an error when called.
   */
  findGlobal?: (module: string, name: string) => unknown;
  /** Resolves a persistent id (BINPERSID), as Python's `Unpickler.persistent_load`. */
  persistentLoad?: (pid: unknown) => unknown;
}

/** A reference to a Python global that `findGlobal` does not know. */
class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualifiedName(): string { return `${this.module}.${this.name}`; }
}

/** An instance of an unknown class, built by NEWOBJ (or copyreg) and filled by BUILD. */
class PyObject {
  readonly state = new Map<string, unknown>();
  constructor(readonly cls: PyGlobal, readonly args: unknown[]) {}
}

/** Attributes that BUILD set on dict instances (dict subclasses such as OrderedDict). */
const dictAttributes = new WeakMap<Map<unknown, unknown>, Map<string, unknown>>();

const WINDOW = 1 << 20;

/** The longest GLOBAL line read: Python's dotted module and class names are far shorter. */
const MAX_LINE = 4096;

/** The longest LONG1/LONG4 integer read, in bytes (LONG1's own limit is 255). */
const MAX_LONG_BYTES = 1024;

/**
 * Reads one pickle starting at `start` and returns its value in the raw form the unpickler builds
 * (dicts are Maps, instances are internal records): pass it through `toPlain` once everything it
 * refers to (persistent ids) is available. `end` is the position just after STOP.
 */
export function unpickle(source: ByteSource, start: number, options: UnpickleOptions): { value: unknown; end: number } {
  return new Unpickler(source, start, options).load();
}

class Unpickler {
  private pos: number;
  private window: Uint8Array = new Uint8Array(0);
  private windowStart = 0;
  private stack: unknown[] = [];
  private readonly metastack: unknown[][] = [];
  private readonly memo = new Map<number, unknown>();
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true });

  constructor(private readonly source: ByteSource, start: number, private readonly options: UnpickleOptions) {
    this.pos = start;
  }

  private fail(message: string): never {
    throw new Error(`${this.options.name}: ${message}`);
  }

  // --- reading ------------------------------------------------------------------------------
  private bytes(n: number): Uint8Array {
    let offset = this.pos - this.windowStart;
    if (offset < 0 || offset + n > this.window.length) {
      this.window = this.source.read(this.pos, Math.max(n, WINDOW));
      this.windowStart = this.pos;
      offset = 0;
      if (this.window.length < n) this.fail(`pickle data is truncated (needs ${n} bytes at byte ${this.pos}, the input ends at byte ${this.source.size})`);
    }
    this.pos += n;
    return this.window.subarray(offset, offset + n);
  }
  private byte(): number { return this.bytes(1)[0]!; }
  /** A copy, as a plain Uint8Array even when the source hands out Buffers. */
  private copy(n: number): Uint8Array { return new Uint8Array(this.bytes(n)); }
  private view(n: number): DataView {
    const b = this.bytes(n);
    return new DataView(b.buffer, b.byteOffset, n);
  }
  private uint16(): number { return this.view(2).getUint16(0, true); }
  private int32(): number { return this.view(4).getInt32(0, true); }
  private uint32(): number { return this.view(4).getUint32(0, true); }
  private uint64(): number {
    const v = this.view(8).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`length ${v} at byte ${this.pos - 8} is too large`);
    return Number(v);
  }
  /** A newline-terminated name (GLOBAL's module and qualified name), at most MAX_LINE bytes. */
  private line(): string {
    const start = this.pos;
    const chars: number[] = [];
    for (let c = this.byte(); c !== 0x0a; c = this.byte()) {
      if (chars.length === MAX_LINE) this.fail(`a GLOBAL name at byte ${start} runs past ${MAX_LINE} bytes`);
      chars.push(c);
    }
    return String.fromCharCode(...chars);
  }
  private text(n: number): string {
    // Read outside the try: a length past the end is "truncated", not a decoding error.
    const bytes = this.bytes(n);
    try {
      return this.utf8.decode(bytes);
    } catch {
      return this.fail(`invalid UTF-8 in a string at byte ${this.pos - n}`);
    }
  }
  /**
   * A little-endian two's-complement integer, as pickle's LONG1/LONG4 (decode_long), read in one
   * pass through its hex digits. A checkpoint's integers (sizes, steps, seeds) take a few bytes;
   * past MAX_LONG_BYTES the input is refused rather than turned into a huge BigInt.
   */
  private long(n: number, opcode: string, at: number): number | bigint {
    if (n > MAX_LONG_BYTES) this.fail(`${opcode} at byte ${at} holds a ${n}-byte integer; at most ${MAX_LONG_BYTES} bytes are read`);
    if (n === 0) return 0;
    const b = this.bytes(n);
    let v = BigInt(`0x${Buffer.from(b).reverse().toString('hex')}`);
    if (b[n - 1]! >= 0x80) v -= 1n << BigInt(8 * n);
    return Number.isSafeInteger(Number(v)) && BigInt(Number(v)) === v ? Number(v) : v;
  }

  // --- stack --------------------------------------------------------------------------------
  private push(v: unknown): void { this.stack.push(v); }
  private pop(): unknown {
    if (this.stack.length === 0) this.fail(`pickle stack underflow at byte ${this.pos - 1}`);
    return this.stack.pop();
  }
  private top(): unknown {
    if (this.stack.length === 0) this.fail(`pickle stack underflow at byte ${this.pos - 1}`);
    return this.stack[this.stack.length - 1];
  }
  private popMark(): unknown[] {
    const items = this.stack;
    const previous = this.metastack.pop();
    if (previous === undefined) this.fail(`pickle has no MARK to pop at byte ${this.pos - 1}`);
    this.stack = previous;
    return items;
  }
  private memoGet(index: number): unknown {
    if (!this.memo.has(index)) this.fail(`pickle memo has no entry ${index} (byte ${this.pos})`);
    return this.memo.get(index);
  }

  private dictOf(target: unknown, opcode: string): Map<unknown, unknown> {
    if (!(target instanceof Map)) this.fail(`${opcode} on a ${describe(target)}, expected a dict`);
    return target;
  }

  private global(module: string, name: string): unknown {
    const known = this.options.findGlobal?.(module, name) ?? builtinGlobal(module, name);
    if (known === undefined) return new PyGlobal(module, name);
    if (typeof known !== 'function') return known;
    return (args: unknown[]) => {
      try {
        return (known as PyCallable)(args);
      } catch (error) {
        return this.fail(`${module}.${name}: ${(error as Error).message}`);
      }
    };
  }

  private call(callable: unknown, args: unknown[], opcode: string): unknown {
    if (typeof callable === 'function') return (callable as PyCallable)(args);
    if (callable instanceof PyGlobal) {
      if (opcode === 'NEWOBJ') return new PyObject(callable, args);
      this.fail(`cannot unpickle a call to ${callable.qualifiedName}: reals does not know this global`);
    }
    return this.fail(`${opcode} on a ${describe(callable)}, expected a class or function`);
  }

  private build(target: unknown, state: unknown): void {
    let attributes = state;
    let slots: unknown = null;
    if (Array.isArray(state) && state.length === 2) [attributes, slots] = state;
    const entries: [unknown, unknown][] = [];
    for (const part of [attributes, slots]) {
      if (part === null) continue;
      if (!(part instanceof Map)) this.fail(`BUILD with a ${describe(part)} state on a ${describe(target)}`);
      entries.push(...part);
    }
    let into: Map<string, unknown>;
    if (target instanceof PyObject) into = target.state;
    else if (target instanceof Map) {
      into = dictAttributes.get(target) ?? new Map();
      dictAttributes.set(target, into);
    } else {
      return this.fail(`BUILD (setting attributes) on a ${describe(target)} is not supported`);
    }
    for (const [key, value] of entries) {
      if (typeof key !== 'string') this.fail(`BUILD with a non-string attribute name on a ${describe(target)}`);
      into.set(key, value);
    }
  }

  // --- the opcode loop ----------------------------------------------------------------------
  load(): { value: unknown; end: number } {
    for (;;) {
      const at = this.pos;
      const code = this.byte();
      switch (code) {
        case 0x80: { // PROTO
          const protocol = this.byte();
          if (protocol > 5) this.fail(`unsupported pickle protocol ${protocol}`);
          break;
        }
        case 0x95: this.bytes(8); break; // FRAME: only a hint for buffered readers
        case 0x2e: { // STOP
          const value = this.pop();
          return { value, end: this.pos };
        }
        case 0x28: this.metastack.push(this.stack); this.stack = []; break; // MARK
        case 0x30: this.pop(); break; // POP
        case 0x31: this.popMark(); break; // POP_MARK
        case 0x32: this.push(this.top()); break; // DUP

        case 0x4e: this.push(null); break; // NONE
        case 0x88: this.push(true); break; // NEWTRUE
        case 0x89: this.push(false); break; // NEWFALSE
        case 0x4a: this.push(this.int32()); break; // BININT
        case 0x4b: this.push(this.byte()); break; // BININT1
        case 0x4d: this.push(this.uint16()); break; // BININT2
        case 0x8a: this.push(this.long(this.byte(), 'LONG1', at)); break;
        case 0x8b: { // LONG4
          const n = this.int32();
          if (n < 0) this.fail(`LONG4 with negative length at byte ${at}`);
          this.push(this.long(n, 'LONG4', at));
          break;
        }
        case 0x47: this.push(this.view(8).getFloat64(0, false)); break; // BINFLOAT (big-endian)

        case 0x8c: this.push(this.text(this.byte())); break; // SHORT_BINUNICODE
        case 0x58: this.push(this.text(this.uint32())); break; // BINUNICODE
        case 0x8d: this.push(this.text(this.uint64())); break; // BINUNICODE8
        // Python 2 str: torch.load decodes it with encoding='utf-8' by default.
        case 0x55: this.push(this.text(this.byte())); break; // SHORT_BINSTRING
        case 0x54: { // BINSTRING
          const n = this.int32();
          if (n < 0) this.fail(`BINSTRING with negative length at byte ${at}`);
          this.push(this.text(n));
          break;
        }
        case 0x43: this.push(this.copy(this.byte())); break; // SHORT_BINBYTES
        case 0x42: this.push(this.copy(this.uint32())); break; // BINBYTES
        case 0x8e: this.push(this.copy(this.uint64())); break; // BINBYTES8
        case 0x96: this.push(this.copy(this.uint64())); break; // BYTEARRAY8

        case 0x7d: this.push(new Map()); break; // EMPTY_DICT
        case 0x5d: this.push([]); break; // EMPTY_LIST
        case 0x29: this.push([]); break; // EMPTY_TUPLE
        case 0x8f: this.push(new Set()); break; // EMPTY_SET
        case 0x85: this.push([this.pop()]); break; // TUPLE1
        case 0x86: { // TUPLE2
          const b = this.pop();
          this.push([this.pop(), b]);
          break;
        }
        case 0x87: { // TUPLE3
          const c = this.pop();
          const b = this.pop();
          this.push([this.pop(), b, c]);
          break;
        }
        case 0x74: this.push(this.popMark()); break; // TUPLE
        case 0x6c: this.push(this.popMark()); break; // LIST
        case 0x64: { // DICT
          const items = this.popMark();
          const dict = new Map<unknown, unknown>();
          for (let i = 0; i + 1 < items.length; i += 2) dict.set(items[i], items[i + 1]);
          this.push(dict);
          break;
        }
        case 0x91: this.push(new Set(this.popMark())); break; // FROZENSET

        case 0x61: { // APPEND
          const value = this.pop();
          const list = this.top();
          if (!Array.isArray(list)) this.fail(`APPEND on a ${describe(list)} at byte ${at}`);
          list.push(value);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.popMark();
          const list = this.top();
          if (!Array.isArray(list)) this.fail(`APPENDS on a ${describe(list)} at byte ${at}`);
          for (const item of items) list.push(item);
          break;
        }
        case 0x73: { // SETITEM
          const value = this.pop();
          const key = this.pop();
          this.dictOf(this.top(), 'SETITEM').set(key, value);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.popMark();
          const dict = this.dictOf(this.top(), 'SETITEMS');
          for (let i = 0; i + 1 < items.length; i += 2) dict.set(items[i], items[i + 1]);
          break;
        }
        case 0x90: { // ADDITEMS
          const items = this.popMark();
          const set = this.top();
          if (!(set instanceof Set)) this.fail(`ADDITEMS on a ${describe(set)} at byte ${at}`);
          for (const item of items) set.add(item);
          break;
        }

        case 0x71: this.memo.set(this.byte(), this.top()); break; // BINPUT
        case 0x72: this.memo.set(this.uint32(), this.top()); break; // LONG_BINPUT
        case 0x94: this.memo.set(this.memo.size, this.top()); break; // MEMOIZE
        case 0x68: this.push(this.memoGet(this.byte())); break; // BINGET
        case 0x6a: this.push(this.memoGet(this.uint32())); break; // LONG_BINGET

        case 0x63: { // GLOBAL
          const module = this.line();
          this.push(this.global(module, this.line()));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') this.fail(`STACK_GLOBAL with non-string names at byte ${at}`);
          this.push(this.global(module, name));
          break;
        }
        case 0x52: { // REDUCE
          const args = this.pop();
          if (!Array.isArray(args)) this.fail(`REDUCE with a ${describe(args)} as arguments at byte ${at}`);
          this.push(this.call(this.pop(), args, 'REDUCE'));
          break;
        }
        case 0x81: { // NEWOBJ
          const args = this.pop();
          if (!Array.isArray(args)) this.fail(`NEWOBJ with a ${describe(args)} as arguments at byte ${at}`);
          this.push(this.call(this.pop(), args, 'NEWOBJ'));
          break;
        }
        case 0x62: { // BUILD
          const state = this.pop();
          this.build(this.top(), state);
          break;
        }
        case 0x51: { // BINPERSID
          const pid = this.pop();
          if (this.options.persistentLoad === undefined) this.fail(`pickle has a persistent id (BINPERSID at byte ${at}) but no loader for it`);
          this.push(this.options.persistentLoad(pid));
          break;
        }
        default:
          this.fail(`unsupported pickle opcode ${OPCODE_NAMES[code] ?? 'unknown'} (0x${code.toString(16).padStart(2, '0')}) at byte ${at}`);
      }
    }
  }
}

/** Opcodes this unpickler does not implement (text protocol 0, extension registry, out-of-band buffers). */
const OPCODE_NAMES: Record<number, string> = {
  0x49: 'INT', 0x4c: 'LONG', 0x53: 'STRING', 0x56: 'UNICODE', 0x46: 'FLOAT', 0x70: 'PUT', 0x67: 'GET',
  0x69: 'INST', 0x6f: 'OBJ', 0x50: 'PERSID', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x92: 'NEWOBJ_EX',
  0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** Python built-ins that pickles of plain data use (as Lib/pickle.py resolves them, with Python 2 names). */
function builtinGlobal(module: string, name: string): PyCallable | undefined {
  const m = module === '__builtin__' ? 'builtins' : module === 'copy_reg' ? 'copyreg' : module;
  switch (`${m}.${name}`) {
    case 'collections.OrderedDict':
      return (args) => new Map(args.length === 0 ? [] : (args[0] as [unknown, unknown][]));
    case 'builtins.set':
    case 'builtins.frozenset':
      return (args) => new Set(args.length === 0 ? [] : (args[0] as unknown[]));
    case 'builtins.bytearray':
      return (args) => (args.length === 0 ? new Uint8Array(0) : latin1Bytes(args[0], `${m}.${name}`));
    // Protocol 2 has no bytes opcode: Python 3 pickles bytes as _codecs.encode(text, 'latin1').
    case '_codecs.encode':
      return (args) => {
        if (args[1] !== 'latin1' && args[1] !== 'latin-1') throw new Error(`_codecs.encode with encoding ${String(args[1])} is not supported`);
        return latin1Bytes(args[0], '_codecs.encode');
      };
    // Protocols 0 and 1 rebuild plain instances as copyreg._reconstructor(cls, object, None).
    case 'copyreg._reconstructor':
      return (args) => {
        const [cls, , state] = args;
        if (!(cls instanceof PyGlobal) || state !== null) throw new Error(`copyreg._reconstructor of ${describe(cls)} is not supported`);
        return new PyObject(cls, []);
      };
    default:
      return undefined;
  }
}

function latin1Bytes(value: unknown, what: string): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (typeof value !== 'string') throw new Error(`${what}: expected a str, got a ${describe(value)}`);
  const out = new Uint8Array(value.length);
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c > 0xff) throw new Error(`${what}: character U+${c.toString(16)} is not latin-1`);
    out[i] = c;
  }
  return out;
}

function describe(value: unknown): string {
  if (value === null) return 'None';
  if (value instanceof PyGlobal) return value.qualifiedName;
  if (value instanceof PyObject) return `${value.cls.qualifiedName} instance`;
  if (value instanceof Map) return 'dict';
  if (Array.isArray(value)) return 'list/tuple';
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return typeof value;
}

/**
 * Turns the unpickler's raw value into the documented JavaScript form. `leaf` converts objects
 * that `findGlobal` callables or `persistentLoad` produced (e.g. tensor references); any other
 * unknown object is an error. Shared references stay shared (a value pickled once and referenced
 * twice comes out as one JavaScript object).
 */
export function toPlain(raw: unknown, leaf: (value: object) => unknown = unconvertible): unknown {
  const done = new Map<object, unknown>();
  const convert = (value: unknown): unknown => {
    if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return value;
    if (done.has(value)) return done.get(value);
    if (Array.isArray(value)) {
      const out: unknown[] = [];
      done.set(value, out);
      for (const item of value) out.push(convert(item));
      return out;
    }
    if (value instanceof Set) {
      const out = new Set<unknown>();
      done.set(value, out);
      for (const item of value) out.add(convert(item));
      return out;
    }
    if (value instanceof Map) {
      const attributes = dictAttributes.get(value);
      let out: Record<string, unknown> | Map<unknown, unknown>;
      if ([...value.keys()].every((k) => typeof k === 'string')) {
        const record: Record<string, unknown> = {};
        done.set(value, record);
        for (const [k, v] of value) defineKey(record, k as string, convert(v), true);
        out = record;
      } else {
        const map = new Map<unknown, unknown>();
        done.set(value, map);
        for (const [k, v] of value) map.set(convert(k), convert(v));
        out = map;
      }
      for (const [k, v] of attributes ?? []) defineKey(out, k, convert(v), false);
      return out;
    }
    if (value instanceof PyObject) {
      const record: Record<string, unknown> = { __class__: value.cls.qualifiedName };
      done.set(value, record);
      if (value.args.length > 0) record.__args__ = convert(value.args);
      for (const [k, v] of value.state) defineKey(record, k, convert(v), true);
      return record;
    }
    if (value instanceof PyGlobal) return { __global__: value.qualifiedName };
    const out = leaf(value);
    done.set(value, out);
    return out;
  };
  return convert(raw);
}

function unconvertible(value: object): never {
  throw new Error(`unpickled a ${describe(value)}, which has no plain JavaScript form`);
}

// defineProperty rather than assignment, so that a key such as "__proto__" stays a plain key.
function defineKey(target: object, key: string, value: unknown, enumerable: boolean): void {
  Object.defineProperty(target, key, { value, enumerable, writable: true, configurable: true });
}
