/**
 * A hashed timer wheel (Varghese & Lauck): one per relay process drives every expiry — DHCP leases, UDP
 * flows, DNS queries, TCP retransmission — so no flow owns a runtime timer. Timers are intrusive: the
 * owner embeds a {@linkcode Timer} and re-arms it, so arming allocates nothing.
 *
 * Time is passed in (`advance(now)`), which keeps the stack deterministic under test.
 *
 * A timer that throws does not stop the wheel: its owner absorbs the throw (a flow resets itself, a stack
 * faults its tenant), and the other timers of the turn still fire.
 *
 * @module
 */
import type { FaultOwner } from "./containment.ts";

/** Absorbs throws from timers that have no owner of their own. */
const UNOWNED: FaultOwner = {
  onFault(err: unknown): void {
    console.error(`slirp-relay: a timer without an owner failed: ${(err as Error)?.stack ?? err}`);
  },
};

/**
 * A timer slot owned by a flow. `fire` runs when `advance` passes its deadline; a throw from it goes to
 * `owner`.
 */
export class Timer {
  deadline = 0;
  /** Doubly linked list within a slot; null when not armed. */
  prev: Timer | null = null;
  next: Timer | null = null;
  armed = false;
  /** Slot index while armed. */
  slot = -1;
  constructor(public fire: (now: number) => void, public owner: FaultOwner = UNOWNED) {}
}

export class TimerWheel {
  readonly tickMs: number;
  #slots: (Timer | null)[];
  /**
   * One bit per slot, set while the slot holds a timer: the next deadline is found a word (32 slots) at a
   * time. A scan slot by slot walked up to 1024 entries before every sleep of the loop: with one timer 4 s
   * ahead 0.6–0.95 µs, and 7.5–8.3 µs on the cold caches of a thread that slept 20 ms (now 37–46 ns and
   * 2.9–4.4 µs; bench/stack_bench.ts has the warm case).
   */
  #occupied: Uint32Array;
  #mask: number;
  #current = 0;
  #now: number;
  #count = 0;
  /** Called when the first timer is armed on an empty wheel, so a driver can start ticking. */
  onWake: (() => void) | null = null;

  /**
   * @param now the current time in ms
   * @param tickMs resolution; deadlines round up to the next tick
   * @param slots a power of two; deadlines beyond slots*tick wait for extra rotations
   */
  constructor(now: number, tickMs = 5, slots = 1024) {
    if ((slots & (slots - 1)) !== 0) {
      throw new Error(`Timer wheel slots must be a power of two, got ${slots}`);
    }
    this.tickMs = tickMs;
    this.#slots = new Array(slots).fill(null);
    this.#occupied = new Uint32Array(Math.ceil(slots / 32));
    this.#mask = slots - 1;
    this.#current = Math.floor(now / tickMs);
    this.#now = now;
  }

  /** Number of armed timers. */
  get size(): number {
    return this.#count;
  }

  /** The time of the last advance or observe. */
  get now(): number {
    return this.#now;
  }

  /**
   * A time at or before the next timer's deadline (Infinity when none is armed): the end of the first tick
   * that holds a timer. A timer a rotation or more away makes it early, never late — a loop that sleeps
   * until then wakes at worst once per rotation for nothing.
   */
  nextDeadline(): number {
    if (this.#count === 0) return Infinity;
    // the first occupied slot from the one after the current, around the wheel (the current slot last)
    const words = this.#occupied;
    const from = (this.#current + 1) & this.#mask;
    let w = from >>> 5;
    let bits = words[w] & (-1 << (from & 31));
    for (let seen = 0; seen <= words.length; seen++) {
      if (bits !== 0) {
        const slot = (w << 5) + 31 - Math.clz32(bits & -bits);
        return (this.#current + 1 + ((slot - from) & this.#mask)) * this.tickMs;
      }
      w = w + 1 === words.length ? 0 : w + 1;
      bits = words[w];
    }
    return (this.#current + this.#slots.length) * this.tickMs;
  }

  /** Arms (or re-arms) `t` to fire at `deadline` ms. */
  arm(t: Timer, deadline: number): void {
    if (t.armed) this.cancel(t);
    t.deadline = deadline;
    // never into the slot being processed: at least one tick ahead
    const tick = Math.max(Math.ceil(deadline / this.tickMs), this.#current + 1);
    const slot = tick & this.#mask;
    t.slot = slot;
    t.prev = null;
    t.next = this.#slots[slot];
    if (t.next) t.next.prev = t;
    this.#slots[slot] = t;
    this.#occupied[slot >>> 5] |= 1 << (slot & 31);
    t.armed = true;
    if (this.#count++ === 0 && this.onWake) this.onWake();
  }

  /** Disarms `t`; a no-op when it is not armed. */
  cancel(t: Timer): void {
    if (!t.armed) return;
    if (t.prev) t.prev.next = t.next;
    else if ((this.#slots[t.slot] = t.next) === null) this.#occupied[t.slot >>> 5] &= ~(1 << (t.slot & 31));
    if (t.next) t.next.prev = t.prev;
    t.prev = t.next = null;
    t.armed = false;
    this.#count--;
  }

  /**
   * Moves the wheel's time (`now`) on without firing anything: a loop tells the time of its turn before the
   * turn's events, so what they time (RTT samples, deadlines armed) reads the turn's clock even in a turn
   * whose due timers wait (src/host/epoll_loop.ts).
   */
  observe(now: number): void {
    if (now > this.#now) this.#now = now;
  }

  /** Fires every timer whose deadline is at or before `now`, in slot order. */
  advance(now: number): void {
    this.#now = now;
    const target = Math.floor(now / this.tickMs);
    // a long pause (suspend, debugger) need not walk more than one rotation
    if (target - this.#current > this.#slots.length) this.#current = target - this.#slots.length;
    while (this.#current < target) {
      this.#current++;
      const slot = this.#current & this.#mask;
      let t = this.#slots[slot];
      while (t) {
        if (t.deadline <= now) {
          this.cancel(t);
          try {
            t.fire(now);
          } catch (e) {
            t.owner.onFault(e, "timer");
          }
          // fire() may have armed or cancelled other timers of this slot: rescan from its head
          t = this.#slots[slot];
        } else t = t.next;
      }
    }
  }
}
