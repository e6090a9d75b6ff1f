/**
 * The relay-wide frame scheduler for guest → stack traffic: one lane per connected guest, drained
 * round-robin with deficit round robin by bytes (Shreedhar & Varghese), so a guest that floods cannot
 * starve a quiet one of the relay's single thread.
 *
 * A lane holds at most one batch: the frames of one transport read, as views into that transport's
 * receive buffer (no copies). The transport does not read again until its batch is consumed, so a full
 * lane is backpressure on the guest's socket. A lane over its ingress byte rate (tenant quota) is
 * skipped until its bucket refills.
 *
 * @module
 */
import { after, type CancelTimer, nextTurn } from "../common/timers.ts";
import type { TokenBucket } from "../common/token_bucket.ts";

/** Bytes a lane may deliver per round (DRR quantum). */
export const QUANTUM_BYTES = 64 * 1024;
/** Bytes processed before yielding to the event loop (lets I/O and timers run). */
const PASS_BUDGET_BYTES = 1024 * 1024;
/**
 * Time one lane may take per round: bytes are a fair measure only when every byte costs the same, and a
 * guest can send frames that cost far more than their size. Checked every {@linkcode TIME_CHECK_FRAMES}.
 */
export const LANE_TURN_MS = 2;
/** Milliseconds a pass may run before yielding, whatever the bytes: two lanes' full turns. */
export const PASS_TIME_MS = 2 * LANE_TURN_MS;
const TIME_CHECK_FRAMES = 8;

export class Lane {
  /** Frames delivered and bytes, for metrics. */
  frames = 0;
  bytes = 0;
  deficit = 0;
  /** Throws that escaped the frame handler. */
  failures = 0;
  /** Rounds this lane ended early for taking more than {@linkcode LANE_TURN_MS}. */
  timeLimited = 0;
  #buf: Uint8Array | null = null;
  #offs: number[] = [];
  #lens: number[] = [];
  #i = 0;
  #n = 0;
  #resolve: (() => void) | null = null;
  closed = false;

  constructor(
    readonly name: string,
    readonly deliver: (buf: Uint8Array, off: number, len: number) => void,
    readonly ingress: TokenBucket | null = null,
  ) {}

  /** Whether a transport batch is held (the transport waits for it to be consumed). */
  get holding(): boolean {
    return this.#buf !== null;
  }

  /** Frames waiting in this lane (ring occupancy). */
  get pending(): number {
    return this.#n - this.#i;
  }

  /** @internal */
  load(buf: Uint8Array, offs: number[], lens: number[], n: number): void {
    this.#buf = buf;
    this.#offs = offs;
    this.#lens = lens;
    this.#i = 0;
    this.#n = n;
  }

  /** @internal Resolves when the batch held now has been consumed (or the lane closed). */
  taken(): Promise<void> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** Length of the next frame, or 0 when empty. */
  peekLength(): number {
    return this.#i < this.#n ? this.#lens[this.#i] : 0;
  }

  /** Delivers the next frame. */
  deliverNext(): number {
    const len = this.#lens[this.#i];
    const off = this.#offs[this.#i];
    this.#i++;
    this.frames++;
    this.bytes += len;
    if (!this.closed) {
      try {
        this.deliver(this.#buf!, off, len);
      } catch (e) {
        // the stack contains its own throws; this is the last line: the frame is lost, the lane goes on,
        // and only the first failure of a lane is printed
        if (this.failures++ === 0) {
          console.error(
            `slirp-relay: frame handler failed on lane ${this.name}: ${(e as Error)?.stack ?? e}`,
          );
        }
      }
    }
    return len;
  }

  /** Releases the transport's buffer. */
  finish(): void {
    const r = this.#resolve;
    this.#buf = null;
    this.#resolve = null;
    this.#i = this.#n = 0;
    r?.();
  }
}

export class FrameScheduler {
  #active: Lane[] = [];
  /** Where in `#active` the next lane's turn is. */
  #cursor = 0;
  #running = false;
  /** A pending come-back (a timer's cancel, or 0 for the next turn). */
  #timer: CancelTimer | 0 | undefined;
  readonly lanes: Set<Lane> = new Set();
  /** The clock of the lanes' ingress quotas: a test's manual one, or null for wall time (turn lengths always are). */
  readonly #quotaClock: (() => number) | null;

  constructor(quotaClock: (() => number) | null = null) {
    this.#quotaClock = quotaClock;
  }

