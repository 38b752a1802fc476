// HTTP/1.1 framing for the raw-socket data plane: head parsing and the three body framings
// (Content-Length, chunked, close-delimited), fed whole, split at every byte and in random pieces.
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../src/core/random.js';
import {
  BodyDecoder,
  CRLF,
  FramingError,
  LAST_CHUNK,
  chunkFrame,
  connectionHas,
  contentLength,
  isChunked,
  parseHead,
  type Head,
  parseHeadCarefully,
} from '../../src/gateway/h1/framing.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function head(text: string, max = 64 * 1024): Head {
  const h = parseHead(b(text), max);
  if (!h) throw new Error('incomplete head');
  return h;
}

/** A decoder plus what it produced. */
function decoder(length: number | 'chunked' | 'close'): {
  dec: BodyDecoder;
  out: () => string;
  pieces: Buffer[];
} {
  const pieces: Buffer[] = [];
  const dec = new BodyDecoder(length, (c) => pieces.push(Buffer.from(c)));
  return { dec, pieces, out: () => Buffer.concat(pieces).toString('latin1') };
}

/** Feeds `buf` to `dec` in the given pieces; returns the total bytes consumed. */
function feed(dec: BodyDecoder, buf: Buffer, cuts: number[]): number {
  let used = 0;
  let from = 0;
  for (const to of [...cuts, buf.length]) {
    if (to <= from) continue;
    const piece = buf.subarray(from, to);
    used += dec.push(piece);
    from = to;
  }
  return used;
}

