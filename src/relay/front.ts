/**
 * The relay's control plane when its data plane runs in workers: the main thread keeps the HTTP listeners
 * (admin API, WebSocket) on the runtime, and each data-plane worker (`src/data_plane_worker.ts`) runs a
 * {@linkcode Relay} on a socket loop of its own. An admin request is forwarded to the worker as data and
 * its answer returned; a WebSocket is admitted by the worker, upgraded here, and its frames cross in two
 * {@linkcode FrameRing}s — into the worker with a write to its eventfd, back with a bell (an `Atomics`
 * notify) that this thread awaits with `Atomics.waitAsync`.
 *
 * @module
 */
import type { Logger } from "../common/logger.ts";
import { FrameRing, type RingCursor } from "../common/frame_ring.ts";
import type { HostForwardConfig } from "../stack/config.ts";
import { libc } from "../host/libc.ts";
import { platform } from "../platform/current.ts";
import type { HttpServer } from "../platform/platform.ts";
import { json } from "./admin.ts";
import { endAtExpiry } from "./admission.ts";
import { listenHttp } from "./http_listen.ts";
import type { LogLevel } from "./log.ts";
import type { RelayOptions } from "./relay.ts";
import { QEMU_MAX_FRAME } from "../transport/stream.ts";
import { type MessageFraming, messageFraming } from "../transport/websocket_framing.ts";
import { newSharedRelayBuffers, workerOf } from "./shared_state.ts";
import { mergeMetrics } from "./metrics.ts";
import {
  type FrontCall,
  responseFrom,
  type SerializedResponse,
  serializeRequest,
  type WorkerInit,
  type WorkerMessage,
  type WorkerRelayOptions,
  type WsAdmitReply,
  type WsAdmitted,
} from "./worker_protocol.ts";

/** Bytes each way per WebSocket guest: room for a few of the largest frames and the guest link's backlog. */
const RING_BYTES = 256 * 1024;
/** How often a WebSocket with bytes buffered is checked for having drained (it has no drain event). */
const DRAIN_POLL_MS = 2;
/**
 * Wisp packets that may wait on this thread for room in a ring: a stream's credit is 128 packets of up to
 * 64 KiB (8 MiB), and a client may spend several streams' at once; beyond this it ignores flow control.
 */
const WAITING_LIMIT = 32 * 1024 * 1024;
/** How long waiting frames sit before the main thread looks at their ring again without a bell. */
const WAITING_RETRY_MS = 50;
/** Bytes of a frame guest's frames that may wait for room in its ring (past it they are dropped). */
const FRAME_WAITING_LIMIT = 1024 * 1024;
/** How long a worker may take to start or stop. */
const WORKER_CALL_MS = 15_000;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type CallBody = DistributiveOmit<FrontCall, "type" | "id">;

export interface FrontOptions extends RelayOptions {
  /** The worker's module (`src/data_plane_worker.ts`). */
  workerUrl: URL;
  /**
   * Data-plane workers. Multi-tenant mode spreads tenants over them by id; single-user mode runs one (its
   * port forwards reach the most recently connected guest, which must share their loop).
   */
  workers: number;
  logLevel: LogLevel;
}

/** One data-plane worker, as the main thread sees it. */
class DataPlaneWorker {
  readonly worker: Worker;
  readonly bell = new Int32Array(new SharedArrayBuffer(4));
  readonly #mail = new Int32Array(new SharedArrayBuffer(4));
  wakeFd = -1;
  #calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextCall = 1;
  #ready: Promise<Extract<WorkerMessage, { type: "ready" }>>;
  /** WebSocket guests of this worker, drained when it rings. */
  readonly bridges = new Set<WsBridge>();
  #one = new BigUint64Array([1n]);
  stopped = false;

