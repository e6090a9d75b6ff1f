/**
 * Runs inside a guest network namespace (`ip netns exec NS deno run -A tcp_tool.ts MODE …`) and prints
 * one JSON line with what it observed. Modes:
 *   send HOST PORT FILE        send FILE, half-close, print the peer's reply (a hash)
 *   listen PORT                accept one connection, read to EOF, print sha256 and byte count
 *   many HOST PORT N SIZE      N concurrent connections each send SIZE random bytes and verify the echo
 *   refused HOST PORT          connect to a closed port, print the error and the milliseconds it took
 *   halfclose HOST PORT        send a request, half-close, print the reply that arrives after EOF
 *   reset HOST PORT            read until the connection fails, print the error and bytes read
 *   cps HOST PORT SECONDS C    C workers connect and close in a loop for SECONDS; print connections/s
 *   rr HOST PORT N             N one-byte request/response round trips on one connection; print µs p50/p99
 *   dnsqps SERVER NAME SECONDS C   C sockets each keep one A query for NAME in flight; print answers/s
 */
import dgram from "node:dgram";
import { createHash } from "node:crypto";

const [mode, ...args] = Deno.args;

async function readAll(conn: Deno.Conn, onChunk: (b: Uint8Array) => void): Promise<number> {
  const buf = new Uint8Array(256 * 1024);
  let total = 0;
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return total;
    total += n;
    onChunk(buf.subarray(0, n));
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

function out(x: unknown): void {
  console.log(JSON.stringify(x));
}

switch (mode) {
  case "send": {
    const [host, port, file] = args;
    const conn = await Deno.connect({ hostname: host, port: Number(port) });
    const f = await Deno.open(file);
    const t0 = performance.now();
    const buf = new Uint8Array(1024 * 1024);
    let sent = 0;
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      await writeAll(conn, buf.subarray(0, n));
      sent += n;
    }
    f.close();
    await conn.closeWrite();
    let reply = "";
    await readAll(conn, (b) => (reply += new TextDecoder().decode(b)));
    out({ sent, reply: reply.trim(), ms: performance.now() - t0 });
    break;
  }
  case "listen": {
    const l = Deno.listen({ port: Number(args[0]) });
    out({ listening: Number(args[0]) });
    const conn = await l.accept();
    const h = createHash("sha256");
    const t0 = performance.now();
    const bytes = await readAll(conn, (b) => h.update(b));
    out({ bytes, sha256: h.digest("hex"), ms: performance.now() - t0 });
    conn.close();
    l.close();
    break;
  }
  case "many": {
    const [host, port, n, size] = args;
    let ok = 0;
    const errors: string[] = [];
    await Promise.all(Array.from({ length: Number(n) }, async (_, i) => {
      try {
        const data = new Uint8Array(Number(size));
        for (let k = 0; k < data.length; k += 65536) crypto.getRandomValues(data.subarray(k, k + 65536));
        const conn = await Deno.connect({ hostname: host, port: Number(port) });
        const got = new Uint8Array(data.length);
        let filled = 0;
        const reading = readAll(conn, (b) => {
          got.set(b.subarray(0, Math.min(b.length, got.length - filled)), filled);
          filled += b.length;
        });
        await writeAll(conn, data);
        await conn.closeWrite();
        await reading;
        conn.close();
        if (filled === data.length && got.every((v, j) => v === data[j])) ok++;
        else errors.push(`conn ${i}: ${filled} bytes back`);
      } catch (e) {
        errors.push(`conn ${i}: ${e}`);
      }
    }));
    out({ ok, errors: errors.slice(0, 5) });
    break;
  }
  case "refused": {
    const t0 = performance.now();
    try {
      const c = await Deno.connect({ hostname: args[0], port: Number(args[1]) });
      c.close();
      out({ error: null, ms: performance.now() - t0 });
    } catch (e) {
      out({ error: (e as Error).name, ms: performance.now() - t0 });
    }
    break;
  }
  case "halfclose": {
    const conn = await Deno.connect({ hostname: args[0], port: Number(args[1]) });
    await writeAll(conn, new TextEncoder().encode("request-before-eof"));
    await conn.closeWrite();
    let reply = "";
    await readAll(conn, (b) => (reply += new TextDecoder().decode(b)));
    out({ reply });
    conn.close();
    break;
  }
  case "reset": {
    const conn = await Deno.connect({ hostname: args[0], port: Number(args[1]) });
    let bytes = 0;
    try {
      await readAll(conn, (b) => (bytes += b.length));
      out({ error: null, bytes });
    } catch (e) {
      out({ error: (e as Error).name, bytes });
    }
    break;
  }
  case "cps": {
    const [host, port, seconds, workers] = args;
    const until = performance.now() + Number(seconds) * 1000;
    let done = 0, failed = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: Number(workers) }, async () => {
      const one = new Uint8Array(1);
      while (performance.now() < until) {
        try {
          const c = await Deno.connect({ hostname: host, port: Number(port) });
          await c.closeWrite();
          await c.read(one); // the server closes after our FIN: a full open/close cycle
          c.close();
          done++;
        } catch {
          failed++;
        }
      }
    }));
    out({ connections: done, failed, perSecond: done / ((performance.now() - t0) / 1000) });
    break;
  }
  case "rr": {
    const [host, port, n] = args;
    const c = await Deno.connect({ hostname: host, port: Number(port) });
    c.setNoDelay(true);
    const b = new Uint8Array(1);
    const samples: number[] = [];
    for (let i = 0; i < Number(n); i++) {
      const t = performance.now();
      await c.write(b);
      let got = 0;
      while (got < 1) got += (await c.read(b)) ?? 1;
      samples.push((performance.now() - t) * 1000);
    }
    c.close();
    samples.sort((a, b) => a - b);
    const q = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))];
    out({ n: samples.length, p50us: q(0.5), p99us: q(0.99) });
    break;
  }
  case "dnsqps": {
    const [server, name, seconds, conc] = args;
    const labels = name.split(".");
    const q = new Uint8Array(12 + labels.reduce((n, l) => n + l.length + 1, 0) + 1 + 4);
    q.set([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    let p = 12;
    for (const l of labels) {
      q[p++] = l.length;
      for (const ch of l) q[p++] = ch.charCodeAt(0);
    }
    q.set([0, 0, 1, 0, 1], p);
    let answers = 0;
    const until = performance.now() + Number(seconds) * 1000;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: Number(conc) }, (_, i) =>
      new Promise<void>((resolve) => {
        const s = dgram.createSocket("udp4");
        let id = i * 1000;
        const send = () => {
          if (performance.now() >= until) {
            s.close();
            return resolve();
          }
          id = (id + 1) & 0xffff;
          q[0] = id >> 8;
          q[1] = id & 0xff;
          s.send(q, 53, server);
        };
        s.on("message", () => {
          answers++;
          send();
        });
        // a lost query is re-sent after a short wait rather than stalling the loop
        const iv = setInterval(send, 200);
        s.on("close", () => clearInterval(iv));
        send();
      })));
    out({ answers, perSecond: answers / ((performance.now() - t0) / 1000) });
    break;
  }
  default:
    console.error(`unknown mode ${mode}`);
    Deno.exit(2);
}
