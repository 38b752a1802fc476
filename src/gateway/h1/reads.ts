// How the gateway's raw sockets read, both ways (clients in, engines out): as `onread` sockets,
// every read landing in one shared buffer and reaching its parser as its own copy of the bytes —
// no buffer allocated by the stream per read, no stream push, no 'data' event.
import { Buffer } from 'node:buffer';

/** The buffer every raw socket reads into: a read is handled before the next one lands. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** node:net's `onread` option. */
export interface SharedReads {
  buffer: Uint8Array;
  callback: (n: number, buf: Uint8Array) => boolean;
}

/** `onread` options that hand each read to `onData`, copied out of the shared buffer. */
export function sharedReads(onData: (d: Buffer) => void): SharedReads {
  return {
    buffer: READ_BUFFER,
    callback: (n, buf) => {
      const d = Buffer.allocUnsafe(n);
      d.set(buf.subarray(0, n));
      onData(d);
      return true;
    },
  };
}
