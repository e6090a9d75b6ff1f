/**
 * The relay's CLI under V8's sampling heap profiler, garbage included (not a test). Every end-to-end
 * bench starts it instead of the plain CLI when told to:
 *
 *   SLIRP_RELAY_ENTRY=bench/_relay_alloc.ts SLIRP_ALLOC_PROFILE=/tmp/alloc.json deno run -A bench/profile_tcp.ts down
 *
 * On exit the profile (Chrome DevTools "allocation sampling" JSON: a call tree with self sizes) is written
 * to SLIRP_ALLOC_PROFILE (default /tmp/slirp-alloc.json). `SLIRP_ALLOC_SURVIVORS=1` leaves out what died
 * young (freed by a scavenge): what is left outlived the young generation — kept for good, or promoted to
 * the old generation and freed there by a full collection, the costly kind of garbage.
 */
import inspector from "node:inspector";
import { main } from "../src/cli.ts";

const session = new inspector.Session();
session.connect();
const post = <T>(method: string, params?: Record<string, unknown>) =>
  new Promise<T>((resolve, reject) =>
    session.post(method, params ?? {}, (e: Error | null, r: unknown) => (e ? reject(e) : resolve(r as T)))
  );
await post("HeapProfiler.enable");
await post("HeapProfiler.startSampling", {
  samplingInterval: 8192,
  includeObjectsCollectedByMinorGC: Deno.env.get("SLIRP_ALLOC_SURVIVORS") !== "1",
  includeObjectsCollectedByMajorGC: true,
});
const code = await main(Deno.args);
const { profile } = await post<{ profile: unknown }>("HeapProfiler.stopSampling");
const path = Deno.env.get("SLIRP_ALLOC_PROFILE") ?? "/tmp/slirp-alloc.json";
Deno.writeTextFileSync(path, JSON.stringify(profile));
console.error(`allocation profile written to ${path}`);
Deno.exit(code);
