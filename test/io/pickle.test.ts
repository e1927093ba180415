import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from '../helpers.js';
import { bufferSource, toPlain, unpickle } from '../../src/io/pickle.js';

function loads(bytes: Uint8Array, name = 'test.pkl'): unknown {
  const { value, end } = unpickle(bufferSource(bytes), 0, { name });
  assert.equal(end, bytes.length, 'the pickle ends at the end of the input');
  return toPlain(value);
}

const latin1 = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0));

// make_io.py's plain(), spelled out in JavaScript.
const shared = [1, 2];
const PLAIN = {
  ints: [0, 1, -1, 255, 256, 65535, 65536, -(2 ** 31), 2 ** 31 - 1, 2 ** 31, 2 ** 53 - 1, 2n ** 53n, -(2n ** 63n), 2n ** 64n],
  floats: [0, -0.5, 1e300, Infinity],
  strings: ['', 'ascii', 'h\u00e9llo \u2713 \u{1F600}', 'x'.repeat(300)],
  bytes: [latin1('ab'), Uint8Array.from({ length: 400 }, (_, i) => (i % 2 === 1 ? 0xff : 0))],
  bytearray: latin1('xyz'),
  set: new Set([1, 2, 3]),
  frozenset: new Set(['a']),
  tuples: [[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]],
  none: null,
  bools: [true, false],
  shared: [shared, shared],
  namespace: { __class__: 'argparse.Namespace', a: 1, b: [1, 2] },
  ordered: { z: 1, a: 2 },
  keys: new Map<unknown, unknown>([[1, { x: null }], [[1, 'a'], 2], [null, 3]]),
};

for (const protocol of [2, 5]) {
  test(`protocol ${protocol}: Python's pickle of plain data reads back as the documented JavaScript values`, () => {
    const value = loads(readFileSync(join(FIXTURES, 'io', `plain${protocol}.pkl`))) as typeof PLAIN;
    assert.deepEqual(value, PLAIN);
    assert.deepEqual(Object.keys(value.ordered), ['z', 'a'], 'dict order is kept');
    assert.equal(value.shared[0], value.shared[1], 'an object pickled once and referenced twice stays one object');
  });
}

test('an unsupported opcode is named in the error, with the input name', () => {
  assert.throws(() => loads(latin1('\x80\x02I1\n.'), 'old.pkl'), /^Error: old\.pkl: unsupported pickle opcode INT \(0x49\) at byte 2$/);
});

test('calling a global that reals does not know is an error naming it; a bare reference is a record', () => {
  assert.throws(() => loads(latin1('\x80\x02cdatetime\ndate\n)R.')), /test\.pkl: cannot unpickle a call to datetime\.date/);
  assert.deepEqual(loads(latin1('\x80\x02cpathlib\nPosixPath\n.')), { __global__: 'pathlib.PosixPath' });
});

test('truncated pickles and persistent ids without a loader are errors', () => {
  const bytes = readFileSync(join(FIXTURES, 'io', 'plain5.pkl'));
  assert.throws(() => loads(bytes.subarray(0, 600), 'cut.pkl'), /cut\.pkl: pickle data is truncated/);
  assert.throws(() => loads(latin1('\x80\x02K\x01Q.')), /persistent id \(BINPERSID at byte 4\) but no loader/);
});

/** A protocol-2 pickle of one LONG4 integer with these little-endian two's-complement bytes. */
function long4(bytes: Uint8Array): Uint8Array {
  const length = new Uint8Array(4);
  new DataView(length.buffer).setInt32(0, bytes.length, true);
  return Uint8Array.from([0x80, 0x02, 0x8b, ...length, ...bytes, 0x2e]);
}

test('LONG4 integers up to 1 KiB read as pickle.decode_long does; longer ones are refused, naming the opcode', () => {
  // The expected value by a second method: the sum of byte * 256^i, less 2^(8n) when the top bit is set.
  const bytes = Uint8Array.from({ length: 1024 }, (_, i) => (i * 151 + 7) & 0xff);
  for (const top of [0x7f, 0x80]) {
    bytes[1023] = top;
    let want = 0n;
    for (let i = 0; i < bytes.length; i++) want += BigInt(bytes[i]!) * 256n ** BigInt(i);
    if (top >= 0x80) want -= 256n ** 1024n;
    assert.equal(loads(long4(bytes)), want);
  }
  assert.equal(loads(long4(new Uint8Array(0))), 0, 'an empty LONG4 is 0, as decode_long(b"")');
  const start = performance.now();
  assert.throws(() => loads(long4(new Uint8Array(256 * 1024)), 'big.pkl'), /^Error: big\.pkl: LONG4 at byte 2 holds a 262144-byte integer; at most 1024 bytes are read$/);
  assert.ok(performance.now() - start < 1000, 'refused before the bytes are decoded');
});

test('a GLOBAL name longer than 4 KiB is refused naming the byte, not spread onto the stack', () => {
  const name = 'm'.repeat(1 << 20);
  assert.throws(() => loads(latin1(`\x80\x02c${name}\nx\n.`), 'long.pkl'), /^Error: long\.pkl: a GLOBAL name at byte 3 runs past 4096 bytes$/);
});
