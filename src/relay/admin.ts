/**
 * The admin API, on its own listener, behind a bearer token:
 *   GET    /healthz                              liveness (no token needed)
 *   GET    /metrics                              Prometheus text format
 *   GET    /v1/tenants                           list
 *   POST   /v1/tenants                           create: {"id", "policy", "quotas", "hostfwd", "net", "mtu"}
 *   GET    /v1/tenants/<id>                      details and stats
 *   GET    /v1/tenants/<id>/flows                its TCP connections (state, window, cwnd, RTT, queues)
 *   DELETE /v1/tenants/<id>                      delete (closes its guest, flows, forwards, socket)
 *   POST   /v1/tenants/<id>/hostfwd              add a forward: {"rule": "tcp::2222-:22"}
 *   DELETE /v1/tenants/<id>/hostfwd/<proto>/<hostPort>
 *   POST   [/v1/tenants/<id>]/services/forwarder/expose|unexpose, GET …/all   gvproxy's forwarder API
 *   POST   /v1/drain                             stop admitting (readiness false); live guests carry on
 *   GET    /readyz                               200 "ready", 503 "draining" (no token, as /healthz)
 *   POST   /v1/tenants/<id>/capture              start a pcap capture: {"path"?} → {"path"}
 *   DELETE /v1/tenants/<id>/capture              stop it → {"path", "frames"}
 * Errors are JSON: {"error": "…"}.
 *
 * @module
 */
import { gvproxyForwarder } from "./gvproxy_forwarder.ts";
import { checkHostForward } from "../stack/config.ts";
import type { RelayView } from "./relay_view.ts";
import { renderMetrics } from "./metrics.ts";
import { platform } from "../platform/current.ts";
import { listenHttp } from "./http_listen.ts";
import type { HttpServer } from "../platform/platform.ts";

/** A JSON response (errors are `{"error": "…"}`). */
export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body, null, 2), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Constant-time comparison of two strings (bearer tokens). */
function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let d = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) d |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return d === 0;
}

/**
 * Where a capture named `requested` goes: a file name inside `dir`, or an absolute path whose directory is
 * `dir` itself — never elsewhere (the admin API must not become a way to write files anywhere).
 */
export function capturePath(dir: string, requested: string): string {
  const base = platform.realPath(dir);
  let name = requested;
  if (requested.includes("/")) {
    const i = requested.lastIndexOf("/");
    const parent = requested.slice(0, i) || "/";
    let real: string;
    try {
      real = platform.realPath(parent);
    } catch {
      throw new Error(`Capture path ${requested} is outside --capture-dir ${dir}`);
    }
    if (real !== base) throw new Error(`Capture path ${requested} is outside --capture-dir ${dir}`);
    name = requested.slice(i + 1);
  }
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$/.test(name)) {
    throw new Error(`Invalid capture file name "${name}": letters, digits, "_", "-", "."`);
  }
  return `${base}/${name}`;
}

export class AdminApi {
  #relay: RelayView;
  #token: string;

  constructor(relay: RelayView, token: string) {
    this.#relay = relay;
    this.#token = token;
  }

  listen(url: string): { server: HttpServer; url: string } {
    const server = listenHttp(url, "--admin", (req) => this.handle(req));
    return { server, url: `http://${server.hostname}:${server.port}` };
  }

