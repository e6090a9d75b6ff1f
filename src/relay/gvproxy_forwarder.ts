/**
 * gvisor-tap-vsock's port-forward API, so that tools written for podman machine and CRC (which talk to
 * gvproxy) work unchanged against the admin API:
 *
 *   POST /services/forwarder/expose    {"local": "127.0.0.1:2222", "remote": "10.0.2.15:22", "protocol": "tcp"}
 *   POST /services/forwarder/unexpose  {"local": "127.0.0.1:2222", "protocol": "tcp"}
 *   GET  /services/forwarder/all       [{"local", "remote", "protocol"}, …]
 *
 * In single-user mode at the top of the admin API (forwards to the latest guest, as `--hostfwd`); in
 * multi-tenant mode under `/v1/tenants/<id>/`. `local` may omit its host (`:2222`: gvproxy's all-interfaces,
 * here 127.0.0.1 — a relay binds loopback unless told otherwise); `remote` names the guest's address and port,
 * IPv4 or `[IPv6]`. gvproxy answers 200 with an empty body; so does this.
 *
 * @module
 */
import type { HostForwardConfig } from "../stack/config.ts";
import type { BoundForward } from "./port_forward.ts";

/** Whoever holds port forwards: a tenant, or the single-user relay. */
export interface ForwardOwner {
  readonly forwards: BoundForward[];
  addForward(f: HostForwardConfig): Promise<BoundForward>;
  removeForward(b: BoundForward): void;
}

/** `"HOST:PORT"`, `":PORT"` or `"[V6]:PORT"` → address and port; throws naming `field`. */
function endpoint(text: unknown, field: string, defaultHost: string): { address: string; port: number } {
  const m = typeof text === "string" ? /^(\[[0-9a-fA-F:.]+\]|[^:[\]]*):(\d{1,5})$/.exec(text.trim()) : null;
  if (!m || Number(m[2]) > 65535) {
    throw new Error(`"${field}" must be "HOST:PORT", got ${JSON.stringify(text)}`);
  }
  return { address: m[1] === "" ? defaultHost : m[1].replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]) };
}

function protocolOf(body: Record<string, unknown>): "tcp" | "udp" {
  const p = body.protocol ?? "tcp";
  if (p !== "tcp" && p !== "udp") throw new Error(`"protocol" must be "tcp" or "udp"`);
  return p;
}

function text(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Answers `sub` ("/expose", "/unexpose", "/all") for `owner`; `check` validates a forward as the admin API's
 * own hostfwd route does.
 */
export async function gvproxyForwarder(
  owner: ForwardOwner,
  sub: string,
  req: Request,
  check: (f: unknown) => HostForwardConfig,
): Promise<Response | null> {
  if (sub === "/all" && req.method === "GET") {
    const list = owner.forwards.map(({ config: f }) => ({
      local: text(f.hostAddress, f.hostPort),
      remote: text(f.guestAddress || "", f.guestPort),
      protocol: f.protocol,
    }));
    return new Response(JSON.stringify(list), { headers: { "content-type": "application/json" } });
  }
  if ((sub !== "/expose" && sub !== "/unexpose") || req.method !== "POST") return null;
  const body = await req.json().catch(() => null) as Record<string, unknown> | null;
  if (typeof body !== "object" || body === null) throw new Error("Body is not a JSON object");
  const protocol = protocolOf(body);
  const local = endpoint(body.local, "local", "127.0.0.1");
  if (sub === "/unexpose") {
    const b = owner.forwards.find((x) =>
      x.config.protocol === protocol && x.config.hostPort === local.port &&
      x.config.hostAddress === local.address
    );
    if (!b) throw new Error(`No ${protocol} forward on ${text(local.address, local.port)}`);
    owner.removeForward(b);
    return new Response(null, { status: 200 });
  }
  const remote = endpoint(body.remote, "remote", "");
  await owner.addForward(check({
    protocol,
    hostAddress: local.address,
    hostPort: local.port,
    guestAddress: remote.address,
    guestPort: remote.port,
  }));
  return new Response(null, { status: 200 });
}
