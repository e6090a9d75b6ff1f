/**
 * The relay's own socket loop: an epoll set through FFI to libc (Linux), which every socket of ours
 * (epoll.ts, epoll_udp.ts, unix_datagram.ts) joins, with the work the loop puts off (deferred writes).
 *
 * Why not the runtime's sockets: with a thousand sockets that all have data, Deno 2.9 serves them very
 * unevenly — reading 1000 connections fed by a node.js source, only 128 ever got data (872 got no byte
 * in 5 s; node:net in Deno: 767), tokio's per-poll cooperative budget of 128 I/O polls meeting the
 * runtime's op scheduling, with no setting to change it. `bench/socket_fairness.ts` (Deno source) gives
 * Jain 0.365 for Deno's sockets, 0.534 for node:net, 0.991 for this loop. A level-triggered epoll set
 * reports every ready socket and the kernel rotates its ready list, so each gets its turn — as passt does.
 *
 * One loop per thread. On the runtime's main thread, while busy it polls `epoll_wait` with a zero timeout
 * and yields one event-loop turn between polls (timers and the runtime's own I/O run); when idle it waits
 * in `epoll_wait` on a worker thread (a nonblocking FFI call). A data-plane worker's loop is its own (see
 * `own`): it sleeps in `epoll_wait` itself and passes through the runtime's event loop only now and then
 * ({@linkcode MACROTASK_EVERY_MS}) or when asked to. Each poll dispatches up to
 * {@linkcode MAX_EVENTS} events. The loop runs only while sockets are registered: a process with none
 * keeps no call pending.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { nextTimerDeadline, ownTurns, runTurnWork, turnWorkPending } from "../common/timers.ts";
import { errno, libc } from "./libc.ts";
import { errnoName } from "./errno_names.ts";
import { platform } from "../platform/current.ts";
import type { HostIcmpError } from "./host.ts";

/** epoll event bits (sys/epoll.h), for the sockets that join the loop. */
export const EPOLLIN = 0x1, EPOLLOUT = 0x4, EPOLLERR = 0x8, EPOLLHUP = 0x10, EPOLLRDHUP = 0x2000;
const EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2, EPOLL_CTL_MOD = 3;
const EFD_NONBLOCK = 0o4000, EFD_CLOEXEC = 0o2000000;
const EINTR = 4;
/** Busy turns a deferred write may wait (each turn is a few µs to tens of µs). */
const DEFER_TURNS = 8;
/** A deferred function that ran within this many turns is hot (a stream of writes worth gathering). */
const HOT_TURNS = 2;
/** A wait longer than this ends a stream: the next write is a lone one again (see `defer`). */
const STREAM_GAP_MS = 1;
/**
 * How long an owned loop holds work put off "until quiet" (the bytes of a guest's TCP write whose last
 * segment has not come yet): it runs when a sleep of this long found nothing, or once it is this old.
 */
const QUIET_MS = 1;
/** Busy turns of an owned loop between two macrotasks (the runtime's timers and messages run in those). */
const BUSY_TURNS_PER_MACROTASK = 16;
/**
 * How long an owned loop may go without a macrotask (the runtime's timers, the V8 tasks the runtime runs
 * between macrotasks): a turn that found nothing takes one once this long has passed; between, a turn that may
 * sleep lets queued promise work run through {@linkcode MICROTASK_HOPS} microtask hops instead. On this 2-vCPU
 * VM a macrotask after a wake-up from idle costs tens of µs of cold caches, on the way of a request's answer
 * (UDP echo every 2 ms, interleaved runs: p50 286–336 vs 317–397 µs, CPU 0.17–0.19 vs 0.17–0.23 ms per round
 * trip).
 */
const MACROTASK_EVERY_MS = 10;
/** The same for a loop that has served events in every turn since: it gets its macrotask all the same. */
const BUSY_MACROTASK_EVERY_MS = 40;
/**
 * Microtask hops a turn that skips the macrotask gives queued promise work (each `await` or `then` in a chain is
 * one). A longer chain goes on in the next turn, at most {@linkcode MACROTASK_EVERY_MS} later
 * (tests/epoll_test.ts runs one 40 deep).
 */
