// HTTP/1.1 message framing for the gateway's raw-socket data plane (RFC 9112): finding and parsing
// a message head, and decoding a body framed by Content-Length, chunked transfer coding, or the
// connection's close. Deliberately strict and small: the server side hands anything it does not
// accept here to node:http (whose parser is complete), and the client side only ever talks to
// engines the platform started.
import { Buffer } from 'node:buffer';

const CRLF2 = Buffer.from('\r\n\r\n');

/** Header field name characters: RFC 9110 tokens (by char code). */
const TOKEN_CHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN_CHAR[c.charCodeAt(0)] = 1;
}

export class FramingError extends Error {}

/**
 * Field names the gateway and engines send all the time, by length. A name found here is used as
 * the constant (lowercase, already interned) instead of a lowercased copy: no new string, no
 * string-table lookup when it keys the headers object.
 */
const KNOWN_NAMES: string[][] = [];
for (const n of [
  'host',
  'date',
  'accept',
  'server',
  'upgrade',
  'expect',
  'connection',
  'keep-alive',
  'user-agent',
  'traceparent',
  'tracestate',
  'content-type',
  'x-request-id',
  'x-session-id',
  'authorization',
  'cache-control',
  'content-length',
  'accept-encoding',
  'transfer-encoding',
  'x-inferplane-debug',
]) {
  (KNOWN_NAMES[n.length] ??= []).push(n);
}

/** The known lowercase name equal (ignoring ASCII case) to text[start, end), or undefined. */
function knownName(text: string, start: number, end: number): string | undefined {
  const candidates = KNOWN_NAMES[end - start];
  if (candidates === undefined) return undefined;
  next: for (const name of candidates) {
    // Token characters: `| 0x20` folds A-Z onto a-z and maps no other token character onto a
    // character that occurs in a known name (lowercase letters, digits, '-').
    for (let k = 0; k < name.length; k++) {
      if ((text.charCodeAt(start + k) | 0x20) !== name.charCodeAt(k)) continue next;
    }
    return name;
  }
  return undefined;
}

/**
 * A message's header fields: lowercased names, each with its value (a repeated field's values
 * joined with ", ", RFC 9110 §5.3), in the order the names first appeared. Two arrays scanned
 * by name, not an object keyed by them: a head has a handful of fields, names the parser knows
 * are the same interned strings callers ask for (one pointer compare each), and an object with
 * arbitrary keys is a dictionary-mode object whose every store and load is a hash-table probe
 * through V8's generic keyed path (~9 stores and as many loads per head).
 */
export class Fields {
  private readonly names: string[] = [];
  private readonly values: string[] = [];
  /**
   * Name → position, once there are more than SCAN_FIELDS names: a head of 64 KiB can carry
   * thousands of fields, and scanning them for every one added would be quadratic.
   */
  private index: Map<string, number> | undefined;

  /** The value of the field named `name` (lowercase), or undefined. */
  get(name: string): string | undefined {
    const i = this.find(name);
    // Not `values[-1]`: a negative index is a named-property lookup ("-1"), which V8 resolves
    // through its megamorphic keyed load and then the runtime (~700 instructions per miss).
    return i < 0 ? undefined : this.values[i];
  }

  /** Adds a field (a lowercase name); a name seen before gets `, value` appended. */
  add(name: string, value: string): void {
    const i = this.find(name);
    if (i >= 0) {
      this.values[i] = `${this.values[i]!}, ${value}`;
      return;
    }
    const names = this.names;
    names.push(name);
    this.values.push(value);
    if (this.index !== undefined) this.index.set(name, names.length - 1);
    else if (names.length > SCAN_FIELDS) {
      this.index = new Map();
      for (let k = 0; k < names.length; k++) this.index.set(names[k]!, k);
    }
  }

  private find(name: string): number {
    if (this.index !== undefined) return this.index.get(name) ?? -1;
    const names = this.names;
    for (let i = 0; i < names.length; i++) if (names[i] === name) return i;
    return -1;
  }

