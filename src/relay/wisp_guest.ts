/**
 * A Wisp client as a tenant's guest: the WebSocket carrier (or the ring from the front) delivers Wisp
 * packets instead of frames, and they go to a {@linkcode WispSession} over the tenant's stack — its DNS,
 * policy, quotas and host sockets. A tenant may hold any number of Wisp sessions beside its frame guest.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Logger } from "../common/logger.ts";
import { after } from "../common/timers.ts";
import type { FrameFeed, LinkPeer } from "../transport/link.ts";
import { WispSession } from "../stack/wisp_service.ts";
import type { Tenant } from "./tenant.ts";

export interface WispGuestDeps {
  log: Logger;
  /** The client broke the carrier's framing (counted as a transport error). */
  protocolError(): void;
  /** The relay's tenants, for removing one that was made for its Wisp clients alone. */
  readonly tenants: Map<string, Tenant>;
  deleteTenant(id: string): void;
  /** How long a token-made tenant outlives its last guest. */
  readonly graceMs: number;
  /** The message of the day for v2 clients (`--wisp-motd`). */
  readonly motd?: string;
  /** Set: clients must authenticate with the password extension (`--wisp-credentials`). */
  readonly authenticate?: (username: string, password: string) => boolean;
}

/**
 * The check behind `--wisp-credentials`: `text` holds `username:password` lines (blank lines and `#`
 * comments skipped; the password is everything after the first colon). Passwords are compared as SHA-256
 * digests in constant time, so the time taken says nothing about how much of one matched.
 */
export function wispCredentials(text: string): (username: string, password: string) => boolean {
  const users = new Map<string, Uint8Array>();
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const colon = line.indexOf(":");
    if (colon <= 0 || colon === line.length - 1) {
      throw new Error(`line ${i + 1}: expected USERNAME:PASSWORD`);
    }
    const name = line.slice(0, colon);
    if (new TextEncoder().encode(name).length > 255) {
      throw new Error(`line ${i + 1}: username over 255 bytes`);
    }
    users.set(name, digest(line.slice(colon + 1)));
  }
  if (users.size === 0) throw new Error("no USERNAME:PASSWORD line");
  const nobody = digest("");
  return (username, password) => {
    const want = users.get(username);
    // compared even for an unknown name, so that a miss takes as long as a wrong password
    const same = timingSafeEqual(want ?? nobody, digest(password));
    return want !== undefined && same;
  };
}

function digest(s: string): Uint8Array {
  return createHash("sha256").update(s).digest();
}

/** The peer a carrier reports a Wisp client of `t` to. */
export function wispPeer(t: Tenant, version: 1 | 2, d: WispGuestDeps): LinkPeer {
  let session: WispSession | null = null;
  return {
    opened(link): FrameFeed {
      const s = new WispSession(t.session.ensureStack(), {
        send: (p) => link.send(p),
        get backlog() {
          return link.backlog;
        },
        backlogLimit: t.linkBacklogLimit,
        close: () => link.close(),
      }, { version, motd: d.motd, authenticate: d.authenticate });
      session = s;
      t.wispSessions.add(s);
      d.log("info", "Wisp client connected", { tenant: t.id, version, remote: link.remote });
      // packets are handled as they come: the session copies what it keeps
      return (buf, offs, lens, n) => {
        for (let i = 0; i < n; i++) s.input(buf.subarray(offs[i], offs[i] + lens[i]));
      };
    },
    closed() {
      if (!session) return;
      session.close();
      t.wispSessions.delete(session);
      session = null;
      d.log("info", "Wisp client disconnected", { tenant: t.id });
      lastGuestGone(t, d);
    },
    protocolError(reason, fields) {
      d.protocolError();
      d.log("warn", `Wisp client closed: ${reason}`, { tenant: t.id, ...fields });
    },
    dropped: (reason) => t.counters.drop(reason),
    drained: () => session?.drained(),
  };
}

/** A Wisp session of `t` ended: a tenant made for it alone goes (single-user at once, token ones after the grace). */
function lastGuestGone(t: Tenant, d: WispGuestDeps): void {
  if (t.hasGuest || t.deleted) return;
  if (t.ephemeral) {
    d.tenants.delete(t.id);
    t.delete();
  } else if (t.admittedBy === "token") {
    after(d.graceMs, () => {
      if (!t.hasGuest && d.tenants.get(t.id) === t) d.deleteTenant(t.id);
    });
  }
}