  constructor(url: URL, index: number, options: WorkerRelayOptions, logLevel: LogLevel, log: Logger) {
    this.worker = new Worker(url.href, { type: "module", name: `slirp-data-plane-${index}` });
    let settle!: {
      resolve: (m: Extract<WorkerMessage, { type: "ready" }>) => void;
      reject: (e: Error) => void;
    };
    this.#ready = new Promise((resolve, reject) => (settle = { resolve, reject }));
    this.worker.onmessage = (e: MessageEvent<WorkerMessage>) => {
      const m = e.data;
      // a message posted before the worker's module finished loading may be lost (Bun): wait for it
      if (m.type === "loaded") this.worker.postMessage(this.#init);
      else if (m.type === "ready") {
        this.wakeFd = m.wakeFd;
        settle.resolve(m);
      } else if (m.type === "failed") settle.reject(new Error(m.error));
      else {
        const c = this.#calls.get(m.id);
        this.#calls.delete(m.id);
        if (m.error !== undefined) c?.reject(new Error(m.error));
        else c?.resolve(m.value);
      }
    };
    this.worker.onerror = (e: ErrorEvent) => {
      // a throw that escaped the worker's own guards: its tenants are gone, the process stays
      e.preventDefault();
      log("error", "data-plane worker failed", { worker: index, error: e.message });
      settle.reject(new Error(`data-plane worker ${index} failed: ${e.message}`));
      for (const c of this.#calls.values()) c.reject(new Error("data-plane worker failed"));
      this.#calls.clear();
    };
    this.#init = {
      type: "init",
      index,
      options,
      logLevel,
      bell: this.bell.buffer as SharedArrayBuffer,
      mail: this.#mail.buffer as SharedArrayBuffer,
    };
  }

  #init: WorkerInit;

  ready(): Promise<Extract<WorkerMessage, { type: "ready" }>> {
    return withTimeout(this.#ready, "start");
  }

  call<T>(body: CallBody): Promise<T> {
    const id = this.#nextCall++;
    return new Promise<T>((resolve, reject) => {
      this.#calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ type: "call", id, ...body });
      Atomics.store(this.#mail, 0, 1);
      this.wake();
    });
  }

  /** Writes the worker's eventfd: it may be asleep in epoll_wait, where messages wait for it. */
  wake(): void {
    if (this.wakeFd >= 0 && !this.stopped) libc().write(this.wakeFd, this.#one, 8);
  }

  /** Drains this worker's rings toward the guests each time it rings, until stopped. */
  async listen(): Promise<void> {
    let seen = Atomics.load(this.bell, 0);
    while (!this.stopped) {
      const w = Atomics.waitAsync(this.bell, 0, seen);
      if (w.async) await w.value;
      seen = Atomics.load(this.bell, 0);
      for (const b of this.bridges) {
        b.toGuest();
        b.pushWaiting();
      }
    }
  }

  stopListening(): void {
    this.stopped = true;
    Atomics.add(this.bell, 0, 1);
    Atomics.notify(this.bell, 0);
  }
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`data-plane worker did not ${what} in time`)), WORKER_CALL_MS);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** One WebSocket guest of a worker: the socket here, its frames in two rings. */
class WsBridge {
  readonly toWorker = new FrameRing(RING_BYTES);
  readonly toMain = new FrameRing(RING_BYTES);
  #cursor: RingCursor;
  #bytes: Uint8Array;
  #drainTimer: ReturnType<typeof setTimeout> | undefined;
  #wakeWhenDrained = false;
  /** The worker took the guest (until then a close from its side is a refusal, answered by the opener). */
  accepted = false;

  constructor(
    readonly ws: WebSocket,
    readonly worker: DataPlaneWorker,
    readonly framing: MessageFraming,
    log: Logger,
    tenant: string,
    /** Wisp packets are a stream's bytes: none may be lost, so a full ring makes them wait here. */
    lossless = false,
  ) {
    this.#cursor = this.toMain.cursor();
    this.#bytes = new Uint8Array(this.toMain.sab);
    const push = (m: Uint8Array) => this.#push(m, ws, lossless);
    ws.onmessage = (e) => {
      if (typeof e.data === "string") return;
      const broken = framing.fromGuest(new Uint8Array(e.data as ArrayBuffer), push);
      if (broken) {
        log("warn", `WebSocket guest closed: ${broken}`, { tenant });
        ws.close(1009, "frame size out of range");
        return;
      }
      if (this.toWorker.ring()) worker.wake();
    };
    ws.onclose = () => this.#closed();
    ws.onerror = () => {};
  }

  #waiting: Uint8Array[] = [];
  #waitingBytes = 0;
  #retry: ReturnType<typeof setTimeout> | undefined;

  /**
   * Into the ring toward the worker, or, while it is full, into a bounded wait here that the worker's bell
   * empties (it rings once it took frames and saw the wish for room). A WebSocket cannot be paused, so past
   * the wait a frame guest's frame is dropped and counted, as on a full NIC ring; Wisp packets are a stream's
   * bytes, so a Wisp client that far past its credit is disconnected instead.
   */
  #push(m: Uint8Array, ws: WebSocket, lossless: boolean): void {
    if (this.#waiting.length === 0 && this.toWorker.push(m)) return;
    const limit = lossless ? WAITING_LIMIT : FRAME_WAITING_LIMIT;
    if (this.#waitingBytes + m.length > limit) {
      if (lossless) ws.close(1008, "the client ignores Wisp flow control");
      else this.toWorker.countDrop();
      return;
    }
    // a copy: the framing may hand out views into a buffer it reuses
    this.#waiting.push(m.slice());
    this.#waitingBytes += m.length;
    if (this.#waiting.length === 1) this.pushWaiting();
  }

  /** Moves waiting frames or packets into the ring as the worker makes room (on its bell). */
  pushWaiting(): void {
    let moved = this.#moveWaiting();
    if (this.#waiting.length > 0) {
      this.toWorker.wantRoom();
      // the worker may have emptied the ring before it saw the wish: look once more
      moved = this.#moveWaiting() || moved;
    }
    if (moved && this.toWorker.ring()) this.worker.wake();
    // a safety net only: the worker's bell is what moves the wait on
    if (this.#waiting.length > 0) {
      this.#retry ??= setTimeout(() => {
        this.#retry = undefined;
        this.pushWaiting();
      }, WAITING_RETRY_MS);
    }
  }

  #moveWaiting(): boolean {
    let moved = false;
    while (this.#waiting.length > 0 && this.toWorker.push(this.#waiting[0])) {
      this.#waitingBytes -= this.#waiting.shift()!.length;
      moved = true;
    }
    return moved;
  }