  /** How many distinct names. */
  get size(): number {
    return this.names.length;
  }

  /** The fields as a plain object (null prototype), in order. */
  toRecord(): Record<string, string> {
    const out = Object.create(null) as Record<string, string>;
    for (let i = 0; i < this.names.length; i++) out[this.names[i]!] = this.values[i]!;
    return out;
  }
}

/** Up to this many names, Fields finds a name by scanning (see Fields.index). */
const SCAN_FIELDS = 16;

export interface Head {
  /** The start line (request line or status line). */
  line: string;
  /** Lowercased names; repeated fields joined with ", ". */
  headers: Fields;
  /** How many header fields named each repeatable-but-must-not-repeat field (content-length). */
  contentLengths: number;
  /** Bytes of the head, including the blank line. */
  size: number;
}

/**
 * Parses the head at the start of `buf`: undefined while it is incomplete, a FramingError when it
 * is malformed or larger than `maxBytes`. Checks and splits the field lines in one pass over the
 * characters (parseHeadCarefully is the two-pass reference it is tested against).
 */
export function parseHead(buf: Buffer, maxBytes: number): Head | undefined {
  const text = headText(buf, maxBytes);
  if (text === undefined) return undefined;
  return parseCheckedFields(text, buf);
}

/**
 * parseHead in two passes: every field line checked (checkFields), then split (parseFields). The
 * reference parseHead's one pass is tested against.
 */
export function parseHeadCarefully(buf: Buffer, maxBytes: number): Head | undefined {
  const text = headText(buf, maxBytes);
  if (text === undefined) return undefined;
  checkFields(text);
  return parseFields(text);
}

/** The head before its blank line (latin1), undefined while incomplete; too large: FramingError. */
function headText(buf: Buffer, maxBytes: number): string | undefined {
  const end = buf.indexOf(CRLF2);
  if (end < 0) {
    if (buf.length > maxBytes) throw new FramingError(`message head larger than ${maxBytes} bytes`);
    return undefined;
  }
  if (end + 4 > maxBytes) throw new FramingError(`message head larger than ${maxBytes} bytes`);
  return buf.toString('latin1', 0, end);
}

/** Throws a FramingError naming the first malformed field line (name, ':' or value). */
function checkFields(text: string): void {
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  // Per field line: name (token characters) ':' value (no controls but tab).
  while (eol < text.length) {
    const start = eol + 2;
    eol = text.indexOf('\r\n', start);
    if (eol < 0) eol = text.length;
    let i = start;
    for (; i < eol; i++) {
      const c = text.charCodeAt(i);
      if (c === 58) break; // ':'
      if (c > 127 || TOKEN_CHAR[c] === 0) throw new FramingError('malformed header name');
    }
    if (i === start || i === eol) throw new FramingError('malformed header line');
    for (let j = i + 1; j < eol; j++) {
      const c = text.charCodeAt(j);
      if ((c < 32 && c !== 9) || c === 127) {
        throw new FramingError('invalid character in a header value');
      }
    }
  }
}

/**
 * checkFields and parseFields in one pass: per field line, the name's token characters up to ':',
 * then the value's characters up to CRLF, noting where its optional whitespace ends. The
 * characters are read as the bytes they were decoded from (`text` is `bytes` as Latin-1): a byte
 * load is a few instructions, a charCodeAt in a loop several times that.
 */
