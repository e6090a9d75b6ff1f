/**
 * One-shot timers that a loop of our own can see. On the runtime's event loop they are ordinary
 * `setTimeout`s; a data-plane worker blocks in `epoll_wait` instead of returning to the runtime, so it asks
 * {@linkcode nextTimerDeadline} how long it may sleep and the runtime fires the callback in the turn after it
 * wakes. Use `after` for every timer of the data plane (grace periods, rate-limit waits, retries); flows use
 * the timer wheel, which the loop drives directly.
 *
 * @module
 */
import { setImmediate } from "node:timers";

/** Cancels a timer; a no-op once it fired. */
export type CancelTimer = () => void;

interface Entry {
  deadline: number;
  live: boolean;
}

/** A binary min-heap of deadlines; cancelled entries are dropped lazily when they reach the top. */
const heap: Entry[] = [];

function push(e: Entry): void {
  heap.push(e);
  let i = heap.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (heap[p].deadline <= e.deadline) break;
    heap[i] = heap[p];
    i = p;
  }
  heap[i] = e;
}

function pop(): void {
  const last = heap.pop()!;
  if (heap.length === 0) return;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1, r = l + 1;
    let m = i;
    let best = last.deadline;
    if (l < heap.length && heap[l].deadline < best) (m = l), (best = heap[l].deadline);
    if (r < heap.length && heap[r].deadline < best) m = r;
    if (m === i) break;
    heap[i] = heap[m];
    i = m;
  }
  heap[i] = last;
}

/** Runs `fn` once after `ms` milliseconds. */
export function after(ms: number, fn: () => void): CancelTimer {
  const e: Entry = { deadline: performance.now() + ms, live: true };
  push(e);
  const id = setTimeout(() => {
    e.live = false;
    fn();
  }, ms);
  return () => {
    e.live = false;
    clearTimeout(id);
  };
}

/** The earliest deadline of a pending {@linkcode after} timer (performance.now() time), or Infinity. */
export function nextTimerDeadline(): number {
  while (heap.length > 0 && !heap[0].live) pop();
  return heap.length > 0 ? heap[0].deadline : Infinity;
}

/** Work for the next turn of an owned loop; null while the runtime's own loop runs the process. */
let turnQueue: (() => void)[] | null = null;

/**
 * Runs `fn` on the next loop turn, after I/O that is ready now: `setImmediate` on the runtime's loop, the
 * owned loop's own queue in a data-plane worker (which must not sleep while such work waits).
 */
export function nextTurn(fn: () => void): void {
  if (turnQueue) turnQueue.push(fn);
  else setImmediate(fn);
}

/** For the owned loop: from now on it runs {@linkcode nextTurn} work itself. */
export function ownTurns(): void {
  turnQueue ??= [];
}

/** For the owned loop: whether work waits for the next turn (then it must not sleep). */
export function turnWorkPending(): boolean {
  return turnQueue !== null && turnQueue.length > 0;
}

/** For the owned loop: runs the work queued for this turn (work it queues waits for the next one). */
export function runTurnWork(): void {
  if (!turnQueue || turnQueue.length === 0) return;
  const list = turnQueue;
  turnQueue = [];
  for (const fn of list) {
    try {
      fn();
    } catch (e) {
      console.error(`slirp-relay: loop work failed: ${(e as Error)?.stack ?? e}`);
    }
  }
}
