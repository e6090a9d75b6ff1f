/**
 * A data-plane worker: a thread that runs a {@linkcode Relay} on a socket loop of its own — a blocking
 * `epoll_wait` whose timeout is the next timer, over its guests' stream sockets, their host sockets and an
 * eventfd other threads write to wake it. Started and spoken to by `relay/front.ts` on the main thread,
 * which keeps the HTTP listeners (admin API, WebSocket) and forwards what concerns this worker's tenants.
 *
 * @module
 */
import { Relay } from "./relay/relay.ts";
import { jsonLogger } from "./relay/log.ts";
import { installLastResortGuards } from "./relay/last_resort.ts";
import { parseHostForward } from "./stack/config.ts";
import { holdRuntimeTurns, ownSocketLoop, runtimeTurnSoon } from "./host/epoll_loop.ts";
import { FrameRing } from "./common/frame_ring.ts";
import {
  type FrontCall,
  requestFrom,
  type SerializedResponse,
  serializeResponse,
  type WorkerInit,
  type WorkerMessage,
} from "./relay/worker_protocol.ts";

declare const self: {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: WorkerMessage): void;
};

let relay: Relay | null = null;
let ringBell: () => void = () => {};

async function init(m: WorkerInit): Promise<void> {
  const log = jsonLogger(m.logLevel);
  installLastResortGuards(log);
  const bell = new Int32Array(m.bell);
  const mail = new Int32Array(m.mail);
  ringBell = () => {
    Atomics.add(bell, 0, 1);
    Atomics.notify(bell, 0);
  };
  const r = new Relay({ ...m.options, log, parseForward: parseHostForward, ownedLoop: true });
  relay = r;
  const wakeFd = ownSocketLoop({
    nextDeadline: () => r.wheel.nextDeadline(),
    observe: (now) => r.wheel.observe(now),
    advance: (now) => r.wheel.advance(now),
  }, () => {
    // a message waits: the runtime delivers it only in a turn of its own
    if (Atomics.exchange(mail, 0, 0) !== 0) runtimeTurnSoon();
    r.serviceRings();
  });
  const release = holdRuntimeTurns();
  try {
    const urls = await r.start();
    self.postMessage({
      type: "ready",
      wakeFd,
      urls,
      forwards: r.forwards,
      flowLimit: r.flowLimit.max,
    });
  } catch (e) {
    self.postMessage({ type: "failed", error: (e as Error).message });
  } finally {
    release();
  }
}

async function call(c: FrontCall): Promise<unknown> {
  const r = relay!;
  switch (c.op) {
    case "admin":
      return serializeResponse(await r.handleAdmin(requestFrom(c.request)));
    case "wsAdmit": {
      const a = await r.admitWebSocket(requestFrom(c.request), c.listenHost);
      if (a instanceof Response) return { response: await serializeResponse(a) };
      const { protocol, framing, wispVersion, expiresAt } = a;
      return { tenant: a.tenant.id, protocol, framing, wispVersion, expiresAt };
    }
    case "wsOpen":
      return r.carryRing(
        c.tenant,
        { remote: c.remote, framing: c.framing, wispVersion: c.wispVersion },
        new FrameRing(c.toWorker),
        new FrameRing(c.toMain),
        ringBell,
      );
    case "wsAbandon":
      r.abandonWebSocket(c.tenant);
      return null;
    case "drain":
      return r.drain();
    case "stop":
      await r.stop();
      return null;
  }
}

self.onmessage = (e: MessageEvent) => {
  const m = e.data as WorkerInit | FrontCall;
  if (m.type === "init") {
    // a bad option throws before the loop exists: the front hears it at once, whatever the runtime does
    // with an escaped rejection (Bun's last-resort guard would swallow it and the front wait 15 s)
    init(m).catch((err) =>
      self.postMessage({ type: "failed", error: (err as Error)?.message ?? String(err) })
    );
    return;
  }
  // a call may wait on the runtime's own async work (crypto for tokens, timers in stop)
  const release = holdRuntimeTurns();
  call(m).then(
    (value) => self.postMessage({ type: "reply", id: m.id, value }),
    (err) => self.postMessage({ type: "reply", id: m.id, error: (err as Error)?.message ?? String(err) }),
  ).finally(release);
};

self.postMessage({ type: "loaded" });

export type { SerializedResponse };