const MICROTASK_HOPS = 8;
/** Events taken per epoll_wait. */
const MAX_EVENTS = 512;
/**
 * Turns in a row that returned {@linkcode MAX_EVENTS} (so more descriptors may be ready: level-triggered epoll
 * hands the rest out on the next calls) before due timers fire all the same. Until then they wait for the
 * rest: an unread guest socket may hold the ACK a due retransmission timer is about to give up on.
 */
const FULL_TURNS_BEFORE_TIMERS = 4;
/**
 * Longest sleep of an owned loop: a runtime timer set without `after` (a library's) still runs within this
 * long. Ten wake-ups a second cost nothing measurable.
 */
const OWNED_MAX_SLEEP_MS = 100;
/** sizeof(struct epoll_event): 12 on x86-64 (packed), 16 elsewhere (aarch64); the data field follows. */
const EVENT_SIZE = platform.arch === "x86_64" ? 12 : 16;
const EVENT_DATA = platform.arch === "x86_64" ? 4 : 8;

/** A failed socket call, with the errno's name as `code` (as node's errors carry it). */
export class SocketError extends Error {
  /**
   * @param icmp the ICMP message behind the failure, when the socket's error queue held one (a path probe's
   * connect that a router's time exceeded ended)
   */
  constructor(readonly code: string, what: string, readonly icmp?: HostIcmpError) {
    super(`${what}: ${code}`);
  }
}

const L = libc;

/** The failure of the call `what` with errno `e` (this thread's errno by default). */
export function fail(what: string, e = errno()): SocketError {
  return new SocketError(errnoName(e), what);
}

/**
 * Whether this process can use the epoll sockets (Linux, FFI allowed, glibc). SLIRP_SOCKETS=runtime
 * forces the runtime's own sockets (an escape hatch, and a way to compare).
 */
export function epollAvailable(): boolean {
  if (platform.os !== "linux") return false;
  try {
    if (platform.env("SLIRP_SOCKETS") === "runtime") return false;
  } catch { /* no env permission: the default */ }
  try {
    L();
    return true;
  } catch {
    return false;
  }
}

/** What joins the loop: told the events of its descriptor on each turn that has some. */
export interface Watcher {
  onEvents(events: number): void;
}

/** The timers an owned loop drives: the relay's timer wheel. */
export interface LoopClock {
  /** When the next timer is due (performance.now() time), or Infinity. */
  nextDeadline(): number;
  /** The time of this turn, told before its events: nothing fires. */
  observe(now: number): void;
  /** Fires what is due at `now`. */
  advance(now: number): void;
}

export class EpollLoop {
  #ep = -1;
  #wake = -1;
  #watchers = new Map<number, Watcher>();
  #next = 1;
  #events = new Uint8Array(MAX_EVENTS * EVENT_SIZE);
  #view = new DataView(this.#events.buffer);
  #ctl = new Uint8Array(EVENT_SIZE);
  #ctlView = new DataView(this.#ctl.buffer);
  #running = false;
  #one = new BigUint64Array([1n]);
  /** Work put off until the loop is idle or a few turns have passed (coalesced host writes). */
  #deferred: (() => void)[] = [];
  #turnsSinceDeferred = 0;
  /** Work that waits for a quiet loop (see deferUntilQuiet), and since when the oldest of it waits. */
  #quiet: (() => void)[] = [];
  #quietSince = 0;
  /** Loop turns, and the turn each deferred function last ran in (hot or cold). */
  #turn = 0;
  #lastRun = new WeakMap<() => void, number>();
  /** Waiting on the worker thread: work deferred now (from a timer or a UDP reply) must not wait for it. */
  #blocked = false;
  #deferredSoon = false;
  #drain = new BigUint64Array(1);
  /** Set when this thread's loop is ours (a data-plane worker): it sleeps in epoll_wait itself. */
  #clock: LoopClock | null = null;
  #wakeListeners: (() => void)[] = [];
  /** The next turn yields through the runtime's timers, so its messages and I/O are served too. */
  #runtimeTurn = false;
  /** An owned loop: when its last macrotask ran, and whether a turn has skipped one since. */
  #lastMacrotask = 0;
  #macrotaskOwed = false;