describe('parseHead', () => {
  it('parses a request head: start line, lowercased names, trimmed values, size', () => {
    const text = 'POST /v1/chat HTTP/1.1\r\nHost: a:1\r\nContent-Type:  application/json \r\n\r\n';
    const h = head(text + 'BODY');
    expect(h.line).toBe('POST /v1/chat HTTP/1.1');
    expect(h.headers.get('host')).toBe('a:1');
    expect(h.headers.get('content-type')).toBe('application/json');
    expect(h.size).toBe(Buffer.byteLength(text));
    expect(h.contentLengths).toBe(0);
  });

  it('parses a head with no header fields', () => {
    const h = head('GET / HTTP/1.1\r\n\r\n');
    expect(h.line).toBe('GET / HTTP/1.1');
    expect(h.headers.size).toBe(0);
    expect(h.size).toBe(18);
  });

  it('is undefined until the blank line arrives, split at every byte position', () => {
    const text = 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: b\r\n\r\n';
    const full = b(text);
    for (let i = 0; i < full.length; i++) {
      expect(parseHead(full.subarray(0, i), 1024)).toBeUndefined();
    }
    expect(parseHead(full, 1024)?.size).toBe(full.length);
  });

  it('throws a FramingError when an incomplete head already exceeds the limit', () => {
    const partial = b('GET / HTTP/1.1\r\nx-big: ' + 'a'.repeat(200));
    expect(() => parseHead(partial, 100)).toThrow(FramingError);
    // Under the limit it is merely incomplete.
    expect(parseHead(partial, 1000)).toBeUndefined();
  });

  it('throws a FramingError when a complete head exceeds the limit', () => {
    const text = 'GET / HTTP/1.1\r\nx-big: ' + 'a'.repeat(80) + '\r\n\r\n';
    expect(() => parseHead(b(text), text.length - 1)).toThrow(FramingError);
    expect(parseHead(b(text), text.length)?.size).toBe(text.length);
  });

  it('rejects a header line without a colon', () => {
    expect(() => parseHead(b('GET / HTTP/1.1\r\nnocolon\r\n\r\n'), 1024)).toThrow(FramingError);
  });

  it('rejects an empty header name', () => {
    expect(() => parseHead(b('GET / HTTP/1.1\r\n: v\r\n\r\n'), 1024)).toThrow(FramingError);
  });

  it.each([
    ['a space in the name', 'bad name: v'],
    ['whitespace before the colon', 'name : v'],
    ['an obsolete folded line', 'x-a: 1\r\n  folded'],
    ['a separator in the name', 'na(me): v'],
    ['a non-ASCII name', 'n\u00e9me: v'],
  ])('rejects a bad header name: %s', (_what, line) => {
    expect(() => parseHead(b(`GET / HTTP/1.1\r\n${line}\r\n\r\n`), 1024)).toThrow(FramingError);
  });

  it.each([
    ['NUL', 'a\x00b'],
    ['a bare LF', 'a\nb'],
    ['a bare CR', 'a\rb'],
    ['an escape', 'a\x1bb'],
    ['DEL', 'a\x7fb'],
  ])('rejects a control character in a header value: %s', (_what, value) => {
    expect(() => parseHead(b(`GET / HTTP/1.1\r\nx-a: ${value}\r\n\r\n`), 1024)).toThrow(
      FramingError,
    );
  });

  it('accepts tabs and obs-text in values', () => {
    const h = head('GET / HTTP/1.1\r\nx-a: a\tb\r\nx-b: caf\u00e9\r\n\r\n');
    expect(h.headers.get('x-a')).toBe('a\tb');
    expect(h.headers.get('x-b')).toBe('caf\u00e9');
  });

  it('joins repeated fields with ", " (case-insensitive names)', () => {
    const h = head('GET / HTTP/1.1\r\nAccept: a\r\naccept: b\r\nACCEPT: c\r\n\r\n');
    expect(h.headers.get('accept')).toBe('a, b, c');
  });

  it('lowercases common names in any case, and names that only look like them stay apart', () => {
    const h = head(
      'POST / HTTP/1.1\r\nCONTENT-LENGTH: 1\r\nAuthorization: k\r\nX-REQUEST-ID: r\r\n' +
        'content_length: u\r\nContent-Lengtx: t\r\nX-Request-Id9: n\r\nhost: h\r\n\r\n',
    );
    expect(h.headers.toRecord()).toEqual({
      'content-length': '1',
      authorization: 'k',
      'x-request-id': 'r',
      content_length: 'u',
      'content-lengtx': 't',
      'x-request-id9': 'n',
      host: 'h',
    });
    expect(h.contentLengths).toBe(1);
  });

  it('counts Content-Length fields', () => {
    expect(head('GET / HTTP/1.1\r\ncontent-length: 5\r\n\r\n').contentLengths).toBe(1);
    expect(
      head('GET / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n').contentLengths,
    ).toBe(2);
  });

  it('does not let a header named like an Object prototype member misbehave', () => {
    const h = head('GET / HTTP/1.1\r\n__proto__: x\r\nconstructor: y\r\ntoString: z\r\n\r\n');
    expect(h.headers.get('__proto__')).toBe('x');
    expect(h.headers.get('constructor')).toBe('y');
    expect(h.headers.get('tostring')).toBe('z');
  });

  it('keeps thousands of fields, repeated ones joined, past the point where it indexes names', () => {
    // Fields scans its names up to 16 and indexes them beyond (a 64 KiB head can carry thousands).
    let text = 'GET / HTTP/1.1\r\n';
    for (let i = 0; i < 3000; i++) text += `X-F${i % 1000}: v${i}\r\n`;
    const h = head(`${text}Host: h\r\n\r\n`);
    expect(h.headers.size).toBe(1001);
    expect(h.headers.get('x-f0')).toBe('v0, v1000, v2000');
    expect(h.headers.get('x-f15')).toBe('v15, v1015, v2015');
    expect(h.headers.get('x-f999')).toBe('v999, v1999, v2999');
    expect(h.headers.get('host')).toBe('h');
    expect(h.headers.get('x-f1000')).toBeUndefined();
    const rec = h.headers.toRecord();
    expect(Object.keys(rec)).toHaveLength(1001);
    expect(Object.keys(rec)[16]).toBe('x-f16'); // in order of first appearance
    // Below the index too: a few fields, one repeated.
    const small = head('GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\na: 3\r\n\r\n');
    expect(small.headers.get('a')).toBe('1, 3');
    expect(small.headers.size).toBe(2);
  });

  it('parses only up to the first blank line (the rest is body)', () => {
    const h = head('GET / HTTP/1.1\r\na: 1\r\n\r\nb: 2\r\n\r\n');
    expect(h.headers.get('a')).toBe('1');
    expect(h.headers.get('b')).toBeUndefined();
    expect(h.size).toBe('GET / HTTP/1.1\r\na: 1\r\n\r\n'.length);
  });
});