  /** Frames the worker queued toward the guest, onto the WebSocket. */
  toGuest(): void {
    const r = this.toMain;
    r.answer();
    const base = r.dataOffset;
    let n = 0;
    while (r.next(this.#cursor)) {
      const off = base + this.#cursor.off;
      if (this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(this.framing.toGuest(this.#bytes.subarray(off, off + this.#cursor.len)));
      }
      n++;
    }
    // the bytes sent count in the WebSocket's buffer before they leave the ring: the worker never sees them
    // in neither place
    this.toMain.farBacklog = this.ws.bufferedAmount;
    if (n > 0) r.release(this.#cursor);
    if (r.takeWantRoom()) this.#wakeWhenDrained = true;
    this.#watchDrain();
    // the worker let the guest go (after a refusal the open handler closes with its own code)
    if (r.closed && this.accepted) this.ws.close(1000);
  }

  #watchDrain(): void {
    this.toMain.farBacklog = this.ws.bufferedAmount;
    if (this.ws.bufferedAmount === 0) {
      if (this.#wakeWhenDrained) {
        this.#wakeWhenDrained = false;
        this.worker.wake();
      }
      return;
    }
    if (this.#drainTimer !== undefined) return;
    this.#drainTimer = setTimeout(() => {
      this.#drainTimer = undefined;
      this.#watchDrain();
    }, DRAIN_POLL_MS);
  }

  #closed(): void {
    clearTimeout(this.#drainTimer);
    clearTimeout(this.#retry);
    this.worker.bridges.delete(this);
    this.toWorker.close();
    this.worker.wake();
  }
}

/**
 * The relay as the main thread runs it with data-plane workers: the same surface the CLI uses of
 * {@linkcode Relay} (start, stop, the addresses it serves).
 */
export class RelayFront {
  #opts: FrontOptions;
  #workers: DataPlaneWorker[] = [];
  #servers: HttpServer[] = [];
  #urls: string[] = [];
  #wsUrls: string[] = [];
  #adminUrl: string | null = null;
  #forwards: HostForwardConfig[] = [];
  #flowLimit = 0;
  #stopping = false;

  constructor(opts: FrontOptions) {
    this.#opts = opts;
  }

  get urls(): string[] {
    return this.#urls;
  }
  get wsUrls(): string[] {
    return this.#wsUrls;
  }
  get adminUrl(): string | null {
    return this.#adminUrl;
  }
  get forwards(): HostForwardConfig[] {
    return this.#forwards;
  }
  get maxTenants(): number {
    return this.#opts.maxTenants ?? 4096;
  }
  get flowLimit(): { max: number } {
    return { max: this.#flowLimit };
  }

  /** Binds the HTTP listeners, starts the worker (which binds the stream listeners and tenants). */
  async start(): Promise<string[]> {
    const o = this.#opts;
    try {
      for (const url of o.listenWs ?? []) this.#wsUrls.push(this.#serveWs(url));
      if (o.admin) {
        const server = listenHttp(o.admin, "--admin", (req) => this.#admin(req));
        this.#servers.push(server);
        this.#adminUrl = `http://${server.hostname}:${server.port}`;
      }
      const ownPorts = this.#servers.map((s) => s.port);
      const { log: _log, parseForward: _parse, workerUrl: _url, logLevel: _level, workers: _n, ...rest } = o;
      const n = o.multiTenant ? Math.max(1, o.workers) : 1;
      const buffers = newSharedRelayBuffers(n);
      for (let i = 0; i < n; i++) {
        const options: WorkerRelayOptions = {
          ...rest,
          // the shared stream listeners on the first worker; each tenant on the worker its id names
          listenQemu: i === 0 ? rest.listenQemu : [],
          listenDgram: i === 0 ? rest.listenDgram : [],
          tenants: (rest.tenants ?? []).filter((t) => workerOf(String(t.id), n) === i),
          listenWs: [],
          admin: undefined,
          ownPorts,
          shared: { buffers, worker: i },
        };
        this.#workers.push(new DataPlaneWorker(o.workerUrl, i, options, o.logLevel, o.log));
      }
      const ready = await Promise.all(this.#workers.map((w) => w.ready()));
      for (const w of this.#workers) w.listen();
      this.#urls = ready[0].urls;
      this.#forwards = ready[0].forwards;
      this.#flowLimit = ready[0].flowLimit;
    } catch (e) {
      await this.stop();
      throw e;
    }
    return this.#urls;
  }

  /** The worker that holds tenant `id` (the first for requests that name none). */
  #workerFor(id: string | null): DataPlaneWorker {
    return this.#workers[id === null ? 0 : workerOf(id, this.#workers.length)];
  }

  /**
   * Stops admitting on every worker (and WebSocket upgrades here); resolves with the guests still connected.
   * Called again, it only counts them.
   */
  async drain(): Promise<number> {
    this.#draining = true;
    const counts = await Promise.all(this.#workers.map((w) => w.call<number>({ op: "drain" })));
    return counts.reduce((a, b) => a + b, 0);
  }

  get draining(): boolean {
    return this.#draining;
  }

  #draining = false;

  async #admin(req: Request): Promise<Response> {
    if (this.#stopping) return json(503, { error: "shutting down" });
    const adminPath = new URL(req.url).pathname.replace(/\/+$/, "");
    // readiness is the front's: it holds the WebSocket listener a balancer sends to
    if (adminPath === "/readyz" && req.method === "GET") {
      return this.#draining ? new Response("draining\n", { status: 503 }) : new Response("ready\n");
    }
    try {
      const request = await serializeRequest(req);
      const path = adminPath;
      if (path === "/v1/drain" && req.method === "POST") {
        // authorised by the first worker's admin API, then every worker drains
        const first = await this.#workers[0].call<SerializedResponse>({ op: "admin", request });
        if (first.status !== 202) return responseFrom(first);
        return json(202, { draining: true, guests: await this.drain() });
      }
      const call = (w: DataPlaneWorker) => w.call<SerializedResponse>({ op: "admin", request });
      const named = /^\/v1\/tenants\/([^/]+)/.exec(path);
      let id: string | null = null;
      if (named) {
        try {
          id = decodeURIComponent(named[1]);
        } catch { /* the worker answers the bad encoding */ }
      } else if (path === "/v1/tenants" && req.method === "POST") {
        try {
          const body = JSON.parse(request.body ?? "");
          if (typeof body?.id === "string") id = body.id;
        } catch { /* the worker answers "not JSON" */ }
      }
      const first = await call(this.#workerFor(id));
      const fanOut = req.method === "GET" && (path === "/v1/tenants" || path === "/metrics");
      if (!fanOut || first.status !== 200 || this.#workers.length === 1) return responseFrom(first);
      const rest = await Promise.all(this.#workers.slice(1).map(call));
      if (path === "/metrics") {
        first.body = mergeMetrics([first.body, ...rest.map((r) => r.body)]);
      } else {
        first.body = JSON.stringify([first, ...rest].flatMap((r) => JSON.parse(r.body)), null, 2);
      }
      return responseFrom(first);
    } catch (e) {
      return json(500, { error: (e as Error).message });
    }
  }

  #serveWs(url: string): string {
    const server = listenHttp(url, "--listen-ws", (req, host) => this.#wsRequest(req, host), "http|ws");
    this.#servers.push(server);
    return `ws://${server.hostname}:${server.port}`;
  }

  async #wsRequest(req: Request, listenHost: string): Promise<Response> {
    const remote = req.headers.get("x-forwarded-for") ?? "websocket";
    if (this.#stopping || this.#draining) return new Response("shutting down\n", { status: 503 });
    const named = /^\/v1\/tenants\/([^/]+)\//.exec(new URL(req.url).pathname);
    let id: string | null = null;
    try {
      id = named ? decodeURIComponent(named[1]) : null;
    } catch { /* the worker answers the bad encoding */ }
    const w = this.#workerFor(id);
    let admitted: WsAdmitReply;
    try {
      admitted = await w.call<WsAdmitReply>({
        op: "wsAdmit",
        request: await serializeRequest(req),
        listenHost,
      });
    } catch (e) {
      return json(500, { error: (e as Error).message });
    }
    if ("response" in admitted) return responseFrom(admitted.response);
    let upgrade: { socket: WebSocket; response: Response };
    try {
      upgrade = platform.upgradeWebSocket(req, admitted.protocol);
    } catch (e) {
      w.call({ op: "wsAbandon", tenant: admitted.tenant }).catch(() => {});
      return json(400, { error: `Bad WebSocket upgrade: ${(e as Error).message}` });
    }
    const { socket, response } = upgrade;
    socket.binaryType = "arraybuffer";
    this.#carry(socket, w, admitted, remote);
    return response;
  }

  #carry(ws: WebSocket, w: DataPlaneWorker, admitted: WsAdmitted, remote: string): void {
    const { tenant, expiresAt, framing, wispVersion } = admitted;
    const maxFrame = Math.min(this.#opts.maxFrame ?? QEMU_MAX_FRAME, 65535 + 14);
    const bridge = new WsBridge(
      ws,
      w,
      messageFraming(framing, maxFrame),
      this.#opts.log,
      tenant,
      framing === "wisp",
    );
    let stopExpiry = () => {};
    const closeOnce = ws.onclose;
    ws.onclose = (e) => {
      stopExpiry();
      closeOnce?.call(ws, e);
    };
    ws.onopen = async () => {
      w.bridges.add(bridge);
      let accepted = false;
      try {
        accepted = await w.call<boolean>({
          op: "wsOpen",
          tenant,
          remote,
          framing,
          wispVersion,
          toWorker: bridge.toWorker.sab,
          toMain: bridge.toMain.sab,
        });
      } catch { /* the worker is gone */ }
      if (!accepted) {
        ws.close(4409, "tenant already has a guest");
        return;
      }
      bridge.accepted = true;
      bridge.toGuest();
      stopExpiry = endAtExpiry(
        ws,
        expiresAt,
        () => this.#opts.log("info", "guest session ended: its token expired", { tenant }),
      );
    };
  }

  /** Stops the listeners here, then the worker (bounded: it resets guests' flows and closes its sockets). */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    await Promise.allSettled(this.#workers.map((w) => withTimeout(w.call({ op: "stop" }), "stop")));
    await Promise.race([
      Promise.allSettled(this.#servers.map((s) => s.shutdown())),
      new Promise((r) => setTimeout(r, 1000)),
    ]);
    for (const w of this.#workers) {
      w.stopListening();
      w.worker.terminate();
    }
    this.#workers = [];
    this.#servers = [];
  }
}
