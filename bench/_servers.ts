/**
 * The benchmarks' host servers (an echo and an endless source on 127.0.0.1) as their own process: a load
 * generator's busy event loop must not delay them, nor they its timing. Prints {"echoPort","sourcePort"}.
 */
import { startServers } from "./_harness.ts";

console.log(JSON.stringify(startServers()));
await new Promise(() => {}); // until killed