  async handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname.replace(/\/+$/, "") || "/";
    if (path === "/healthz" && req.method === "GET") return new Response("ok\n");
    // readiness (a balancer's probe): false once draining, while /healthz stays true until the process ends
    if (path === "/readyz" && req.method === "GET") {
      return this.#relay.draining ? new Response("draining\n", { status: 503 }) : new Response("ready\n");
    }
    const auth = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
    if (!this.#token || !auth || !sameSecret(auth, this.#token)) {
      this.#relay.log("warn", "admin request refused: missing or wrong bearer token", { path });
      return json(401, { error: "Missing or wrong bearer token" });
    }
    try {
      return await this.#route(req, path);
    } catch (e) {
      return json(400, { error: (e as Error).message });
    }
  }

  async #route(req: Request, path: string): Promise<Response> {
    const r = this.#relay;
    if (path === "/v1/drain" && req.method === "POST") {
      return json(202, { draining: true, guests: r.drain() });
    }
    if (path === "/metrics" && req.method === "GET") {
      return new Response(renderMetrics(r), { headers: { "content-type": "text/plain; version=0.0.4" } });
    }
    if (path === "/v1/tenants") {
      if (req.method === "GET") {
        return json(
          200,
          [...r.tenants.values()].map((t) => ({ ...r.tenantEndpoints(t), connected: t.hasGuest })),
        );
      }
      if (req.method === "POST") {
        const body = await req.json().catch(() => {
          throw new Error("Body is not JSON");
        });
        if (r.draining) return json(503, { error: "The relay is draining: it admits no new tenants" });
        if (r.tenants.has(body?.id)) return json(409, { error: `Tenant "${body.id}" already exists` });
        if (r.atTenantLimit) {
          return json(503, { error: `The relay is at its limit of ${r.maxTenants} tenants` });
        }
        const t = await r.createTenant(body);
        return json(201, r.tenantEndpoints(t));
      }
      return json(405, { error: `${req.method} not allowed here` });
    }
    const gv = /^\/services\/forwarder(\/[a-z]+)$/.exec(path);
    if (gv) {
      const owner = r.singleUserForwards;
      if (!owner) return json(404, { error: "Multi-tenant mode: use /v1/tenants/<id>/services/forwarder/…" });
      return await gvproxyForwarder(owner, gv[1], req, checkHostForward) ??
        json(405, { error: `${req.method} not allowed on ${path}` });
    }
    const m = /^\/v1\/tenants\/([^/]+)(\/.*)?$/.exec(path);
    if (!m) return json(404, { error: `No route ${path}` });
    let id: string;
    try {
      id = decodeURIComponent(m[1]);
    } catch {
      return json(400, { error: "Bad %-encoding in the tenant id" });
    }
    const t = r.tenants.get(id);
    if (!t) return json(404, { error: `No tenant "${id}"` });
    const sub = m[2] ?? "";
    if (sub === "" && req.method === "GET") return json(200, { ...r.tenantEndpoints(t), ...t.stats() });
    if (sub === "" && req.method === "DELETE") {
      r.deleteTenant(t.id);
      return new Response(null, { status: 204 });
    }
    if (sub === "/stats" && req.method === "GET") return json(200, t.stats());
    if (sub === "/flows" && req.method === "GET") {
      return json(200, { tcp: t.stack?.inspectTcp() ?? [] });
    }
    if (sub === "/hostfwd" && req.method === "POST") {
      const body = await req.json().catch(() => ({}));
      if (typeof body?.rule !== "string") {
        throw new Error('Body must be {"rule": "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT"}');
      }
      const f = await t.addForward(r.parseForward(body.rule));
      return json(201, f.config);
    }
    const fm = /^\/hostfwd\/(tcp|udp)\/(\d+)$/.exec(sub);
    if (fm && req.method === "DELETE") {
      const f = t.forwards.find((x) => x.config.protocol === fm[1] && x.config.hostPort === Number(fm[2]));
      if (!f) return json(404, { error: `No ${fm[1]} forward on host port ${fm[2]}` });
      t.removeForward(f);
      return new Response(null, { status: 204 });
    }
    const tgv = /^\/services\/forwarder(\/[a-z]+)$/.exec(sub);
    if (tgv) {
      return await gvproxyForwarder(t, tgv[1], req, checkHostForward) ??
        json(405, { error: `${req.method} not allowed on ${path}` });
    }
    if (sub === "/capture" && req.method === "POST") {
      const body = await req.json().catch(() => ({}));
      if (body?.path !== undefined && typeof body.path !== "string") {
        throw new Error('"path" must be a string');
      }
      const path = capturePath(r.captureDir, body?.path ?? `slirp-${t.id}-${Date.now()}.pcap`);
      let c;
      try {
        c = t.startCapture(path);
      } catch (e) {
        if (platform.alreadyExists(e)) return json(409, { error: `${path} already exists` });
        throw new Error(`Cannot create ${path}: ${(e as Error).message}`);
      }
      return json(201, { path: c.path });
    }
    if (sub === "/capture" && req.method === "DELETE") {
      const c = t.stopCapture();
      if (!c) return json(404, { error: "No capture running" });
      return json(200, { path: c.path, frames: c.frames });
    }
    if (
      sub === "" || sub === "/stats" || sub === "/flows" || sub === "/hostfwd" || sub === "/capture" || fm
    ) {
      return json(405, { error: `${req.method} not allowed on ${path}` });
    }
    return json(404, { error: `No route ${req.method} ${path}` });
  }
}
