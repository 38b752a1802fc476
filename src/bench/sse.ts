/**
 * Server-sent events parser working on Buffers, robust to arbitrary chunk boundaries (an event, a
 * line, even a multi-byte UTF-8 character may be split across network reads). Only `data:` fields
 * matter for OpenAI streams; comments and other fields are skipped.
 */

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;
const DATA = Buffer.from('data');

export class SseParser {
  /** Bytes of an incomplete line carried over from the previous push. */
  private rest: Buffer | null = null;
  /** Data lines of the event being read. */
  private data: string | null = null;

  /** @param onEvent called with the data of each complete event (lines joined with \n). */
  constructor(private readonly onEvent: (data: string) => void) {}

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = null;
    }
    let start = 0;
    const n = buf.length;
    while (start < n) {
      const nl = buf.indexOf(LF, start);
      if (nl < 0) {
        this.rest = Buffer.from(buf.subarray(start));
        return;
      }
      let end = nl;
      if (end > start && buf[end - 1] === CR) end--;
      this.line(buf, start, end);
      start = nl + 1;
    }
  }

  /** Ends the stream: a pending event without its blank line is still delivered. */
  end(): void {
    if (this.rest !== null && this.rest.length > 0) {
      const r = this.rest;
      this.rest = null;
      let e = r.length;
      if (r[e - 1] === CR) e--;
      this.line(r, 0, e);
    }
    this.dispatch();
  }

  private line(buf: Buffer, start: number, end: number): void {
    if (start === end) {
      this.dispatch();
      return;
    }
    if (buf[start] === COLON) return; // comment
    // Field name up to ':' (or the whole line).
    let colon = buf.indexOf(COLON, start);
    if (colon < 0 || colon > end) colon = end;
    if (colon - start !== 4 || buf.compare(DATA, 0, 4, start, colon) !== 0) return;
    let v = colon + 1;
    if (v < end && buf[v] === SPACE) v++;
    const value = v >= end ? '' : buf.toString('utf8', v, end);
    this.data = this.data === null ? value : this.data + '\n' + value;
  }

  private dispatch(): void {
    if (this.data === null) return;
    const d = this.data;
    this.data = null;
    this.onEvent(d);
  }
}
