/**
 * Tenant admission tokens are JSON Web Tokens (RFC 7519) signed with HS256 (RFC 7518 §3.2): any control plane
 * mints them with its usual JWT library and the secret the relays share. Claims: `sub` (the tenant id),
 * `exp` (Unix seconds), optionally `nbf`, `iat`, and ours: `policy` and `quotas` (the admin API's tenant
 * fields). Any relay sharing the secret admits the tenant the token names, without shared state. Checked with
 * Web Crypto; a header naming another `alg` (`none` included, RFC 8725 §3.1) is refused.
 *
 * @module
 */
import { TENANT_ID_PATTERN, type TenantPolicy, type TenantQuotas } from "./tenant_config.ts";
import { platform } from "../platform/current.ts";

/** What a token asserts (its JWT claims: `sub` is the tenant). */
export interface TokenClaims {
  /** Tenant id (the JWT's `sub`). */
  tenant: string;
  /** Expiry, Unix seconds. */
  exp: number;
  policy?: TenantPolicy;
  quotas?: TenantQuotas;
}

/** The JOSE header of every token the relay signs. */
const HEADER = b64url(new TextEncoder().encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));

function b64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  try {
    const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

async function key(secret: Uint8Array): Promise<CryptoKey> {
  return await crypto.subtle.importKey(
    "raw",
    secret as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    [
      "sign",
      "verify",
    ],
  );
}

/** Reads a secret file; refuses one shorter than 16 bytes. */
export function readSecretFile(path: string): Uint8Array {
  let text: string;
  try {
    text = platform.readTextFile(path).trim();
  } catch (e) {
    throw new Error(`Cannot read token secret file ${path}: ${(e as Error).message}`);
  }
  const bytes = new TextEncoder().encode(text);
  if (bytes.length < 16) throw new Error(`Token secret in ${path} is shorter than 16 bytes`);
  return bytes;
}

/** Signs `claims` into a JWT (HS256). */
export async function createToken(secret: Uint8Array, claims: TokenClaims): Promise<string> {
  if (!TENANT_ID_PATTERN.test(claims.tenant)) throw new Error(`Invalid tenant id "${claims.tenant}"`);
  const { tenant, exp, policy, quotas } = claims;
  const payload = { sub: tenant, exp, iat: Math.floor(Date.now() / 1000), policy, quotas };
  const signed = `${HEADER}.${b64url(new TextEncoder().encode(JSON.stringify(payload)))}`;
  const sig = new Uint8Array(
    await crypto.subtle.sign("HMAC", await key(secret), new TextEncoder().encode(signed)),
  );
  return `${signed}.${b64url(sig)}`;
}

export type TokenCheck = { ok: true; claims: TokenClaims } | { ok: false; reason: string };

/**
 * Verifies signature, shape and expiry. `secret` may be several (a rotation: the token verifies under any
 * of them). `now` is Unix seconds.
 */
export async function verifyToken(
  secret: Uint8Array | Uint8Array[],
  token: string,
  now = Date.now() / 1000,
): Promise<TokenCheck> {
  const parts = token.split(".");
  if (parts.length !== 3) {
    return { ok: false, reason: "Token is malformed (expected a JWT: header.claims.signature)" };
  }
  const header = unb64url(parts[0]), body = unb64url(parts[1]), sig = unb64url(parts[2]);
  if (!header || !body || !sig) {
    return { ok: false, reason: "Token is malformed (expected a JWT: header.claims.signature)" };
  }
  let alg: unknown;
  try {
    alg = JSON.parse(new TextDecoder().decode(header))?.alg;
  } catch {
    return { ok: false, reason: "Token header is not JSON" };
  }
  // RFC 8725 §3.1: the algorithm is the relay's choice, never the token's
  if (alg !== "HS256") return { ok: false, reason: `Token algorithm ${JSON.stringify(alg)} is not HS256` };
  let valid = false;
  for (const s of Array.isArray(secret) ? secret : [secret]) {
    valid = await crypto.subtle.verify(
      "HMAC",
      await key(s),
      sig as Uint8Array<ArrayBuffer>,
      new TextEncoder().encode(`${parts[0]}.${parts[1]}`),
    );
    if (valid) break;
  }
  if (!valid) return { ok: false, reason: "Token signature is invalid" };
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(new TextDecoder().decode(body));
  } catch {
    return { ok: false, reason: "Token claims are not JSON" };
  }
  if (typeof c !== "object" || c === null || typeof c.sub !== "string" || typeof c.exp !== "number") {
    return { ok: false, reason: "Token claims are incomplete (sub and exp are required)" };
  }
  if (!TENANT_ID_PATTERN.test(c.sub)) return { ok: false, reason: "Token names an invalid tenant id" };
  if (c.exp <= now) return { ok: false, reason: "Token has expired" };
  if (typeof c.nbf === "number" && c.nbf > now) return { ok: false, reason: "Token is not valid yet" };
  const claims: TokenClaims = { tenant: c.sub, exp: c.exp };
  if (c.policy !== undefined) claims.policy = c.policy as TenantPolicy;
  if (c.quotas !== undefined) claims.quotas = c.quotas as TenantQuotas;
  return { ok: true, claims };
}

/** The same JSON value, whatever the order of object keys. */
function sameJson(a: unknown, b: unknown): boolean {
  const norm = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(norm)
      : v && typeof v === "object"
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, norm((v as Record<string, unknown>)[k])]))
      : v;
  return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
}

/**
 * Whether a token's claims agree with a live tenant's spec. A token-created tenant must have exactly the
 * claims (absent = absent); a tenant an operator created accepts a token that claims nothing, or the
 * same policy and quotas it has.
 */
export function claimsMatch(
  spec: { policy?: TenantPolicy; quotas?: TenantQuotas },
  claims: Pick<TokenClaims, "policy" | "quotas">,
  exact: boolean,
): boolean {
  for (const k of ["policy", "quotas"] as const) {
    if (!exact && claims[k] === undefined) continue;
    if (!sameJson(spec[k] ?? null, claims[k] ?? null)) return false;
  }
  return true;
}

/** Parses "90s", "15m", "1h", "7d" into seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhd])$/.exec(text.trim());
  if (!m) throw new Error(`Invalid duration "${text}": expected e.g. 90s, 15m, 1h, 7d`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "s" | "m" | "h" | "d"];
}
