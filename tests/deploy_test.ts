/**
 * The deployment files (deploy/): every Kubernetes manifest validates against the Kubernetes schemas
 * (kubernetes-models' validate(); no cluster exists here), the pieces agree with each other (probes on the
 * admin port's /readyz and /healthz, a grace period longer than the drain), and the relay accepts the
 * ConfigMap's relay.json — started with it, its paths and addresses pointed at a temporary directory and
 * loopback.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1";
import { ConfigMap, Secret, Service } from "kubernetes-models/v1";
import { RelayProcess } from "./_relay_process.ts";

const MANIFESTS = new URL("../deploy/kubernetes.yaml", import.meta.url);
// deno-lint-ignore no-explicit-any
type Doc = any;
const docs: Doc[] = parseAllDocuments(await Deno.readTextFile(MANIFESTS)).map((d) => d.toJSON());
const byKind = (kind: string): Doc => docs.find((d) => d.kind === kind);

Deno.test("deploy/kubernetes.yaml: every manifest validates against the Kubernetes schemas", () => {
  const models: Record<string, new (d: Doc) => { validate(): void }> = {
    Deployment,
    Service,
    ConfigMap,
    Secret,
  };
  assert.deepEqual(docs.map((d) => d.kind).sort(), ["ConfigMap", "Deployment", "Secret", "Service"]);
  for (const d of docs) {
    const Model = models[d.kind];
    assert.ok(Model, `no schema for ${d.kind}`);
    new Model(d).validate(); // throws with the schema's complaint
  }
  // the validation has teeth: a broken Deployment is refused
  const broken = structuredClone(byKind("Deployment"));
  broken.spec.replicas = "three";
  assert.throws(() => new Deployment(broken).validate());
});

Deno.test("deploy/kubernetes.yaml: probes on the admin port, a grace period longer than the drain", () => {
  const deploy = byKind("Deployment");
  const config = JSON.parse(byKind("ConfigMap").data["relay.json"]);
  const c = deploy.spec.template.spec.containers[0];
  const admin = c.ports.find((p: Doc) => p.name === "admin");
  assert.equal(new URL(config.admin).port, String(admin.containerPort));
  assert.equal(
    new URL(config["listen-ws"][0]).port,
    String(c.ports.find((p: Doc) => p.name === "guests").containerPort),
  );
  assert.deepEqual(c.readinessProbe.httpGet, { path: "/readyz", port: "admin" });
  assert.deepEqual(c.livenessProbe.httpGet, { path: "/healthz", port: "admin" });
  assert.ok(deploy.spec.template.spec.terminationGracePeriodSeconds > config["drain-timeout"]);
  // every path the config names lies on a volume the pod mounts
  const mounts: string[] = c.volumeMounts.map((m: Doc) => m.mountPath);
  for (
    const path of [config["admin-token-file"], ...config["token-secret-file"], config["tenant-socket-dir"]]
  ) {
    assert.ok(mounts.some((m) => path.startsWith(m)), `${path} is on a mounted volume`);
  }
  assert.ok(c.args.includes(`${mounts.find((m) => m.endsWith("/config"))}/relay.json`));
});

Deno.test({
  name: "deploy/kubernetes.yaml: the relay starts with the ConfigMap's relay.json",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "slirp-deploy-" });
    const config = JSON.parse(byKind("ConfigMap").data["relay.json"]);
    const secrets = byKind("Secret").stringData;
    await Deno.writeTextFile(`${dir}/token-secret`, secrets["token-secret"]);
    await Deno.writeTextFile(`${dir}/admin-token`, secrets["admin-token"]);
    Object.assign(config, {
      "listen-ws": ["http://127.0.0.1:0"],
      "admin": "http://127.0.0.1:0",
      "token-secret-file": [`${dir}/token-secret`],
      "admin-token-file": `${dir}/admin-token`,
      "tenant-socket-dir": `${dir}/sockets`,
      "capture-dir": dir,
      "dns-upstream": ["127.0.0.1:9"],
    });
    await Deno.writeTextFile(`${dir}/relay.json`, JSON.stringify(config));
    const relay = await RelayProcess.start(["--config", `${dir}/relay.json`, "--instance", "pod-0"], {
      ready: /admin API on http:\/\/127\.0\.0\.1:\d+/,
    });
    try {
      const admin = /admin API on (http:\/\/127\.0\.0\.1:\d+)/.exec(relay.stdout)![1];
      assert.equal(await fetch(`${admin}/readyz`).then((r) => r.text()), "ready\n");
      assert.match(relay.stdout, /multi-tenant mode/);
    } finally {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("docker/: the Dockerfile's runtime stage is non-root with exec-form entrypoint and health check; compose.yaml parses and wires the guest to the relay", async () => {
  const dockerfile = await Deno.readTextFile(new URL("../docker/Dockerfile", import.meta.url));
  const final = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
  assert.match(final, /\nUSER \d+:\d+\n/);
  assert.doesNotMatch(final, /\nUSER 0/);
  assert.match(final, /\nENTRYPOINT \["\/slirp-relay"\]\n/, "exec form: the relay is PID 1 and gets SIGTERM");
  assert.match(
    final,
    /\nHEALTHCHECK [^\n]*CMD \["\/slirp-relay", "health", "http:\/\/127\.0\.0\.1:8081\/healthz"\]/,
  );
  // the CMD's admin listener is the one the health check asks
  assert.match(final, /"--admin", "http:\/\/127\.0\.0\.1:8081"/);
  const [doc] = parseAllDocuments(
    await Deno.readTextFile(new URL("../docker/compose.yaml", import.meta.url)),
  );
  const compose = doc.toJS() as {
    services: Record<string, { command?: string[]; ports?: string[]; depends_on?: Record<string, unknown> }>;
  };
  assert.ok(compose.services.relay.ports?.includes("127.0.0.1:8022:8022"));
  assert.ok("relay" in (compose.services.guest.depends_on ?? {}));
  assert.match(compose.services.guest.command!.join(" "), /addr\.host=relay,addr\.port=8022/);
});
