/**
 * Tenant admission tokens: `base64url(JSON claims) + "." + base64url(HMAC-SHA256(secret, first part))`,
 * signed and checked with Web Crypto. Any relay sharing the secret admits the tenant the token names, with
 * the policy and quotas it carries, without shared state.
 *
 * @module
 */
import { TENANT_ID_PATTERN, type TenantPolicy, type TenantQuotas } from "./tenant_config.ts";
import { platform } from "../platform/current.ts";

/** What a token asserts. */
export interface TokenClaims {
  /** Token format version. */
  v: 1;
  /** Tenant id. */
  tenant: string;
  /** Expiry, Unix seconds. */
  exp: number;
  policy?: TenantPolicy;
  quotas?: TenantQuotas;
}

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

/** Signs `claims` into a token string. */
export async function createToken(secret: Uint8Array, claims: Omit<TokenClaims, "v">): Promise<string> {
  if (!TENANT_ID_PATTERN.test(claims.tenant)) throw new Error(`Invalid tenant id "${claims.tenant}"`);
  const body = b64url(new TextEncoder().encode(JSON.stringify({ v: 1, ...claims })));
  const sig = new Uint8Array(
    await crypto.subtle.sign("HMAC", await key(secret), new TextEncoder().encode(body)),
  );
  return `${body}.${b64url(sig)}`;
}

export type TokenCheck = { ok: true; claims: TokenClaims } | { ok: false; reason: string };

/** Verifies signature, shape and expiry. `now` is Unix seconds. */
export async function verifyToken(
  secret: Uint8Array,
  token: string,
  now = Date.now() / 1000,
): Promise<TokenCheck> {
  const parts = token.split(".");
  if (parts.length !== 2) return { ok: false, reason: "Token is malformed" };
  const sig = unb64url(parts[1]);
  const body = unb64url(parts[0]);
  if (!sig || !body) return { ok: false, reason: "Token is malformed" };
  const valid = await crypto.subtle.verify(
    "HMAC",
    await key(secret),
    sig as Uint8Array<ArrayBuffer>,
    new TextEncoder().encode(parts[0]),
  );
  if (!valid) return { ok: false, reason: "Token signature is invalid" };
  let claims: TokenClaims;
  try {
    claims = JSON.parse(new TextDecoder().decode(body));
  } catch {
    return { ok: false, reason: "Token claims are not JSON" };
  }
  if (claims?.v !== 1 || typeof claims.tenant !== "string" || typeof claims.exp !== "number") {
    return { ok: false, reason: "Token claims are incomplete" };
  }
  if (!TENANT_ID_PATTERN.test(claims.tenant)) {
    return { ok: false, reason: "Token names an invalid tenant id" };
  }
  if (claims.exp <= now) return { ok: false, reason: "Token has expired" };
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
