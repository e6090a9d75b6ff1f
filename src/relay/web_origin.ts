/**
 * Who may open a WebSocket to the relay from a browser. A web page on any site can ask the user's
 * browser to open `ws://127.0.0.1:8080/`: without these checks it would become a guest with the user's
 * loopback behind 10.0.2.2 (cross-site WebSocket hijacking), or reach the relay through a name that
 * resolves to 127.0.0.1 (DNS rebinding). Browsers always send `Origin` and `Host`; other clients usually
 * send no `Origin` at all.
 *
 * @module
 */

/** Hostnames that name this machine's loopback. */
const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

/** An `Origin` value's scheme and host, without the port; null when it does not parse. */
function parseOrigin(origin: string): { scheme: string; host: string; port: string } | null {
  const m = /^(https?):\/\/(\[[0-9a-fA-F:.]+\]|[^/:\[\]]+)(?::(\d{1,5}))?$/.exec(origin.trim());
  return m ? { scheme: m[1], host: m[2].toLowerCase(), port: m[3] ?? "" } : null;
}

/** Whether `origin` is a page served from this machine's loopback (`http://localhost:*`, …). */
export function isLoopbackOrigin(origin: string): boolean {
  const o = parseOrigin(origin);
  return o !== null && (LOOPBACK_HOSTS.has(o.host) || /^127\.\d+\.\d+\.\d+$/.test(o.host));
}

/**
 * Whether a request with this `Origin` header (null when absent) may open a WebSocket: no Origin (not a
 * browser), a loopback origin, or one that `allowed` names — exactly, with a `:*` port wildcard
 * (`https://vm.example:*`), or `*` for every origin.
 */
export function originAllowed(origin: string | null, allowed: readonly string[]): boolean {
  if (origin === null) return true;
  if (allowed.includes("*")) return true;
  if (isLoopbackOrigin(origin)) return true;
  const o = parseOrigin(origin);
  if (!o) return false;
  for (const a of allowed) {
    if (a === origin) return true;
    const w = /^(https?:\/\/[^/]+):\*$/.exec(a);
    if (w && parseOrigin(`${w[1]}`)?.host === o.host && w[1].startsWith(`${o.scheme}://`)) return true;
  }
  return false;
}

/** Validates an `--ws-allow-origin` value; throws with a clear message. */
export function checkAllowedOrigin(a: string): string {
  if (a === "*" || (/^https?:\/\/[^/]+$/.test(a) && (parseOrigin(a) || /:\*$/.test(a)))) return a;
  throw new Error(`Invalid --ws-allow-origin "${a}": expected SCHEME://HOST[:PORT], SCHEME://HOST:* or *`);
}

/**
 * Whether a `Host` header may reach a listener bound to `listenHost`: an IP literal, `localhost`, or the
 * listen address itself. A DNS name that merely resolves here (rebinding) is refused.
 */
export function hostAllowed(host: string | null, listenHost: string): boolean {
  if (host === null) return false;
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::\d{1,5})?$/.exec(host.trim());
  if (!m) return false;
  const name = m[1].toLowerCase();
  if (LOOPBACK_HOSTS.has(name)) return true;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name) || name.startsWith("[")) return true;
  return name === listenHost.toLowerCase().replace(/^\[|\]$/g, "");
}
