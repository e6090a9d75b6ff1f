/**
 * Admission: which tenant a new guest connection belongs to, and whether it may have it. A stream guest is
 * routed by the socket it reached; a WebSocket guest by its path, its browser headers (web_origin.ts) and,
 * in multi-tenant mode, a token whose claims become (or must match) the tenant's policy and quotas.
 * Carrying the guest's frames afterwards is the transport's (src/transport/).
 *
 * @module
 */
import type { Logger } from "../common/logger.ts";
import type { Tenant } from "./tenant.ts";
import { json } from "./admin.ts";
import { claimsMatch, type TokenClaims, verifyToken } from "./tokens.ts";
import { hostAllowed, originAllowed } from "./web_origin.ts";
import type { WebSocketFramingKind } from "../transport/websocket_framing.ts";

/** Wisp v2 clients offer this subprotocol (v1 clients offer none). */
const WISP_V2_PROTOCOL = "wisp-v2";
/** The subprotocol of emscripten's sockets (container2wasm, QEMU built to wasm): the byte-stream framing. */
const BYTE_STREAM_PROTOCOL = "binary";

/** How long a token-created tenant waits for its guest's upgrade to finish before it is removed. */
const UPGRADE_WAIT_MS = 10_000;

/** The relay is at one of its relay-wide limits: the request may succeed later (HTTP 503). */
export class RelayFullError extends Error {}

/** What admission needs of the relay. */
export interface AdmissionDeps {
  readonly multiTenant: boolean;
  readonly tenants: ReadonlyMap<string, Tenant>;
  /**
   * True when the relay is at its tenant limit and no single-user session can make room (one waiting for
   * its guest to come back is released first).
   */
  noRoomForSession(): boolean;
  readonly maxTenants: number;
  readonly log: Logger;
  /** HMAC secret of tenant tokens; without it no token admits anyone. */
  /** The secrets a token may be signed with (several during a rotation). */
  readonly tokenSecret?: Uint8Array | Uint8Array[];
  /** Web origins allowed besides loopback pages (--ws-allow-origin). */
  readonly wsAllowOrigin?: string[];
  /** How long a tenant outlives its guest. */
  readonly graceMs: number;
  /** A fresh single-user tenant (registered). */
  ephemeralTenant(): Tenant;
  createTenant(raw: unknown, admittedBy: "admin" | "token"): Promise<Tenant>;
  deleteTenant(id: string): boolean;
}

/**
 * A WebSocket guest admitted to `tenant`; `protocol` to answer with; how its frames ride messages; the
 * session ends at `expiresAt`.
 */
export interface WebSocketAdmission {
  tenant: Tenant;
  protocol?: string;
  framing: WebSocketFramingKind;
  /** For a Wisp session: the version the client speaks. */
  wispVersion?: 1 | 2;
  /** When the admitting token expires (ms since the epoch), or Infinity. */
  expiresAt: number;
}

export class Admission {
  #d: AdmissionDeps;

  constructor(deps: AdmissionDeps) {
    this.#d = deps;
  }