  /**
   * Asks for one turn through the runtime's event loop proper: between our turns only immediates run,
   * and a worker's messages are delivered only when the runtime polls its own I/O (measured: never within
   * 700 ms of immediates, 0.5 ms after one `setTimeout(0)`).
   */
  runtimeTurn(): void {
    this.#runtimeTurn = true;
  }

  /**
   * Work of the runtime's own (an async op: crypto, files) is under way: until `release` is called every
   * turn passes through the runtime's event loop and none sleeps in epoll_wait, where the op's completion
   * would not wake us.
   */
  holdRuntimeTurns(): () => void {
    this.#runtimeHolds++;
    let released = false;
    return () => {
      if (!released) (released = true), this.#runtimeHolds--;
    };
  }
  #runtimeHolds = 0;

  /**
   * Makes this the thread's own loop: it runs for good, sleeps in a blocking `epoll_wait` until a socket,
   * the clock's next timer, an {@linkcode after} timer or a wake-up is due, drives `clock`, and runs
   * {@linkcode nextTurn} work. Only on a thread with nothing else to do: the runtime's own event loop runs
   * only between turns.
   */
  own(clock: LoopClock): number {
    this.#open();
    this.#clock = clock;
    ownTurns();
    if (!this.#running) this.#run();
    return this.#wake;
  }

  /** Called whenever another thread wakes this loop through its eventfd. */
  onWake(fn: () => void): void {
    this.#wakeListeners.push(fn);
  }

  #open(): void {
    if (this.#ep >= 0) return;
    const l = L();
    this.#ep = l.epoll_create1(0o2000000);
    if (this.#ep < 0) throw fail("epoll_create1");
    this.#wake = l.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    this.#control(EPOLL_CTL_ADD, this.#wake, 0, EPOLLIN);
  }

  #control(op: number, fd: number, token: number, events: number): void {
    this.#ctlView.setUint32(0, events, true);
    this.#ctlView.setUint32(EVENT_DATA, token, true);
    this.#ctlView.setUint32(EVENT_DATA + 4, 0, true);
    if (L().epoll_ctl(this.#ep, op, fd, this.#ctl) < 0 && op !== EPOLL_CTL_DEL) throw fail("epoll_ctl");
  }

  /** Watches `fd` for `events`; returns the token that names it here. */
  add(fd: number, w: Watcher, events: number): number {
    this.#open();
    const token = this.#next++;
    if (this.#next > 0xffff_fff0) this.#next = 1;
    this.#watchers.set(token, w);
    this.#control(EPOLL_CTL_ADD, fd, token, events);
    if (!this.#running) this.#run();
    return token;
  }

  modify(fd: number, token: number, events: number): void {
    this.#control(EPOLL_CTL_MOD, fd, token, events);
  }

  /**
   * Stops watching (before close, so a reused descriptor never gets the old one's events). `closing`: the
   * caller closes `fd` next, and no other descriptor shares its open file — the kernel then drops it from
   * the set itself (epoll(7)), so the EPOLL_CTL_DEL system call is saved (one per connection); events of it
   * already in this turn's batch find no watcher under its token.
   */
  remove(fd: number, token: number, closing = false): void {
    if (!this.#watchers.delete(token)) return;
    if (!closing) this.#control(EPOLL_CTL_DEL, fd, 0, 0);
    if (this.#watchers.size === 0 && this.#running && !this.#clock) {
      // wake the waiting thread so the loop ends and no call stays pending
      L().write(this.#wake, this.#one, 8);
    }
  }

  async #run(): Promise<void> {
    this.#running = true;
    const l = L();
    let failures = 0;
    let idleTurns = 0;
    let fullTurns = 0;
    // an owned loop: busy turns since the queue was last drained, and whether promise work left by the last
    // dispatch ran (a macrotask drains the microtask queue, MICROTASK_HOPS hops all but a deep chain; one
    // `await null` only lets what was queued run)
    let busyTurns = 0;
    let settled = true;
    // woken after a while idle (a lone request: a ping, a keystroke, the next RPC), not within a stream
    let loneWake = false;
    try {
      while (this.#watchers.size > 0 || this.#clock) {
        // An owned loop sleeps in this very call when nothing waits (no spinning); a loop on the runtime's
        // thread polls (~1 µs) while busy and blocks on a worker thread (~45 µs per round trip) only when a
        // couple of polls found nothing. Neither blocks with deferred writes or next-turn work waiting.
        const mayBlock = this.#deferred.length === 0 && !turnWorkPending() && this.#runtimeHolds === 0 &&
          settled;
        // an owned loop reads the clock once before a wait that may sleep and once after every wait
        const ownSleep = this.#clock !== null && mayBlock;
        const sleptFrom = ownSleep ? performance.now() : 0;
        const sleepMs = ownSleep ? this.#sleepMs(sleptFrom, this.#quiet.length > 0 ? QUIET_MS : Infinity) : 0;
        let k = l.epoll_wait_now(this.#ep, this.#events, MAX_EVENTS, sleepMs);
        const now = this.#clock ? performance.now() : 0;
        if (this.#clock) {
          // a sleep (one that ended without events, or after a while): nothing is a stream any more, and what
          // it woke for goes out at once instead of waiting for the next idle poll
          if ((k === 0 && mayBlock) || (sleepMs > 0 && now - sleptFrom > STREAM_GAP_MS)) {
            this.#turn += HOT_TURNS + 1;
            loneWake = k > 0;
          }
        } else if (k === 0 && this.#deferred.length === 0 && ++idleTurns > 2) {
          this.#blocked = true;
          k = await l.epoll_wait(this.#ep, this.#events, MAX_EVENTS, -1);
          this.#blocked = false;
          idleTurns = 0;
          // after an idle wait nothing is a stream of writes any more (turns did not advance meanwhile)
          this.#turn += HOT_TURNS + 1;
        }
        if (k < 0) {
          // a signal (a profiler's SIGPROF, a debugger) interrupted the wait: a turn with no events, the timers
          // still due. Any other error would spin, so a lasting one gives up
          const e = errno();
          if (e !== EINTR) {
            if (++failures > 100) throw new Error(`epoll_wait keeps failing (${errnoName(e)})`);
            continue;
          }
          k = 0;
        } else {
          failures = 0;
        }
        this.#turn++;
        this.#clock?.observe(now);
        if (k > 0) {
          idleTurns = 0;
          this.#dispatch(k);
        }
        if (this.#clock) {
          if (k < MAX_EVENTS || ++fullTurns > FULL_TURNS_BEFORE_TIMERS) {
            fullTurns = 0;
            this.#clock.advance(now);
          }
          runTurnWork();
          // a sleep found nothing, or the oldest has waited long enough
          if (this.#quiet.length > 0 && ((k === 0 && sleepMs > 0) || now - this.#quietSince >= QUIET_MS)) {
            this.#runQuiet();
          }
        }
        if (this.#deferred.length > 0 && (k === 0 || ++this.#turnsSinceDeferred >= DEFER_TURNS)) {
          this.#runDeferred();
        }
        // one event-loop turn: read continuations, timers and the runtime's own I/O run before the next
        // poll (setImmediate: setTimeout(0) is clamped to milliseconds when chained). An owned loop that
        // found events polls again after the continuations its dispatch queued (`await null`, ~0.05 µs
        // against ~2 µs and three allocations for a macrotask); every BUSY_TURNS_PER_MACROTASK turns, or before
        // it may sleep, it drains the queue — by a macrotask when one is due, else by a few more hops
        if (this.#runtimeTurn || this.#runtimeHolds > 0) {
          this.#runtimeTurn = false;
          this.#macrotaskOwed = false;
          this.#lastMacrotask = now;
          busyTurns = 0;
          settled = true;
          await new Promise<void>((r) => setTimeout(r, 0));
        } else {
          // a lone wake-up's answer goes out with the continuations of its dispatch: then on to the idle
          // turn below without the zero-timeout poll that would only find the loop idle (one epoll_wait per
          // request saved); the sleep's own epoll_wait returns at once if more has come
          let answered = false;
          if (this.#clock && k > 0 && ++busyTurns < BUSY_TURNS_PER_MACROTASK) {
            settled = false;
            await null;
            answered = loneWake && this.#deferred.length === 0;
            if (!answered) continue;
          }
          busyTurns = 0;
          settled = true;
          // The work of a lone wake-up is done: the peer our answer woke (a VM's network thread, a host
          // client) was most likely queued on this very CPU — the kernel places a socket's wakee beside its
          // waker — and would wait out this runtime turn and the poll before our sleep (~90 µs, measured, for
          // a ping after 50 ms of idle). Let it run first; nothing of ours is waiting. Not within a stream:
          // there it cost host→guest bulk transfers ~15 % (more, smaller turns on both sides).
          if (loneWake && (answered || (k === 0 && sleepMs === 0))) {
            loneWake = false;
            l.sched_yield();
          }
          if (this.#clock && !this.#macrotaskDue(now, k === 0)) {
            // the sleep that follows ends in time for the macrotask skipped here (see #sleepMs)
            this.#macrotaskOwed = true;
            for (let hop = 0; hop < MICROTASK_HOPS; hop++) await null;
          } else {
            this.#macrotaskOwed = false;
            this.#lastMacrotask = now;
            await new Promise<void>((r) => setImmediate(r));
          }
        }
      }
    } finally {
      this.#running = false;
    }
  }

  /**
   * How long an owned loop may sleep: until the next timer of the wheel or of `after`, at most a while — and
   * no longer than the macrotask a turn skipped may wait.
   */
  #sleepMs(now: number, atMost: number): number {
    const due = Math.min(
      this.#clock!.nextDeadline(),
      nextTimerDeadline(),
      now + Math.min(OWNED_MAX_SLEEP_MS, atMost),
      this.#macrotaskOwed ? this.#lastMacrotask + MACROTASK_EVERY_MS : Infinity,
    );
    return due <= now ? 0 : Math.ceil(due - now);
  }

  /**
   * Whether an owned loop's turn must pass through the runtime's event loop before it may sleep: an `after`
   * timer is due (the runtime fires it), or the last macrotask is {@linkcode MACROTASK_EVERY_MS} old and the
   * turn found nothing to do. A turn that served events (a request whose answer may be on its way) leaves it
   * to the sleep that follows, which ends by then, unless the loop has been busy for
   * {@linkcode BUSY_MACROTASK_EVERY_MS}.
   */
  #macrotaskDue(now: number, idle: boolean): boolean {
    const since = now - this.#lastMacrotask;
    return nextTimerDeadline() <= now || since >= (idle ? MACROTASK_EVERY_MS : BUSY_MACROTASK_EVERY_MS);
  }

  /**
   * Runs `fn` once the loop finds nothing to do, or after a few busy turns, whichever is first — when `fn`
   * is hot (it ran within the last two turns: a stream of writes). A cold `fn` (a lone request's write)
   * runs right after the current task: waiting turns would only add latency, with nothing to gather.
   */
  defer(fn: () => void): void {
    const last = this.#lastRun.get(fn);
    if (last === undefined || this.#turn - last > HOT_TURNS) {
      this.#lastRun.set(fn, this.#turn);
      queueMicrotask(fn);
      return;
    }
    if (this.#deferred.length === 0) this.#turnsSinceDeferred = 0;
    this.#deferred.push(fn);
    if ((this.#running && !this.#blocked) || this.#deferredSoon) return;
    // nothing is polling: run it after the current task instead
    this.#deferredSoon = true;
    queueMicrotask(() => {
      this.#deferredSoon = false;
      this.#runDeferred();
    });
  }

  /**
   * In an owned loop, runs `fn` once the loop has been quiet for {@linkcode QUIET_MS} (a sleep that long found
   * nothing) or after that long whatever happens; elsewhere as {@linkcode defer}. For work that gains from
   * waiting for more of the same (a TCP write whose end has not come) and that a caller will hurry when it
   * must (by calling `defer` as well).
   */
  deferUntilQuiet(fn: () => void): void {
    if (!this.#clock) return this.defer(fn);
    if (this.#quiet.length === 0) this.#quietSince = performance.now();
    this.#quiet.push(fn);
  }

  #runQuiet(): void {
    const list = this.#quiet;
    this.#quiet = [];
    for (const fn of list) this.#runContained(fn);
  }

  /** Runs one piece of put-off work; a throw is logged, and the loop and the rest of the list go on. */
  #runContained(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      console.error(`slirp-relay: deferred socket work failed: ${(e as Error)?.stack ?? e}`);
    }
  }

  #runDeferred(): void {
    const list = this.#deferred;
    this.#deferred = [];
    for (const fn of list) {
      this.#lastRun.set(fn, this.#turn);
      this.#runContained(fn);
    }
  }

  #dispatch(k: number): void {
    const v = this.#view;
    for (let i = 0; i < k; i++) {
      const base = i * EVENT_SIZE;
      const token = v.getUint32(base + EVENT_DATA, true);
      if (token === 0) {
        L().read(this.#wake, this.#drain, 8);
        for (const fn of this.#wakeListeners) {
          try {
            fn();
          } catch (e) {
            console.error(`slirp-relay: wake-up handler failed: ${(e as Error)?.stack ?? e}`);
          }
        }
        continue;
      }
      const w = this.#watchers.get(token);
      if (!w) continue; // removed earlier in this batch
      try {
        w.onEvents(v.getUint32(base, true));
      } catch (e) {
        console.error(`slirp-relay: socket event handler failed: ${(e as Error)?.stack ?? e}`);
      }
    }
  }
}

let loop: EpollLoop | null = null;
/** This thread's socket loop (one per thread, made on first use). */
export function epollLoop(): EpollLoop {
  return loop ??= new EpollLoop();
}

/**
 * Runs `fn` when the socket loop is next idle or a few turns from now: writes toward the host gather
 * there, so a guest that sends one segment per frame does not cost one send() per segment (on loopback
 * TCP each send runs the receiver's stack inline: ~15 µs, measured).
 */
export function deferUntilIdle(fn: () => void): void {
  epollLoop().defer(fn);
}

/**
 * Runs `fn` once the socket loop has been quiet for a moment (an owned loop: about a millisecond, or that
 * long at most), for writes worth gathering with what follows; see `EpollLoop.deferUntilQuiet`.
 */
export function deferUntilQuiet(fn: () => void): void {
  epollLoop().deferUntilQuiet(fn);
}

/**
 * Makes the socket loop this thread's own (a data-plane worker; see `EpollLoop.own`). Returns the eventfd
 * that other threads write to wake it; `onWake` runs on each wake-up.
 */
export function ownSocketLoop(clock: LoopClock, onWake?: () => void): number {
  const l = epollLoop();
  if (onWake) l.onWake(onWake);
  return l.own(clock);
}

/** The next turn of this thread's socket loop passes through the runtime's event loop (see `runtimeTurn`). */
export function runtimeTurnSoon(): void {
  epollLoop().runtimeTurn();
}

/** Until the returned function is called, this thread's loop serves the runtime's own I/O every turn. */
export function holdRuntimeTurns(): () => void {
  return epollLoop().holdRuntimeTurns();
}

/** Watches `fd` for input on the socket loop; `onReadable` runs while it has some. Returns the unwatch. */
export function watchReadable(fd: number, onReadable: (events: number) => void): () => void {
  const loop = epollLoop();
  const token = loop.add(fd, { onEvents: (events) => onReadable(events) }, EPOLLIN);
  return () => loop.remove(fd, token);
}
