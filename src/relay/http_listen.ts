/**
 * The relay's HTTP listeners (admin API, WebSocket) from their flag's URL: one parser for both, and for the
 * relay on one thread and the main thread of a relay with workers alike.
 *
 * @module
 */
import { platform } from "../platform/current.ts";
import type { HttpServer } from "../platform/platform.ts";

/**
 * Serves `url` (http://HOST:PORT; `ws://` too when `schemes` allows it) with `handler`, which also gets the
 * host as written in the URL (a WebSocket's Host check compares against it). Throws naming `flag`.
 */
export function listenHttp(
  url: string,
  flag: string,
  handler: (req: Request, listenHost: string) => Response | Promise<Response>,
  schemes: "http" | "http|ws" = "http",
): HttpServer {
  const m = new RegExp(`^(?:${schemes}):\\/\\/(\\[[^\\]]+\\]|[^:/]+):(\\d{1,5})\\/?$`).exec(url);
  if (!m) throw new Error(`Invalid ${flag} "${url}": expected http://HOST:PORT`);
  const host = m[1];
  return platform.serveHttp(host.replace(/^\[|\]$/g, ""), Number(m[2]), (req) => handler(req, host));
}