describe('contentLength / isChunked / connectionHas', () => {
  it('is undefined without a Content-Length', () => {
    expect(contentLength(head('GET / HTTP/1.1\r\n\r\n'))).toBeUndefined();
  });

  it('reads a valid Content-Length', () => {
    expect(contentLength(head('GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n'))).toBe(0);
    expect(contentLength(head('GET / HTTP/1.1\r\ncontent-length: 1234\r\n\r\n'))).toBe(1234);
    expect(contentLength(head('GET / HTTP/1.1\r\ncontent-length: 0070\r\n\r\n'))).toBe(70);
    expect(contentLength(head('GET / HTTP/1.1\r\ncontent-length: 999999999999999\r\n\r\n'))).toBe(
      999999999999999,
    );
  });

  it.each([
    ['repeated, equal values', 'content-length: 5\r\ncontent-length: 5'],
    ['repeated, different values', 'content-length: 5\r\ncontent-length: 6'],
    ['a list', 'content-length: 5, 5'],
    ['negative', 'content-length: -1'],
    ['a sign', 'content-length: +5'],
    ['hex', 'content-length: 0x10'],
    ['a fraction', 'content-length: 1.5'],
    ['empty', 'content-length: '],
    ['too many digits', 'content-length: 1234567890123456'],
    ['inner space', 'content-length: 1 2'],
    ['a trailing letter', 'content-length: 5x'],
    ['a character below the digits', 'content-length: 5/'],
    ['a character above the digits', 'content-length: 5:'],
  ])('rejects an invalid Content-Length: %s', (_what, lines) => {
    expect(() => contentLength(head(`GET / HTTP/1.1\r\n${lines}\r\n\r\n`))).toThrow(FramingError);
  });

  it('recognises exactly `chunked` transfer coding', () => {
    expect(isChunked(head('GET / HTTP/1.1\r\n\r\n'))).toBe(false);
    expect(isChunked(head('GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n'))).toBe(true);
    expect(isChunked(head('GET / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n'))).toBe(true);
    expect(() => isChunked(head('GET / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n'))).toThrow(
      FramingError,
    );
    expect(() =>
      isChunked(head('GET / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n')),
    ).toThrow(FramingError);
    expect(() =>
      isChunked(
        head('GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n'),
      ),
    ).toThrow(FramingError);
  });

  it('finds Connection tokens case-insensitively in a list', () => {
    const h = head('GET / HTTP/1.1\r\nConnection: Keep-Alive, Upgrade\r\n\r\n');
    expect(connectionHas(h, 'keep-alive')).toBe(true);
    expect(connectionHas(h, 'upgrade')).toBe(true);
    expect(connectionHas(h, 'close')).toBe(false);
    expect(connectionHas(head('GET / HTTP/1.1\r\n\r\n'), 'close')).toBe(false);
    expect(connectionHas(head('GET / HTTP/1.1\r\nconnection: close\r\n\r\n'), 'close')).toBe(true);
    expect(connectionHas(head('GET / HTTP/1.1\r\nconnection: CLOSE\r\n\r\n'), 'close')).toBe(true);
    const list = head('GET / HTTP/1.1\r\nConnection: foo ,\tClose\t, ,bar\r\n\r\n');
    expect(connectionHas(list, 'close')).toBe(true);
    expect(connectionHas(list, 'foo')).toBe(true);
    expect(connectionHas(list, 'bar')).toBe(true);
    expect(connectionHas(list, 'keep-alive')).toBe(false);
    expect(connectionHas(head('GET / HTTP/1.1\r\nconnection: keep-alive\r\n\r\n'), 'close')).toBe(
      false,
    );
    expect(connectionHas(head('GET / HTTP/1.1\r\nconnection: clos\r\n\r\n'), 'close')).toBe(false);
    expect(connectionHas(head('GET / HTTP/1.1\r\nconnection: xclose\r\n\r\n'), 'close')).toBe(
      false,
    );
    expect(connectionHas(head('GET / HTTP/1.1\r\nconnection: closed\r\n\r\n'), 'close')).toBe(
      false,
    );
  });
});

