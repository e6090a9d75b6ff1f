/**
 * The Wisp reference server (@mercuryworkshop/wisp-js's own, under Node) for the differential test in
 * tests/wisp_test.ts: loopback allowed (the test's servers live there), names resolved only through the
 * test's DNS responder. Usage: node wisp_js_server.mjs DNS_IP:PORT — prints "ready PORT".
 */
import http from "node:http";
import { logging, server as wisp } from "@mercuryworkshop/wisp-js/server";

logging.set_level(logging.ERROR);
Object.assign(wisp.options, {
  allow_loopback_ips: true,
  dns_method: "resolve",
  dns_servers: [process.argv[2]],
  dns_result_order: "ipv4first",
});
const server = http.createServer((_req, res) => res.writeHead(404).end());
server.on("upgrade", (req, socket, head) => wisp.routeRequest(req, socket, head));
server.listen(0, "127.0.0.1", () => console.log(`ready ${server.address().port}`));