function parseCheckedFields(text: string, bytes: Uint8Array): Head {
  const headers = new Fields();
  let contentLengths = 0;
  const n = text.length;
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = n;
  const line = text.slice(0, eol);
  while (eol < n) {
    const start = eol + 2;
    let colon = start;
    let c = 0;
    for (; colon < n; colon++) {
      c = bytes[colon]!;
      if (c === 58 || c > 127 || TOKEN_CHAR[c] === 0) break;
    }
    if (c !== 58 || colon === n) {
      // The line ended (CRLF or the head's end) before any ':', or a name character is not a token one.
      const ended = colon === n || (c === 13 && colon + 1 < n && bytes[colon + 1] === 10);
      throw new FramingError(ended ? 'malformed header line' : 'malformed header name');
    }
    if (colon === start) throw new FramingError('malformed header line');
    let v0 = -1;
    let v1 = -1;
    let k = colon + 1;
    for (; k < n; k++) {
      c = bytes[k]!;
      if (c === 32 || c === 9) continue;
      if (c < 32 || c === 127) {
        if (c === 13 && k + 1 < n && bytes[k + 1] === 10) break;
        throw new FramingError('invalid character in a header value');
      }
      if (v0 < 0) v0 = k;
      v1 = k + 1;
    }
    eol = k;
    const lower = knownName(text, start, colon) ?? text.slice(start, colon).toLowerCase();
    const value = v0 < 0 ? '' : text.slice(v0, v1);
    if (lower === 'content-length') contentLengths++;
    headers.add(lower, value);
  }
  return { line, headers, contentLengths, size: n + 4 };
}

/** The start line and fields of a checked head: name ':' OWS value OWS per line. */
function parseFields(text: string): Head {
  const headers = new Fields();
  let contentLengths = 0;
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  const line = text.slice(0, eol);
  while (eol < text.length) {
    const start = eol + 2;
    eol = text.indexOf('\r\n', start);
    if (eol < 0) eol = text.length;
    const colon = text.indexOf(':', start);
    let v0 = colon + 1;
    let v1 = eol;
    while (v0 < v1 && (text.charCodeAt(v0) === 32 || text.charCodeAt(v0) === 9)) v0++;
    while (v1 > v0 && (text.charCodeAt(v1 - 1) === 32 || text.charCodeAt(v1 - 1) === 9)) v1--;
    const lower = knownName(text, start, colon) ?? text.slice(start, colon).toLowerCase();
    const value = text.slice(v0, v1);
    if (lower === 'content-length') contentLengths++;
    headers.add(lower, value);
  }
  return { line, headers, contentLengths, size: text.length + 4 };
}

/** Content-Length as a number: undefined when absent; a FramingError when invalid or repeated. */
export function contentLength(head: Head): number | undefined {
  const v = head.headers.get('content-length');
  if (v === undefined) return undefined;
  // 1 to 15 decimal digits, read here (a regular expression and Number() of a string cost more
  // than the value's few characters).
  let n = 0;
  const len = v.length;
  let ok = head.contentLengths === 1 && len >= 1 && len <= 15;
  for (let i = 0; ok && i < len; i++) {
    const d = v.charCodeAt(i) - 48;
    if (d < 0 || d > 9) ok = false;
    else n = n * 10 + d;
  }
  if (!ok) throw new FramingError('invalid Content-Length');
  return n;
}

/** Whether the transfer coding is exactly `chunked` (anything else is not supported here). */
export function isChunked(head: Head): boolean {
  const te = head.headers.get('transfer-encoding');
  if (te === undefined) return false;
  if (te.toLowerCase() !== 'chunked')
    throw new FramingError(`unsupported Transfer-Encoding: ${te}`);
  return true;
}

/** Whether a `Connection` header carries `token` (e.g. close, keep-alive). */
export function connectionHas(head: Head, token: string): boolean {
  const c = head.headers.get('connection');
  if (c === undefined) return false;
  if (c === token) return true; // the usual one, as the usual peer writes it
  // Each comma-separated element without its optional whitespace, compared ignoring ASCII case
  // (no split, trim or lowercased copies).
  const n = c.length;
  for (let start = 0; start <= n;) {
    let end = c.indexOf(',', start);
    if (end < 0) end = n;
    let a = start;
    let b = end;
    while (a < b && (c.charCodeAt(a) === 32 || c.charCodeAt(a) === 9)) a++;
    while (b > a && (c.charCodeAt(b - 1) === 32 || c.charCodeAt(b - 1) === 9)) b--;
    if (b - a === token.length) {
      let k = 0;
      for (; k < token.length; k++) {
        let x = c.charCodeAt(a + k);
        if (x >= 65 && x <= 90) x += 32;
        if (x !== token.charCodeAt(k)) break;
      }
      if (k === token.length) return true;
    }
    start = end + 1;
  }
  return false;
}

const enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailer,
  Done,
}

/**
 * Decodes one message body from successive buffers. `push` returns how many bytes of the buffer
 * belong to the body (the rest is the next message); decoded data goes to `onData`, and `done`
 * turns true at the body's end.
 */
export class BodyDecoder {
  done = false;
  private remaining: number;
  private state: Chunk = Chunk.Size;
  /** A partial chunk-size or trailer line. */
  private line = '';

  /**
   * @param length the Content-Length, 'chunked', or 'close' (until the connection ends)
   */
  constructor(
    private readonly length: number | 'chunked' | 'close',
    private readonly onData: (chunk: Buffer) => void,
  ) {
    this.remaining = typeof length === 'number' ? length : 0;
    if (length === 0) this.done = true;
  }

  push(buf: Buffer, start = 0): number {
    if (this.done) return 0;
    if (this.length === 'close') {
      if (start < buf.length) this.onData(start === 0 ? buf : buf.subarray(start));
      return buf.length - start;
    }
    if (this.length !== 'chunked') {
      const n = Math.min(this.remaining, buf.length - start);
      if (n > 0) {
        this.onData(start === 0 && n === buf.length ? buf : buf.subarray(start, start + n));
      }
      this.remaining -= n;
      if (this.remaining === 0) this.done = true;
      return n;
    }
    return this.pushChunked(buf, start) - start;
  }

  /** The connection ended: whether that is a valid end of this body. */
  endOfInput(): boolean {
    if (this.length === 'close') this.done = true;
    return this.done;
  }

  private pushChunked(buf: Buffer, start: number): number {
    let i = start;
    while (i < buf.length && !this.done) {
      switch (this.state) {
        case Chunk.Size:
        case Chunk.Trailer: {
          const nl = buf.indexOf(10, i);
          const endAt = nl < 0 ? buf.length : nl + 1;
          this.line += buf.toString('latin1', i, endAt);
          if (this.line.length > 4096) throw new FramingError('chunk header line too long');
          i = endAt;
          if (nl < 0) break;
          const l = this.line.endsWith('\r\n') ? this.line.slice(0, -2) : null;
          this.line = '';
          if (l === null) throw new FramingError('bare LF in chunked body');
          if (this.state === Chunk.Trailer) {
            if (l === '') this.state = Chunk.Done;
            break;
          }
          const semi = l.indexOf(';');
          const hex = (semi < 0 ? l : l.slice(0, semi)).trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw new FramingError('invalid chunk size');
          this.remaining = parseInt(hex, 16);
          this.state = this.remaining === 0 ? Chunk.Trailer : Chunk.Data;
          break;
        }
        case Chunk.Data: {
          const n = Math.min(this.remaining, buf.length - i);
          this.onData(buf.subarray(i, i + n));
          this.remaining -= n;
          i += n;
          if (this.remaining === 0) {
            this.state = Chunk.DataEnd;
            this.line = '';
          }
          break;
        }
        case Chunk.DataEnd: {
          // CRLF after the chunk's data, possibly split across buffers.
          const c = buf[i++]!;
          const want = this.line === '' ? 13 : 10;
          if (c !== want) throw new FramingError('missing CRLF after chunk data');
          if (want === 13) this.line = '\r';
          else {
            this.line = '';
            this.state = Chunk.Size;
          }
          break;
        }
        default:
          break;
      }
      if (this.state === Chunk.Done) this.done = true;
    }
    return i;
  }
}

/** Frames one chunk of a chunked body. */
export function chunkFrame(data: Buffer): Buffer[] {
  return [Buffer.from(`${data.length.toString(16)}\r\n`, 'latin1'), data, CRLF];
}
export const CRLF = Buffer.from('\r\n');
export const LAST_CHUNK = Buffer.from('0\r\n\r\n');

/** The reason phrases the gateway may send (the phrase is informative only). */
export const REASON: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  499: 'Client Closed Request',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};