describe('BodyDecoder: Content-Length', () => {
  it('is done at once for a zero length and consumes nothing', () => {
    const { dec, pieces } = decoder(0);
    expect(dec.done).toBe(true);
    expect(dec.push(b('next'))).toBe(0);
    expect(pieces).toEqual([]);
  });

  it('decodes an exact body', () => {
    const { dec, out } = decoder(5);
    expect(dec.push(b('hello'))).toBe(5);
    expect(dec.done).toBe(true);
    expect(out()).toBe('hello');
  });

  it('decodes a body split across buffers', () => {
    const { dec, out } = decoder(11);
    expect(dec.push(b('hel'))).toBe(3);
    expect(dec.done).toBe(false);
    expect(dec.push(b('lo '))).toBe(3);
    expect(dec.push(b('world'))).toBe(5);
    expect(dec.done).toBe(true);
    expect(out()).toBe('hello world');
  });

  it('returns how many bytes belong to the body when the next message follows', () => {
    const { dec, out } = decoder(5);
    expect(dec.push(b('hel'))).toBe(3);
    expect(dec.push(b('loHTTP/1.1 200 OK'))).toBe(2);
    expect(dec.done).toBe(true);
    expect(out()).toBe('hello');
    // Once done, nothing more is taken.
    expect(dec.push(b('more'))).toBe(0);
    expect(out()).toBe('hello');
  });

  it('honours a start offset', () => {
    const { dec, out } = decoder(4);
    expect(dec.push(b('HEADbodyNEXT'), 4)).toBe(4);
    expect(out()).toBe('body');
    expect(dec.done).toBe(true);
  });

  it('reports an early end of input as invalid', () => {
    const { dec } = decoder(10);
    dec.push(b('abc'));
    expect(dec.endOfInput()).toBe(false);
    expect(dec.done).toBe(false);
  });

  it('reports the end of input after a complete body as valid', () => {
    const { dec } = decoder(3);
    dec.push(b('abc'));
    expect(dec.endOfInput()).toBe(true);
  });

  it('decodes at every split position', () => {
    const body = b('0123456789abcdef');
    for (let i = 0; i <= body.length; i++) {
      const { dec, out } = decoder(body.length);
      expect(feed(dec, Buffer.concat([body, b('XYZ')]), [i])).toBe(body.length);
      expect(out()).toBe(body.toString('latin1'));
      expect(dec.done).toBe(true);
    }
  });
});

describe('BodyDecoder: close-delimited', () => {
  it('takes everything until the end of input, which is a valid end', () => {
    const { dec, out } = decoder('close');
    expect(dec.push(b('abc'))).toBe(3);
    expect(dec.push(b('defg'), 1)).toBe(3);
    expect(dec.push(b(''))).toBe(0);
    expect(dec.done).toBe(false);
    expect(dec.endOfInput()).toBe(true);
    expect(dec.done).toBe(true);
    expect(out()).toBe('abcefg');
    expect(dec.push(b('late'))).toBe(0);
    expect(out()).toBe('abcefg');
  });
});

/** Encodes `parts` as a chunked body (with optional extensions and trailers). */
function chunked(parts: string[], opts: { ext?: string; trailers?: string } = {}): Buffer {
  let s = '';
  for (const p of parts)
    s += `${Buffer.byteLength(p, 'latin1').toString(16)}${opts.ext ?? ''}\r\n${p}\r\n`;
  s += `0${opts.ext ?? ''}\r\n${opts.trailers ?? ''}\r\n`;
  return b(s);
}