  /**
   * The tenant of a stream guest that connected to `tenant`'s own socket (null: the shared listener of
   * single-user mode), or the reason it is refused.
   */
  stream(tenant: Tenant | null, remote: string): Tenant | string {
    if (tenant) return tenant;
    if (this.#d.multiTenant) {
      this.#d.log(
        "warn",
        "stream guest refused: in multi-tenant mode guests connect to their tenant's own socket",
        { remote },
      );
      return "multi-tenant";
    }
    if (this.#d.noRoomForSession()) {
      this.#d.log("warn", "stream guest refused: the relay is at its tenant limit", {
        remote,
        limit: this.#d.maxTenants,
      });
      return "tenant-limit";
    }
    return this.#d.ephemeralTenant();
  }

  /**
   * Admits a WebSocket request on a listener bound to `listenHost`, or answers it (403 for a foreign page,
   * 401/403 for tokens, 404 for unknown paths, 409 for claims that differ from a live tenant's, 426 for a
   * request that is not an upgrade, 503 at the tenant limit). Paths: `/` and `/v1/tenants/<id>/ws` carry
   * one frame per message unless the client offers the `binary` subprotocol; `/stream` and
   * `/v1/tenants/<id>/stream` carry the byte stream.
   */
  async webSocket(req: Request, listenHost: string): Promise<WebSocketAdmission | Response> {
    const d = this.#d;
    const url = new URL(req.url);
    const isUpgrade = req.headers.get("upgrade")?.toLowerCase() === "websocket";
    const refusal = this.#refuseBrowser(req, listenHost);
    if (refusal) {
      d.log("warn", "WebSocket refused: " + refusal, {
        origin: req.headers.get("origin"),
        host: req.headers.get("host"),
        path: url.pathname,
      });
      return json(403, { error: `Refused: ${refusal}` });
    }
    const notUpgrade = () =>
      new Response("slirp-relay: connect with a WebSocket (one Ethernet frame per binary message)\n", {
        status: 426,
      });
    // [_, id, carrier, token?]: a Wisp client's URL must end in "/" (wisp-js refuses others), so its token
    // may come as the last segment, /v1/tenants/<id>/wisp/<token>/
    const named = /^\/v1\/tenants\/([^/]+)\/(ws|stream|wisp)\/?$/.exec(url.pathname) ??
      /^\/v1\/tenants\/([^/]+)\/(wisp)\/([^/]+)\/$/.exec(url.pathname);
    const shared = /^\/(stream|wisp)?\/?$/.exec(url.pathname);
    const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((s) => s.trim())
      .filter(Boolean);
    const carrier = named?.[2] ?? shared?.[1];
    const framing: WebSocketFramingKind = carrier === "wisp"
      ? "wisp"
      : offered.includes(BYTE_STREAM_PROTOCOL) || carrier === "stream"
      ? "byte-stream"
      : "frame-per-message";
    const wispVersion = framing !== "wisp" ? undefined : offered.includes(WISP_V2_PROTOCOL) ? 2 : 1;
    // browsers fail a handshake whose answer does not name one of the offered subprotocols
    const echo = wispVersion === 2
      ? WISP_V2_PROTOCOL
      : framing === "byte-stream" && offered.includes(BYTE_STREAM_PROTOCOL)
      ? BYTE_STREAM_PROTOCOL
      : undefined;
    if (shared && !d.multiTenant) {
      if (!isUpgrade) return notUpgrade();
      if (d.noRoomForSession()) {
        d.log("warn", "WebSocket refused: the relay is at its tenant limit", { limit: d.maxTenants });
        return json(503, { error: `The relay is at its limit of ${d.maxTenants} guests` });
      }
      return { tenant: d.ephemeralTenant(), protocol: echo, framing, wispVersion, expiresAt: Infinity };
    }
    if (!named) {
      return json(404, {
        error: d.multiTenant
          ? "Use /v1/tenants/<id>/ws (or /stream, /wisp/) with a token"
          : "Use /, /stream, /wisp/ or /v1/tenants/<id>/ws (or /stream, /wisp/)",
      });
    }
    let id: string;
    try {
      id = decodeURIComponent(named[1]);
    } catch {
      return json(400, { error: "Bad %-encoding in the tenant id" });
    }
    if (!d.multiTenant) {
      const t = d.tenants.get(id);
      if (!t) return json(404, { error: `No tenant "${id}"` });
      if (!isUpgrade) return notUpgrade();
      return { tenant: t, protocol: echo, framing, wispVersion, expiresAt: Infinity };
    }
    const fromProto = offered.find((p) => p.includes(".") && p !== WISP_V2_PROTOCOL);
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
    const token = url.searchParams.get("token") ?? named[3] ?? bearer ?? fromProto;
    if (!token) {
      d.log("warn", "WebSocket refused: no token", { tenant: id });
      return json(401, {
        error: "A token is required (?token=, Authorization: Bearer, or Sec-WebSocket-Protocol)",
      });
    }
    if (!d.tokenSecret) return json(403, { error: "This relay admits no tokens (no --token-secret-file)" });
    const check = await verifyToken(d.tokenSecret, token);
    if (!check.ok) {
      d.log("warn", "WebSocket refused: bad token", { tenant: id, reason: check.reason });
      return json(check.reason === "Token has expired" ? 401 : 403, { error: check.reason });
    }
    if (check.claims.tenant !== id) {
      d.log("warn", "WebSocket refused: token for another tenant", {
        tenant: id,
        tokenTenant: check.claims.tenant,
      });
      return json(403, { error: "Token is for another tenant" });
    }
    // the token is good: only now does a non-WebSocket request learn it must upgrade
    if (!isUpgrade) return notUpgrade();
    const admitted = await this.#admitByToken(id, check.claims);
    if (admitted instanceof Response) return admitted;
    return {
      tenant: admitted,
      protocol: echo ?? (fromProto === token ? token : undefined),
      framing,
      wispVersion,
      expiresAt: check.claims.exp * 1000,
    };
  }

  /**
   * The tenant a valid token admits, with the token's claims applied: created if absent; if it exists, its
   * policy and quotas must be the ones the token carries. A token-created tenant with no guest is
   * re-created under the new claims; a live one, or one an operator created, refuses a token that
   * claims something else (409) rather than run a guest under rules its token did not grant.
   */
  async #admitByToken(id: string, claims: TokenClaims): Promise<Tenant | Response> {
    const d = this.#d;
    let t = d.tenants.get(id);
    if (t && !claimsMatch(t.spec, claims, t.admittedBy === "token")) {
      if (t.admittedBy === "token" && !t.hasGuest) {
        d.deleteTenant(id);
        t = undefined;
      } else {
        d.log("warn", "WebSocket refused: token claims differ from the live tenant's", { tenant: id });
        return json(409, { error: `Token claims (policy, quotas) differ from tenant "${id}"'s` });
      }
    }
    if (t) return t;
    try {
      t = await d.createTenant({ id, policy: claims.policy, quotas: claims.quotas }, "token");
    } catch (e) {
      return json(e instanceof RelayFullError ? 503 : 400, { error: (e as Error).message });
    }
    // admitted but no guest ever attached (the upgrade failed, the client went away): it goes after the grace
    this.#removeIfUnused(t);
    return t;
  }

  /**
   * Removes token-created tenant `t` unless a guest attached within the grace period (at least
   * {@linkcode UPGRADE_WAIT_MS}: the upgrade itself must have time to finish).
   */
  #removeIfUnused(t: Tenant): void {
    const timer = setTimeout(() => {
      if (!t.deleted && !t.hasGuest && this.#d.tenants.get(t.id) === t) this.#d.deleteTenant(t.id);
    }, Math.max(this.#d.graceMs, UPGRADE_WAIT_MS));
    t.closers.push(() => clearTimeout(timer));
  }

  /**
   * Why a browser's request may not open a guest link, or null when it may: a page from another site
   * (`Origin`), or a name that only resolves here (`Host`, DNS rebinding). See web_origin.ts.
   */
  #refuseBrowser(req: Request, listenHost: string): string | null {
    const allowed = this.#d.wsAllowOrigin;
    if (this.#d.multiTenant && allowed === undefined) return null; // tokens decide
    const origin = req.headers.get("origin");
    if (!originAllowed(origin, allowed ?? [])) return `origin ${origin} is not allowed (--ws-allow-origin)`;
    if (!this.#d.multiTenant && !hostAllowed(req.headers.get("host"), listenHost)) {
      return `Host ${req.headers.get("host")} does not name this relay`;
    }
    return null;
  }
}

/**
 * Closes a token-admitted WebSocket guest (4401) when its token expires, after `ended` logs it; returns the
 * cancel. Nothing for a session without an expiry.
 */
export function endAtExpiry(ws: WebSocket, expiresAt: number, ended: () => void): () => void {
  if (expiresAt === Infinity) return () => {};
  let timer: ReturnType<typeof setTimeout> | undefined;
  const check = () => {
    // setTimeout holds at most ~24.8 days: longer tokens are checked again then
    const left = expiresAt - Date.now();
    if (left <= 0) {
      ended();
      ws.close(4401, "token expired");
      return;
    }
    timer = setTimeout(check, Math.min(left, 0x7fffffff));
  };
  check();
  return () => clearTimeout(timer);
}
