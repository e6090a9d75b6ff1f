/**
 * A tenant's Ethernet session: the guest link that carries its frames, the stack that terminates them and
 * the grace period between a guest leaving and its flows being released. The tenant (tenant.ts) is the
 * identity, policy and quotas around it; a session that carries streams instead of frames (Wisp) would sit
 * beside this one.
 *
 * @module
 */
import { after, type CancelTimer } from "../common/timers.ts";
import { Stack, type StackDeps } from "../stack/stack.ts";
import type { StackConfig } from "../stack/config.ts";
import type { Counters } from "../stack/counters.ts";
import type { GuestLink } from "../transport/link.ts";
import { ETH_HEADER_LEN } from "../wire/ethernet.ts";
import type { Lane } from "./scheduler.ts";

/** What a session is built from: the tenant's config and counters. */
export interface SessionDeps {
  /** The stack's sockets, clock, logs and limits (output, counters and the backlog are the session's). */
  stack: Omit<StackDeps, "output" | "counters" | "guestBacklog" | "onFault">;
  config: StackConfig;
  counters: Counters;
}

export class EthernetSession {
  stack: Stack | null = null;
  link: GuestLink | null = null;
  /** The tenant's lane in the relay's frame scheduler while a guest is attached. */
  lane: Lane | null = null;
  #cancelGrace: CancelTimer | undefined;
  #d: SessionDeps;

  constructor(deps: SessionDeps) {
    this.#d = deps;
  }

  /** The session's stack, created on first use (and again after a fault closed it). */
  ensureStack(): Stack {
    if (this.stack && !this.stack.closed) return this.stack;
    const d = this.#d;
    const stack: Stack = new Stack(d.config, {
      ...d.stack,
      counters: d.counters,
      guestBacklog: () => this.link?.backlog ?? 0,
      output: (f) => {
        if (!this.link) return d.counters.drop("no-guest-link");
        if (!this.link.send(f)) d.counters.drop("guest-backlog-full");
      },
      // the stack closed itself after a throw: drop the guest link too, so the guest (QEMU with
      // reconnect, v86) comes back to a fresh stack; every other tenant goes on untouched
      onFault: () => {
        if (this.stack === stack) this.stack = null;
        this.link?.close();
      },
    });
    this.stack = stack;
    return stack;
  }

  /** Frames from the guest enter here (through the scheduler). */
  input(buf: Uint8Array, off: number, len: number): void {
    const stack = this.stack;
    if (!stack) return;
    // larger than the MTU allows (an 802.1Q tag included): no honest NIC sends it, and its cost should not
    // depend on how large a hostile guest makes it
    // (a NIC with offloads — libkrun — sends up to 64 KiB, as its segmentation offload would)
    const mtu = this.link?.offloads ? 65535 : this.#d.config.mtu;
    if (len > ETH_HEADER_LEN + 4 + mtu) return this.#d.counters.drop("frame-over-mtu");
    stack.input(buf, off, len);
  }

  /** Attaches a guest link; the previous one, if any, is closed (the caller decides replace vs refuse). */
  attach(link: GuestLink): void {
    // a guest back within its grace period: its flows resume
    const returning = this.#cancelGrace !== undefined;
    this.#cancelGrace?.();
    this.#cancelGrace = undefined;
    const old = this.link;
    this.link = link;
    if (old && old !== link) old.close();
    const stack = this.ensureStack();
    stack.guestOffloads = link.offloads ?? false;
    if (!returning) return;
    try {
      stack.guestReturned();
    } catch (e) {
      stack.onFault(e, "link.returned");
    }
  }

  /** The link's backlog toward the guest drained: TCP connections waiting on it send again. */
  guestDrained(): void {
    const stack = this.stack;
    if (!stack || stack.closed) return;
    try {
      stack.guestDrained();
    } catch (e) {
      stack.onFault(e, "link.drained");
    }
  }

  /**
   * The guest link went away: keep the stack for `graceMs` (none when 0), then release every flow and call
   * `onExpire`. A guest attaching in time stops the clock.
   */
  detach(link: GuestLink, graceMs: number, onExpire: () => void): void {
    if (this.link !== link) return;
    this.link = null;
    const release = () => {
      this.#cancelGrace = undefined;
      if (this.link) return;
      const stack = this.stack;
      this.stack = null;
      // released a slice at a time: other tenants' frames go on meanwhile
      stack?.closeInSlices();
      onExpire();
    };
    if (graceMs <= 0) return release();
    this.#cancelGrace = after(graceMs, release);
  }

  /** The stack a port-forward connection should reach (a guest is attached), or null. */
  get forwardTarget(): Stack | null {
    return this.stack && !this.stack.closed && this.link ? this.stack : null;
  }

  /** Closes the link and the stack. */
  close(): void {
    this.#cancelGrace?.();
    this.#cancelGrace = undefined;
    this.link?.close();
    this.link = null;
    this.stack?.close();
    this.stack = null;
  }
}