describe('BodyDecoder: chunked', () => {
  const parts = ['Hello', ', ', 'chunked ', 'world!', 'x'.repeat(26)];
  const plain = parts.join('');

  it('decodes a whole body in one buffer and returns its length', () => {
    const enc = chunked(parts);
    const { dec, out } = decoder('chunked');
    expect(dec.push(enc)).toBe(enc.length);
    expect(dec.done).toBe(true);
    expect(out()).toBe(plain);
  });

  it('returns only the body bytes when the next message follows in the same buffer', () => {
    const enc = chunked(parts);
    const next = b('HTTP/1.1 200 OK\r\n\r\n');
    const { dec, out } = decoder('chunked');
    expect(dec.push(Buffer.concat([enc, next]))).toBe(enc.length);
    expect(out()).toBe(plain);
    expect(dec.push(next)).toBe(0);
  });

  it('honours a start offset', () => {
    const enc = chunked(['abc']);
    const { dec, out } = decoder('chunked');
    expect(dec.push(Buffer.concat([b('HEAD'), enc, b('NEXT')]), 4)).toBe(enc.length);
    expect(out()).toBe('abc');
  });

  it('decodes an empty body (last chunk only)', () => {
    const { dec, out } = decoder('chunked');
    expect(dec.push(b('0\r\n\r\n'))).toBe(5);
    expect(dec.done).toBe(true);
    expect(out()).toBe('');
  });

  it('ignores chunk extensions, including on the last chunk', () => {
    const enc = chunked(parts, { ext: ';name=value;flag' });
    const { dec, out } = decoder('chunked');
    expect(dec.push(enc)).toBe(enc.length);
    expect(out()).toBe(plain);
    expect(dec.done).toBe(true);
  });

  it('accepts upper- and lower-case hex sizes', () => {
    const data = 'z'.repeat(0xab);
    for (const size of ['ab', 'AB', '0000aB']) {
      const { dec, out } = decoder('chunked');
      dec.push(b(`${size}\r\n${data}\r\n0\r\n\r\n`));
      expect(dec.done).toBe(true);
      expect(out()).toBe(data);
    }
  });

  it('skips trailers and ends after the blank line', () => {
    const enc = chunked(parts, { trailers: 'x-checksum: abc\r\nx-other: 1\r\n' });
    const { dec, out } = decoder('chunked');
    expect(dec.push(Buffer.concat([enc, b('NEXT')]))).toBe(enc.length);
    expect(dec.done).toBe(true);
    expect(out()).toBe(plain);
  });

  it('is not done while the trailer section is incomplete', () => {
    const { dec } = decoder('chunked');
    dec.push(b('3\r\nabc\r\n0\r\nx-t: 1\r\n'));
    expect(dec.done).toBe(false);
    expect(dec.endOfInput()).toBe(false);
    dec.push(b('\r\n'));
    expect(dec.done).toBe(true);
    expect(dec.endOfInput()).toBe(true);
  });

  it('decodes when split at every byte position (two pieces)', () => {
    const enc = chunked(parts, { ext: ';e=1', trailers: 't: v\r\n' });
    for (let i = 0; i <= enc.length; i++) {
      const { dec, out } = decoder('chunked');
      expect(feed(dec, enc, [i])).toBe(enc.length);
      expect(dec.done).toBe(true);
      expect(out()).toBe(plain);
    }
  });

  it('decodes when split at every pair of positions (three pieces)', () => {
    const enc = chunked(['ab', 'cde', ''.padEnd(17, 'q')]);
    const want = 'abcde' + 'q'.repeat(17);
    for (let i = 0; i <= enc.length; i++) {
      for (let j = i; j <= enc.length; j++) {
        const { dec, out } = decoder('chunked');
        expect(feed(dec, enc, [i, j])).toBe(enc.length);
        expect(dec.done).toBe(true);
        expect(out()).toBe(want);
      }
    }
  });

  it('decodes when fed byte by byte', () => {
    const enc = chunked(parts, { ext: ';a=b', trailers: 'x: y\r\n' });
    const { dec, out } = decoder('chunked');
    let used = 0;
    for (let i = 0; i < enc.length; i++) {
      expect(dec.done).toBe(false);
      used += dec.push(enc.subarray(i, i + 1));
    }
    expect(used).toBe(enc.length);
    expect(dec.done).toBe(true);
    expect(out()).toBe(plain);
  });

  it('decodes in random splits (with the next message appended)', () => {
    const rand = seededRandom(42); // reproducible random splits
    for (let round = 0; round < 300; round++) {
      const n = 1 + Math.floor(rand() * 6);
      const ps: string[] = [];
      for (let k = 0; k < n; k++) {
        let p = '';
        const len = Math.floor(rand() * 40);
        for (let c = 0; c < len; c++) p += String.fromCharCode(Math.floor(rand() * 256));
        ps.push(p);
      }
      const enc = chunked(
        ps.filter((p) => p.length > 0),
        {
          ext: rand() < 0.5 ? '' : ';x=y',
          trailers: rand() < 0.5 ? '' : 'trailer: 1\r\n',
        },
      );
      const tail = b('GET / HTTP/1.1\r\n\r\n');
      const all = Buffer.concat([enc, tail]);
      const cuts: number[] = [];
      let at = 0;
      while (at < all.length) {
        at += 1 + Math.floor(rand() * 9);
        cuts.push(Math.min(at, all.length));
      }
      const { dec, out } = decoder('chunked');
      expect(feed(dec, all, cuts)).toBe(enc.length);
      expect(dec.done).toBe(true);
      expect(out()).toBe(ps.join(''));
    }
  });

  it('decodes binary data that contains CR, LF and chunk-like bytes', () => {
    const data = Buffer.from([13, 10, 48, 13, 10, 13, 10, 0, 255, 10]);
    const enc = Buffer.concat([...chunkFrame(data), LAST_CHUNK]);
    for (let i = 0; i <= enc.length; i++) {
      const got: Buffer[] = [];
      const dec = new BodyDecoder('chunked', (c) => got.push(Buffer.from(c)));
      feed(dec, enc, [i]);
      expect(dec.done).toBe(true);
      expect(Buffer.concat(got).equals(data)).toBe(true);
    }
  });

  it.each([
    ['a non-hex size', 'zz\r\nab\r\n0\r\n\r\n'],
    ['an empty size', '\r\nab\r\n0\r\n\r\n'],
    ['a negative size', '-1\r\nab\r\n0\r\n\r\n'],
    ['a size with a prefix', '0x2\r\nab\r\n0\r\n\r\n'],
    ['an oversized size', '1234567890abc\r\nab\r\n0\r\n\r\n'],
  ])('rejects %s', (_what, text) => {
    const { dec } = decoder('chunked');
    expect(() => dec.push(b(text))).toThrow(FramingError);
  });

  it('rejects chunk data not followed by CRLF', () => {
    expect(() => decoder('chunked').dec.push(b('2\r\nabc\r\n0\r\n\r\n'))).toThrow(FramingError);
    expect(() => decoder('chunked').dec.push(b('2\r\nab\rX0\r\n\r\n'))).toThrow(FramingError);
    expect(() => decoder('chunked').dec.push(b('2\r\nab\n0\r\n\r\n'))).toThrow(FramingError);
  });

  it('rejects a missing CRLF after chunk data even when split between the CR and LF', () => {
    const { dec } = decoder('chunked');
    dec.push(b('2\r\nab\r'));
    expect(() => dec.push(b('X'))).toThrow(FramingError);
  });

  it('rejects a bare LF ending a size line', () => {
    expect(() => decoder('chunked').dec.push(b('2\nab\r\n0\r\n\r\n'))).toThrow(FramingError);
  });

  it('rejects an endless size line', () => {
    const { dec } = decoder('chunked');
    expect(() => {
      for (let i = 0; i < 10; i++) dec.push(b('1'.repeat(1000)));
    }).toThrow(FramingError);
  });

  it('reports the end of input mid-body as invalid', () => {
    const { dec } = decoder('chunked');
    dec.push(b('5\r\nab'));
    expect(dec.endOfInput()).toBe(false);
  });
});