  /** A lane for a guest connection. */
  open(
    name: string,
    deliver: (buf: Uint8Array, off: number, len: number) => void,
    ingress: TokenBucket | null = null,
  ): Lane {
    const l = new Lane(name, deliver, ingress);
    this.lanes.add(l);
    return l;
  }

  close(l: Lane): void {
    l.closed = true;
    this.lanes.delete(l);
    const i = this.#active.indexOf(l);
    if (i >= 0) {
      removeAt(this.#active, i);
      if (i < this.#cursor) this.#cursor--;
    }
    l.finish();
  }

  /**
   * Queues a batch on `lane`. When no pass is under way or due, the pass runs at once, in this call: then,
   * if every frame was delivered, nothing is returned (no promise, no microtask per guest read — the
   * common case of a guest alone on its worker); otherwise the promise resolves once every frame has been.
   */
  submit(lane: Lane, buf: Uint8Array, offs: number[], lens: number[], n: number): Promise<void> | void {
    if (lane.closed) return;
    lane.load(buf, offs, lens, n);
    this.#active.push(lane);
    if (!this.#running && this.#timer === undefined) {
      this.#running = true;
      this.#run();
    }
    if (lane.holding) return lane.taken();
  }

  #kick(): void {
    if (this.#running || this.#timer !== undefined) return;
    this.#running = true;
    queueMicrotask(() => this.#run());
  }

  #run(): void {
    const active = this.#active;
    // wall time is read once per pass and then every TIME_CHECK_FRAMES frames (a reading costs ~0.1 µs, a
    // guest frame ~3 µs)
    let now = performance.now();
    const start = now;
    let sinceClock = 0;
    let spent = 0;
    let minWait = Infinity;
    let timeUp = false;
    rounds: while (active.length > 0 && spent < PASS_BUDGET_BYTES) {
      let progressed = false;
      minWait = Infinity;
      // one round: every active lane once, from where the last pass stopped (a pass cut short by time
      // must not favour the lanes at the front)
      for (let visits = active.length; visits > 0 && active.length > 0; visits--) {
        if (this.#cursor >= active.length) this.#cursor = 0;
        const lane = active[this.#cursor];
        const turnStart = now;
        const quotaNow = this.#quotaClock ? this.#quotaClock() : now;
        if (lane.ingress && lane.ingress.available(quotaNow) <= 0) {
          minWait = Math.min(minWait, lane.ingress.waitMs(1, quotaNow));
          this.#cursor++;
          continue;
        }
        lane.deficit += QUANTUM_BYTES;
        let len: number;
        while ((len = lane.peekLength()) > 0 && len <= lane.deficit) {
          lane.deficit -= lane.deliverNext();
          lane.ingress?.spend(len, quotaNow);
          spent += len;
          progressed = true;
          if (lane.ingress && lane.ingress.available(quotaNow) <= 0) break;
          if (++sinceClock === TIME_CHECK_FRAMES) {
            sinceClock = 0;
            now = performance.now();
            if (now - turnStart > LANE_TURN_MS) {
              // over its time: the rest of its quantum waits for the next round, behind the other lanes
              lane.timeLimited++;
              lane.deficit = 0;
              break;
            }
          }
        }
        if (lane.peekLength() === 0) {
          lane.deficit = 0;
          removeAt(active, this.#cursor);
          lane.finish();
        } else this.#cursor++;
        // small frames that cost much (a SYN flood) fill the byte budget slowly: the pass is bounded in
        // time as well, so that I/O — every other guest's frames and replies — waits at most this long
        if (now - start > PASS_TIME_MS) {
          timeUp = true;
          break rounds;
        }
      }
      if (!progressed) break;
    }
    this.#running = false;
    if (this.#active.length === 0) return;
    // more work: yield to I/O first (the next turn: a chained setTimeout(0) is clamped to milliseconds);
    // if every lane is rate-limited, come back when one has tokens
    const again = () => {
      this.#timer = undefined;
      this.#kick();
    };
    if (spent === 0 && !timeUp && minWait !== Infinity) {
      this.#timer = after(Math.max(1, Math.ceil(minWait)), again);
    } else {
      this.#timer = 0;
      nextTurn(again);
    }
  }
}

/** Removes `list[i]`, keeping the order: `splice` would allocate the array of what it removed, per pass. */
function removeAt<T>(list: T[], i: number): void {
  for (let j = i + 1; j < list.length; j++) list[j - 1] = list[j];
  list.pop();
}
