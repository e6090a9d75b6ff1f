import assert from "node:assert/strict";
import { buildServeConfig, HELP, parseHostForward, qemuLines } from "../src/cli.ts";
import { defaultStackConfig, resolvePlan } from "../src/stack/config.ts";
import { EgressPolicy } from "../src/stack/policy.ts";
import { Timer, TimerWheel } from "../src/stack/timer_wheel.ts";
import { ip } from "./_frames.ts";
import { rng } from "./_rng.ts";

Deno.test("cli: --net derives libslirp's layout; flags land in the stack config", () => {
  const c = buildServeConfig({
    net: "192.168.77.0/24",
    mtu: "9000",
    "dns-upstream": ["127.0.0.1:5353"],
    "dns-record": ["db.internal=192.168.77.2"],
    "listen-qemu": ["unix:///tmp/x.sock"],
  });
  assert.equal(c.stack.gateway, "192.168.77.2");
  assert.equal(c.stack.dns, "192.168.77.3");
  assert.equal(c.stack.dhcpStart, "192.168.77.15");
  assert.equal(c.stack.mtu, 9000);
  assert.deepEqual(c.stack.dnsUpstreams, ["127.0.0.1:5353"]);
  assert.ok(c.stack.dnsRecords.some((r) => r.name === "db.internal"));
  assert.deepEqual(c.listen, ["unix:///tmp/x.sock"]);
  assert.deepEqual(buildServeConfig({}).listen, ["tcp://127.0.0.1:8022"]);
  resolvePlan(c.stack);
});

Deno.test("cli: bad flags are refused with a message that names them", () => {
  assert.throws(() => buildServeConfig({ net: "10.0.2.0" }), /Invalid --net/);
  assert.throws(() => buildServeConfig({ "listen-qemu": ["http://x"] }), /Invalid listen address/);
  assert.throws(() => buildServeConfig({ "dns-record": ["nope"] }), /Invalid --dns-record/);
  assert.throws(() => parseHostForward("tcp:127.0.0.1:22"), /Invalid --hostfwd/);
  assert.deepEqual(parseHostForward("tcp::2222-:22"), {
    protocol: "tcp",
    hostAddress: "127.0.0.1",
    hostPort: 2222,
    guestAddress: "",
    guestPort: 22,
  });
  assert.equal(parseHostForward("udp:0.0.0.0:5353-10.0.2.15:53").guestAddress, "10.0.2.15");
  assert.match(HELP, /--listen-qemu/);
  assert.match(qemuLines("tcp://127.0.0.1:8022")[0], /addr.type=inet,addr.host=127.0.0.1,addr.port=8022/);
});

Deno.test("config: invalid plans are refused with clear messages", () => {
  const cases: [Partial<ReturnType<typeof defaultStackConfig>>, RegExp][] = [
    [{ net: "10.0.2.0/33" }, /Invalid network/],
    [{ gateway: "10.0.3.2" }, /not a host address inside/],
    [{ dns: "10.0.2.16" }, /inside the DHCP pool/],
    [{ mtu: 100 }, /Invalid MTU/],
    [{ dhcpPoolSize: 300 }, /runs past the end/],
    [{ gatewayMac: "xx" }, /Invalid gateway MAC/],
  ];
  for (const [patch, re] of cases) {
    assert.throws(() => resolvePlan({ ...defaultStackConfig(), ...patch }), re);
  }
});

Deno.test("policy: first matching rule wins, ports and protocols narrow rules", () => {
  const p = new EgressPolicy({
    defaultAction: "deny",
    rules: [
      { action: "deny", cidr: "127.0.0.1/32", ports: "22" },
      { action: "allow", cidr: "127.0.0.0/8", protocol: "tcp" },
    ],
  });
  assert.equal(p.check("tcp", ip("127.0.0.1"), 80), true);
  assert.equal(p.check("tcp", ip("127.0.0.1"), 22), false);
  assert.equal(p.check("udp", ip("127.0.0.1"), 80), false);
  assert.equal(p.check("tcp", ip("8.8.8.8"), 80), false);
  assert.throws(
    () => new EgressPolicy({ defaultAction: "allow", rules: [{ action: "allow", cidr: "x" }] }),
    /Invalid policy rule/,
  );
});

Deno.test("timer wheel: the next deadline is the first occupied slot after the current one, through random arms, cancels and advances", () => {
  for (const slots of [8, 64, 1024]) {
    const seed = 0x5eed + slots;
    const next = rng(seed);
    const tick = 5;
    const w = new TimerWheel(0, tick, slots);
    const timers = Array.from({ length: 40 }, () => new Timer(() => {}));
    let now = 0;
    // what a walk slot by slot finds: the armed timer whose slot comes first from the one after the current
    const expected = () => {
      const current = Math.floor(w.now / tick);
      const from = (current + 1) % slots;
      let best = Infinity;
      for (const t of timers) if (t.armed) best = Math.min(best, (t.slot - from + slots) % slots);
      return best === Infinity ? Infinity : (current + 1 + best) * tick;
    };
    for (let step = 0; step < 4000; step++) {
      const r = next() % 10;
      const t = timers[next() % timers.length];
      if (r < 5) w.arm(t, now + (next() % (slots * tick * 3)));
      else if (r < 8) w.cancel(t);
      else w.advance(now += next() % (tick * 20));
      assert.equal(w.nextDeadline(), expected(), `slots ${slots}, seed ${seed}, step ${step}`);
    }
  }
});

Deno.test("timer wheel: fires in order at or after deadlines, across rotations; cancel and re-arm", () => {
  const w = new TimerWheel(0, 5, 8);
  const fired: string[] = [];
  const a = new Timer(() => fired.push("a"));
  const b = new Timer(() => fired.push("b"));
  const c = new Timer(() => fired.push("c"));
  w.arm(a, 12);
  w.arm(b, 100); // beyond one rotation of 8 × 5 ms
  w.arm(c, 30);
  w.cancel(c);
  w.advance(11);
  assert.deepEqual(fired, []);
  w.advance(15);
  assert.deepEqual(fired, ["a"]);
  w.arm(a, 50);
  w.advance(99);
  assert.deepEqual(fired, ["a", "a"]);
  w.advance(100);
  assert.deepEqual(fired, ["a", "a", "b"]);
  assert.equal(w.size, 0);
  // a timer that re-arms itself from fire()
  let n = 0;
  const r = new Timer((now) => {
    if (++n < 3) w.arm(r, now + 5);
  });
  w.arm(r, 105);
  for (let t = 100; t <= 200; t += 5) w.advance(t);
  assert.equal(n, 3);
});