describe('chunkFrame', () => {
  it('frames one chunk that the decoder reads back', () => {
    const data = b('x'.repeat(300));
    const frame = Buffer.concat(chunkFrame(data));
    expect(frame.toString('latin1', 0, 5)).toBe('12c\r\n');
    expect(frame.subarray(-2).equals(CRLF)).toBe(true);
    const { dec, out } = decoder('chunked');
    dec.push(Buffer.concat([frame, LAST_CHUNK]));
    expect(dec.done).toBe(true);
    expect(out()).toBe(data.toString('latin1'));
  });
});

// parseHead checks and splits the field lines in one pass; parseHeadCarefully checks every line,
// then splits them. Both must take and refuse the same heads, with the same result (and the same
// complaint).
describe('parseHead fast path', () => {
  const outcome = (f: () => unknown) => {
    try {
      return { ok: f() };
    } catch (e) {
      return { error: e instanceof FramingError ? `FramingError: ${e.message}` : String(e) };
    }
  };

  it('agrees with the careful parser on random heads with random faults', () => {
    const rand = seededRandom(9);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const names = ['Host', 'content-length', 'X-Custom_1', 'Authorization', 'te', 'a'];
    const values = ['', ' 12 ', 'Bearer ip-abc', 'text/event-stream', '\tx\t', 'caf\xe9', 'a, b'];
    const faults = ['\x00', '\x7f', '\r', '\n', ' ', '"', '\x1f', '\xff', ':', '\t', '(', '\r\n'];
    let fast = 0;
    for (let n = 0; n < 4000; n++) {
      const lines = ['POST /v1/chat/completions HTTP/1.1'];
      const count = Math.floor(rand() * 5);
      for (let i = 0; i < count; i++) lines.push(`${pick(names)}:${pick(values)}`);
      let text = lines.join('\r\n');
      if (n % 2 === 1) {
        const at = Math.floor(rand() * (text.length + 1));
        text = text.slice(0, at) + pick(faults) + text.slice(at);
      }
      const buf = Buffer.from(text + '\r\n\r\nbody', 'latin1');
      const a = outcome(() => parseHead(buf, 64 * 1024));
      const b = outcome(() => parseHeadCarefully(buf, 64 * 1024));
      expect(a, JSON.stringify(text)).toEqual(b);
      if ('ok' in a) fast++;
    }
    expect(fast).toBeGreaterThan(2000); // both outcomes are exercised
  });
});
