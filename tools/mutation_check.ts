/**
 * Do the tests notice? Applies one-line breakages ("mutants") of promises the README makes to a copy of the
 * tree, runs the tests that should catch each, and prints which were caught. Every mutant must be caught: a
 * surviving one is a promise without a test. The list holds the twelve breakages of the test-coverage issue
 * and later regressions worth guarding.
 *
 *   ./tools/deno run -A tools/mutation_check.ts            # every mutant, its listed test files
 *   ./tools/deno run -A tools/mutation_check.ts grace flows  # the mutants whose name contains a word
 *   ./tools/deno run -A tools/mutation_check.ts --all-tests  # each mutant against the whole suite (slow)
 *
 * The tests run once unbroken first: a test that fails there (another fault, a missing tool) catches no
 * mutant, so a breakage counts as caught only when a test that passed without it fails with it.
 *
 * Exit status 1 when a mutant survives or a breakage no longer applies (the code it edits moved).
 */
import { parseArgs } from "node:util";

interface Mutant {
  name: string;
  file: string;
  /** Text that must occur exactly once in `file`. */
  from: string;
  to: string;
  /** Test files expected to fail with the breakage applied. */
  tests: string[];
}

const MUTANTS: Mutant[] = [
  {
    name:
      "send buffer: a jumbo-MTU connection holds 1 MiB (16 segments, all in flight before the guest ACKs)",
    file: "src/stack/tcp/tcp_sender.ts",
    from:
      "    this.sendBuffer = opts.sendBuffer ?? Math.max(DEFAULT_SEND_BUFFER, SEND_BUFFER_SEGMENTS * this.mss);\n",
    to: "    this.sendBuffer = opts.sendBuffer ?? DEFAULT_SEND_BUFFER;\n",
    tests: ["tests/tcp_bounds_test.ts"],
  },
  {
    name: "receive window: 1 MiB, less than a guest's queues hold in flight (window-limited uploads)",
    file: "src/stack/tcp/state.ts",
    from: "export const DEFAULT_RECEIVE_BUFFER = 4 * 1024 * 1024;\n",
    to: "export const DEFAULT_RECEIVE_BUFFER = 1024 * 1024;\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "congestion window: grows with every ACK whether or not the sender filled it",
    file: "src/stack/tcp/congestion.ts",
    from: "    if (this.cwnd >= limit) return;\n",
    to: "",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "TCP: paused host reads resume only when data is acknowledged, not when the window grows",
    file: "src/stack/tcp/tcp_conn.ts",
    from:
      "    if (this.#hostPaused && this.queue.length < this.#sendLimit() / 2 && !this.#outOfBudget()) {\n      this.#resumeHost();\n    }\n  }\n",
    to:
      "    if (this.#hostPaused && flight > seqDiff(this.sndNxt, this.sndUna) && this.queue.length < this.#sendLimit() / 2 && !this.#outOfBudget()) {\n      this.#resumeHost();\n    }\n  }\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "TCP header prediction: an in-order data segment's new window is ignored",
    file: "src/stack/tcp/tcp_conn.ts",
    from: " || (seg.window << this.sndWscale) !== this.sndWnd",
    to: "",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "TCP header prediction: an in-order data segment's new acknowledgment is ignored",
    file: "src/stack/tcp/tcp_conn.ts",
    from: " || seg.ack !== this.sndUna",
    to: "",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "TCP options: aligned timestamps read with the echo in the value's place",
    file: "src/wire/tcp.ts",
    from: "    out.tsEcr = u32(buf, off + TCP_HEADER_LEN + 8);\n",
    to: "    out.tsEcr = u32(buf, off + TCP_HEADER_LEN + 4);\n",
    tests: ["src/wire/wire_test.ts"],
  },
  {
    name: "TCP: a connection idle past the RTO sends its old window at once",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "        this.cc.restartAfterIdle();\n",
    to: "",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "guest link: a jumbo-frame UNIX link keeps the kernel's default buffer (three frames)",
    file: "src/transport/stream.ts",
    from: "    conn.reserveSendBuffer?.(KERNEL_BUFFER_FRAMES * (opts.largestFrameToGuest + 4));\n",
    to: "",
    tests: ["tests/relay_stream_test.ts"],
  },

  {
    name: "header prediction: a repeated frame's IPv4 header checksum is not checked",
    file: "src/stack/tcp/segment_prediction.ts",
    from: "    if (checksumSum(buf, ip, IPV4_HEADER_LEN) !== 0xffff) return null;\n",
    to: "",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "header prediction: a fragment of the flow goes to the connection as a whole segment",
    file: "src/stack/tcp/segment_prediction.ts",
    from: "      (u16(buf, ip + IPV4_FLAGS_FRAG) & 0x3fff) !== 0\n",
    to: "      false\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name:
      "header prediction: a freed connection stays predicted (its four-tuple's next segment draws no reset)",
    file: "src/stack/tcp/tcp_service.ts",
    from: "    this.#predicted.forget(c);\n",
    to: "",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "timer wheel: a slot emptied by a cancel stays marked occupied (the loop wakes for nothing)",
    file: "src/stack/timer_wheel.ts",
    from:
      "    else if ((this.#slots[t.slot] = t.next) === null) this.#occupied[t.slot >>> 5] &= ~(1 << (t.slot & 31));\n",
    to: "    else this.#slots[t.slot] = t.next;\n",
    tests: ["tests/cli_test.ts"],
  },
  {
    name: "timer wheel: the search for the next deadline starts at the first slot of the current word",
    file: "src/stack/timer_wheel.ts",
    from: "    let bits = words[w] & (-1 << (from & 31));\n",
    to: "    let bits = words[w];\n",
    tests: ["tests/cli_test.ts"],
  },
  {
    name:
      "owned loop: a turn that skips its macrotask sleeps on as long as it likes (a setImmediate waits 100 ms)",
    file: "src/host/epoll_loop.ts",
    from: "      this.#macrotaskOwed ? this.#lastMacrotask + MACROTASK_EVERY_MS : Infinity,\n",
    to: "",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name:
      "owned loop: due timers fire after a full epoll_wait batch, before the ready sockets it left unread",
    file: "src/host/epoll_loop.ts",
    from: "const FULL_TURNS_BEFORE_TIMERS = 4;\n",
    to: "const FULL_TURNS_BEFORE_TIMERS = 0;\n",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name:
      "owned loop: a turn's events read the clock of the turn before (the wheel's time moves only when it fires)",
    file: "src/host/epoll_loop.ts",
    from: "        this.#clock?.observe(now);\n",
    to: "",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "host TCP: a burst's large write buffer is kept after the flow goes quiet",
    file: "src/host/epoll_host.ts",
    from: "        deferUntilQuiet(this.#releaseIfQuiet);\n",
    to: "",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "checksum fold: the carry of the first fold step is not added back",
    file: "src/wire/checksum_variants.ts",
    from: "    return (s >>> 16) + (s & 0xffff);\n",
    to: "    return s;\n",
    tests: ["src/wire/checksum_variants_test.ts"],
  },
  {
    name: "UDP batch: a datagram is told the sender of the batch's first",
    file: "src/host/epoll_udp.ts",
    from: "const at = i * NAME_BYTES",
    to: "const at = 0",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "UDP batch: the address room is not restored before a receive (an IPv6 sender is cut short)",
    file: "src/host/epoll_udp.ts",
    from: "      b.prepare();\n",
    to: "",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "sockaddr cache: a connect to another host reuses the last host's address",
    file: "src/host/epoll.ts",
    from: "  if (host !== lastHost) {",
    to: '  if (lastHost === "") {',
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "sockaddr cache: an octet above 255 wraps into another address",
    file: "src/wire/bytes.ts",
    from: "if (n > 255) return null;",
    to: "if (n > 999) return null;",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "guest writer: a send that took part of the bytes is followed by another send at once (EAGAIN)",
    file: "src/transport/stream.ts",
    from: "      void this.#flushWaiting(off, true);\n",
    to: "      void this.#flushWaiting(off, false);\n",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "guest writer: after waiting for room, the rest is sent at once though the socket filled again",
    file: "src/transport/stream.ts",
    from: "          full = n < rest.length;\n",
    to: "          full = false;\n",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "receive blocks: a guest link that ended keeps its block (the thread's set runs dry)",
    file: "src/transport/stream.ts",
    from: "    if (isReceiveBlock(this.buf)) returnReceiveBlock(this.buf);",
    to: "",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "receive blocks: a block taken again holds its last guest's bytes",
    file: "src/wire/checksum_variants.ts",
    from: "RECEIVE_BLOCK_BYTES).fill(0);",
    to: "RECEIVE_BLOCK_BYTES);",
    tests: ["src/wire/checksum_variants_test.ts"],
  },
  {
    name: "TCP: a ring kept for the next flow hands it the last flow's bytes",
    file: "src/common/buffer_pool.ts",
    from: "    return kept.fill(0);",
    to: "    return kept;",
    tests: ["tests/send_queue_test.ts"],
  },
  {
    name: "TCP: a long read of guest segments is acknowledged only after it (no ACK every 64 KiB)",
    file: "src/stack/tcp/tcp_conn.ts",
    from: "if (seqDiff(this.rcvNxt, this.lastAckSent) >= GRO_MAX_BYTES) this.sendAck();",
    to: "if (seqDiff(this.rcvNxt, this.lastAckSent) < 0) this.sendAck();",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "TCP: guest segments acknowledged one by one again (every second segment within a read)",
    file: "src/stack/tcp/tcp_conn.ts",
    from: "        else if (!this.#ackAfterRead) {",
    to: "        else if (this.sendAck(), !this.#ackAfterRead) {",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name:
      "stream frames: a read that filled the buffer but ended inside a frame no longer grows it (one frame a read)",
    file: "src/transport/stream.ts",
    from: "if (this.#filled === this.buf.length) this.#readFilled = true;",
    to: "",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "TCP data without PSH held by the host socket until more comes (never flushed when quiet)",
    file: "src/host/epoll_loop.ts",
    from: "            this.#runQuiet();",
    to: "",
    tests: ["tests/carriers_test.ts"],
  },
  {
    name: "Wisp: any password passes --wisp-credentials",
    file: "src/relay/wisp_guest.ts",
    from: "return want !== undefined && same;",
    to: "return want !== undefined || !same;",
    tests: ["tests/wisp_test.ts"],
  },
  {
    name: "egress quota: the shaped link no longer waits for tokens",
    file: "src/transport/link_wrappers.ts",
    from: "if (head === queue.length && rate.waitMs(1, clock()) === 0) {",
    to: "if (head === queue.length) {",
    tests: ["tests/quotas_test.ts", "tests/multitenant_test.ts"],
  },
  {
    name: "--restrict lets IPv4 flows out",
    file: "src/stack/policy.ts",
    from: "    if (this.restricted) return false;\n    for (const r of this.#rules) {",
    to: "    for (const r of this.#rules) {",
    tests: ["tests/qemu_settings_test.ts"],
  },
  {
    name: "--guestfwd ignored (its address dialled under the policy)",
    file: "src/stack/tcp/tcp_service.ts",
    from: "if (guestForward) return this.#open(path, seg, guestForward.address, guestForward.port);",
    to: "",
    tests: ["tests/qemu_settings_test.ts"],
  },
  {
    name: "IPv6: the tenant's IPv6 policy skipped",
    file: "src/stack/stack.ts",
    from: "if (!this.policy.check6(protocol, a, off, port)) return false;",
    to: "",
    tests: ["tests/ipv6_stack_test.ts"],
  },
  {
    name: "IPv6: a DAD probe answered (the guest's address contested)",
    file: "src/stack/icmpv6_service.ts",
    from: 'if (isUnspecifiedV6(buf, ip.srcOffset)) return s.drop("ndp-dad-probe");',
    to: "",
    tests: ["tests/ipv6_stack_test.ts", "tests/wire_fixtures_test.ts"],
  },
  {
    name: "IPv6: router advertisements without the prefix option (no SLAAC)",
    file: "src/stack/icmpv6_service.ts",
    from: "o += emitPrefixOption(tx, o, p.prefix, p.prefixLength, PREFIX_VALID_SEC, PREFIX_PREFERRED_SEC);",
    to: "",
    tests: ["tests/ipv6_stack_test.ts"],
  },
  {
    name: "IPv6: the host's own addresses pass the multi-tenant guard",
    file: "src/relay/relay.ts",
    from: "!this.#hostAddresses.has6(real) || (allowedByRule && !this.#isForwardPort(p, LOOPBACK_V4, port))",
    to: "true",
    tests: ["tests/ipv6_netns_test.ts"],
  },
  {
    name: "Wisp: a stream skips the tenant's egress policy",
    file: "src/stack/wisp_service.ts",
    from: "!ctx.allowEgress(proto, real, s.port)",
    to: "false",
    tests: ["tests/wisp_test.ts"],
  },
  {
    name: "IPv6 fragments: a fragment taken for a whole packet (no reassembly)",
    file: "src/stack/ipv6_input.ts",
    from: "if (!ip.fragmented) return this.#deliver(buf, ip, srcMac);",
    to: "return this.#deliver(buf, ip, srcMac);",
    tests: ["tests/ipv6_stack_test.ts"],
  },
  {
    name: "IPv6 fragments: the relay's fragments never say more follow (M clear)",
    file: "src/stack/datagram_sender.ts",
    from: "emitIpv6FragmentHeader(tx, l4, protocol, off, off + n < total, id);",
    to: "emitIpv6FragmentHeader(tx, l4, protocol, off, false, id);",
    tests: ["tests/ipv6_stack_test.ts"],
  },
  {
    name: "IPv6 fragments: Neighbor Discovery in fragments acted on (RFC 6980 §5)",
    file: "src/stack/ipv6_input.ts",
    from: "if (again.protocol === IPPROTO_ICMPV6 && isNdpType(whole[again.payloadOffset])) {",
    to: "if (false) {",
    tests: ["tests/ipv6_stack_test.ts"],
  },
  {
    name: "UDP: host sockets not asked for ICMP errors (IP_RECVERR): a closed port is silence",
    file: "src/host/epoll_udp.ts",
    from: "libc().setsockopt(fd, SOL_IP, IP_RECVERR, oneBytes, 4);",
    to: "",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "UDP: a send that meets an earlier datagram's pending ICMP error is not sent again",
    file: "src/host/epoll_udp.ts",
    from: "for (let attempt = 0; attempt < 2; attempt++) {",
    to: "for (let attempt = 1; attempt < 2; attempt++) {",
    tests: ["tests/epoll_test.ts"],
  },
  {
    name: "UDP: an ICMP error about an earlier probe quotes the flow's last port instead of its own",
    file: "src/stack/udp_nat.ts",
    from: "    const dstPort = port ?? f.lastPort;\n",
    to: "    const dstPort = f.lastPort;\n",
    tests: ["tests/ipv6_stack_test.ts"],
  },
  {
    name: "DNS: a refusing upstream is waited out (the timeout) instead of passing the query on",
    file: "src/stack/dns_service.ts",
    from: "if (s.closed || this.#pending.get(p.upstreamId) !== p || !UNREACHABLE.has(code)) return;",
    to: "return;",
    tests: ["tests/dns_forward_test.ts"],
  },
  {
    name: "DNS: every query starts at the first upstream, even when it never answers",
    file: "src/stack/dns_service.ts",
    from: "    this.#preferred = p.upstream;\n",
    to: "",
    tests: ["tests/dns_forward_test.ts"],
  },
  {
    name: "datagram: a guest's offloaded (unfinished) checksums are verified and its segments dropped",
    file: "src/relay/ethernet_session.ts",
    from: "this.ensureStack().guestOffloads = link.offloads ?? false;",
    to: "this.ensureStack().guestOffloads = false;",
    tests: ["tests/carriers_test.ts"],
  },
  {
    name: "workers: a tenant's egress guard ignores the other workers' tenants' ports",
    file: "src/relay/relay.ts",
    from: "if (this.#shared?.portHeld(protocol, port)) return true;",
    to: "",
    tests: ["tests/workers_test.ts"],
  },
  {
    name: "workers: the tenant limit counts only this worker's tenants",
    file: "src/relay/relay.ts",
    from: "return (this.#shared?.tenants ?? this.tenants.size) >= this.maxTenants;",
    to: "return this.tenants.size >= this.maxTenants;",
    tests: ["tests/workers_test.ts"],
  },
  {
    name: "duplicate guest: replace no longer closes the old guest",
    file: "src/relay/ethernet_session.ts",
    from: "if (old && old !== link) old.close();",
    to: "",
    tests: ["tests/relay_behaviour_test.ts"],
  },
  {
    name: "duplicate guest: refuse admits the second guest",
    file: "src/relay/relay.ts",
    from: 'if (t.link && this.#opts.duplicateGuest === "refuse") {',
    to: "if (false) {",
    tests: ["tests/relay_behaviour_test.ts"],
  },
  {
    name: "tenant grace period ignored",
    file: "src/relay/ethernet_session.ts",
    from: "this.#cancelGrace = after(graceMs, release);",
    to: "this.#cancelGrace = after(0, release);",
    tests: ["tests/relay_behaviour_test.ts"],
  },
  {
    name: "a tenant's deny rules ignored",
    file: "src/relay/tenant_config.ts",
    from: 'for (const r of p?.deny ?? []) rules.push(parseRule(r, "deny"));',
    to: "",
    tests: ["tests/policy_table_test.ts"],
  },
  {
    name: "100.64.0.0/10 dropped from the default deny list",
    file: "src/relay/tenant_config.ts",
    from: '  "100.64.0.0/10",\n',
    to: "",
    tests: ["tests/policy_table_test.ts"],
  },
  {
    name: "maxTcpFlows ignored",
    file: "src/relay/tenant_config.ts",
    from: "c.maxTcpFlows = q.maxTcpFlows;",
    to: "",
    tests: ["tests/quotas_test.ts"],
  },
  {
    name: "ICMP policy ignored",
    file: "src/stack/icmp_service.ts",
    from: 'if (!s.policy.check("icmp", real, 0)) {',
    to: "if (false) {",
    tests: ["tests/policy_table_test.ts"],
  },
  {
    name: "GET /v1/tenants/<id>/flows returns []",
    file: "src/relay/admin.ts",
    from: "tcp: t.stack?.inspectTcp() ?? []",
    to: "tcp: []",
    tests: ["tests/relay_behaviour_test.ts"],
  },
  {
    name: "slirp_guests_connected wrong",
    file: "src/relay/metrics.ts",
    from: "tenants.filter((t) => t.hasGuest).length,",
    to: "tenants.length,",
    tests: ["tests/relay_behaviour_test.ts"],
  },
  {
    name: "token quota claims ignored",
    file: "src/relay/admission.ts",
    from: 't = await d.createTenant({ id, policy: claims.policy, quotas: claims.quotas }, "token");',
    to: 't = await d.createTenant({ id, policy: claims.policy }, "token");',
    tests: ["tests/token_admission_test.ts"],
  },
  {
    name: "a guest RST no longer frees its flow",
    file: "src/stack/tcp/tcp_conn.ts",
    from: "        });\n        this.#freeByGuestReset();\n      } else this.sendAck();",
    to: "        });\n      } else this.sendAck();",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "DHCP answers DISCOVER with NAK instead of OFFER",
    file: "src/stack/dhcp_server.ts",
    from: "this.#reply(m, DhcpMessageType.OFFER, l.address, mac, true);",
    to: "this.#reply(m, DhcpMessageType.NAK, l.address, mac, true);",
    tests: ["tests/stack_test.ts"],
  },
  {
    name: "UDP replies reach the guest zeroed",
    file: "src/stack/udp_nat.ts",
    from: "s.sendUdp(src, f.guestIp, port, f.guestPort, data);",
    to: "s.sendUdp(src, f.guestIp, port, f.guestPort, new Uint8Array(data.length));",
    tests: ["tests/stack_test.ts"],
  },
  {
    name: "newFlowsPerSecond not applied to tenants",
    file: "src/relay/tenant_config.ts",
    from: "c.newFlowsPerSecond = q.newFlowsPerSecond;",
    to: "",
    tests: ["tests/quotas_test.ts"],
  },
  {
    name: "--no-host-loopback ignored",
    file: "src/cli.ts",
    from: 'if (flags["no-host-loopback"]) stack.gatewayToLoopback = false;',
    to: "",
    tests: ["tests/cli_flags_test.ts"],
  },
  {
    name: "--udp-idle ignored",
    file: "src/cli.ts",
    from: "stack.udpIdleSec = s;",
    to: "",
    tests: ["tests/cli_flags_test.ts"],
  },
  {
    name:
      "epoll host: a dial's clean-up as a closure assigned to a property (V8 tenures it; every connection outlives the young generation)",
    file: "src/host/epoll_host.ts",
    from: "    s.dialing(es);\n",
    to: "    (s as unknown as { onGone: () => void }).onGone = () => es.close();\n    s.dialing(es);\n",
    tests: ["tests/gc_retention_test.ts"],
  },
  {
    name:
      "stack: its logger as a function literal assigned to a property (the shape tools/closure_rules.ts refuses)",
    file: "src/stack/stack.ts",
    from: "    this.log = this.#logLimited.bind(this);\n",
    to: "    this.log = (level, msg, fields) => this.#logLimited(level, msg, fields);\n",
    tests: ["tests/closure_rules_test.ts"],
  },
  {
    name:
      "spurious timeout: never undone (a late guest's flight is sent again from SND.UNA, the window at one segment)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "    if (this.#timeoutJudged) return false;\n",
    to: "    if (this.#timeoutJudged || seg) return false;\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "F-RTO: never entered (without timestamps a late guest's flight is sent again from SND.UNA)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "      this.#frtoStep = this.tsOk || this.cc.inRecovery ? 0 : 2;\n",
    to: "      this.#frtoStep = 0;\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "F-RTO: a duplicate ACK after the new data resends nothing (a real loss waits for the next RTO)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "    if (step === 2) return false; // conventional recovery is under way since the timeout\n",
    to: "    if (step !== 0) return false;\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "F-RTO: a late ACK of everything sent stays a timeout (cwnd from one segment, ssthresh halved)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "      !this.#frtoLossReported\n",
    to: "      !this.#frtoLossReported && acked < 0\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "F-RTO: a duplicate ACK before the timeout is forgotten (a filled hole judged a late guest)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "      this.#frtoLossReported = this.dupAcks > 0 || !this.sack.empty;\n",
    to: "      this.#frtoLossReported = false;\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "F-RTO: a backoff ends it (a guest late past two RTOs has its flight sent again)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "    } else if (this.#frtoStep === 3) this.#frtoStep = 0;",
    to: "    } else this.#frtoStep = 0;",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name:
      "tail loss probe: also without SACK (its duplicate ACK tells nothing; a late guest's flight resent)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "    if (this.sackOk && this.rtt.hasSample && this.retries === 0) {\n",
    to: "    if (this.rtt.hasSample && this.retries === 0) {\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "tail loss probe: a lone segment does not wait for a delayed ACK (RFC 8985 §7.2 WCDelAckT)",
    file: "src/stack/tcp/tcp_sender.ts",
    from: "(flight <= this.mss && this.queue.length <= flight ? DELAYED_ACK_WORST_MS : 0)",
    to: "(flight <= this.mss && this.queue.length <= flight ? 0 : 0)",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name:
      "timeout: recover not set (go-back-N's duplicate ACKs start a fast retransmit, RFC 6582 §3.2 step 4)",
    file: "src/stack/tcp/congestion.ts",
    from: "    this.recover = sndMax;\n",
    to: "    this.recover = sndMax - sndMax;\n",
    tests: ["tests/tcp_state_test.ts"],
  },
  {
    name: "port forwards: a guest without a DHCP lease is not looked for where it was heard from",
    file: "src/stack/stack.ts",
    from:
      "      if (ip !== this.plan.gateway && ip !== this.plan.dns && ip !== this.plan.broadcast) heard = ip;\n",
    to: "",
    tests: ["tests/guest_netns_test.ts"],
  },
  {
    name: "port forwards: a guest never heard from is not looked for at the first DHCP address",
    file: "src/stack/stack.ts",
    from: "    return heard >= 0 ? heard : this.plan.dhcpStart;\n",
    to: "    return heard;\n",
    tests: ["tests/guest_netns_test.ts"],
  },
  {
    name: "DNS: an upstream's answer past the guest's MTU is not sent in fragments",
    file: "src/stack/dns_service.ts",
    from: "    if (g.family === 4) s.datagrams.sendUdp(g.local, g.guest, 53, p.guestPort, data);\n",
    to:
      "    if (g.family === 4 && data.length <= s.plan.mtu - 28) s.datagrams.sendUdp(g.local, g.guest, 53, p.guestPort, data);\n",
    tests: ["tests/guest_netns_test.ts"],
  },
  {
    name: "UDP NAT: a full table refuses every new flow however long its flows have been quiet",
    file: "src/stack/udp_nat.ts",
    from: "    if (s.wheel.now - idlest.lastActive < RECLAIM_IDLE_MS) {\n",
    to: "    if (idlest) {\n",
    tests: ["tests/quotas_test.ts"],
  },
  {
    name: "UDP NAT: a full table evicts a flow that was active a moment ago",
    file: "src/stack/udp_nat.ts",
    from: "    if (s.wheel.now - idlest.lastActive < RECLAIM_IDLE_MS) {\n",
    to: "    if (s.wheel.now < 0) {\n",
    tests: ["tests/quotas_test.ts"],
  },
  {
    name: "UDP NAT: a full table gives up the most recently active flow, not the idlest",
    file: "src/stack/udp_nat.ts",
    from: "      for (const f of list) if (!idlest || f.lastActive < idlest.lastActive) idlest = f;\n",
    to: "      for (const f of list) if (!idlest || f.lastActive >= idlest.lastActive) idlest = f;\n",
    tests: ["tests/quotas_test.ts"],
  },
  {
    name: "TFTP: a duplicate ACK is answered with the block again (the Sorcerer's Apprentice)",
    file: "src/stack/tftp_service.ts",
    from: "      if (u16(buf, off + 2) !== (t.block & 0xffff)) return;\n",
    to: "      if (u16(buf, off + 2) !== (t.block & 0xffff)) return this.#send(t);\n",
    tests: ["tests/tftp_test.ts"],
  },
  {
    name: "TFTP: a block whose ACK does not come is never sent again",
    file: "src/stack/tftp_service.ts",
    from: "      return this.#finish(t);\n    }\n    this.#send(t);\n",
    to: "      return this.#finish(t);\n    }\n",
    tests: ["tests/tftp_test.ts"],
  },
  {
    name: "TFTP: blksize is granted past what one frame carries",
    file: "src/stack/tftp_service.ts",
    from: "Math.min(asked, TFTP_MAX_BLOCK, frameRoom)",
    to: "Math.min(asked, TFTP_MAX_BLOCK)",
    tests: ["tests/tftp_test.ts"],
  },
  {
    name: "TFTP root: a symbolic link out of the directory is followed",
    file: "src/host/read_only_dir.ts",
    from: '    if (!real.startsWith(root.endsWith("/") ? root : `${root}/`)) return "refused";\n',
    to: "",
    tests: ["tests/tftp_test.ts"],
  },
  {
    name: "DHCP: the boot server (siaddr) is not named with a TFTP directory",
    file: "src/stack/dhcp_server.ts",
    from: "      siaddr: type !== DhcpMessageType.NAK && s.config.tftp ? s.plan.gateway : 0,\n",
    to: "      siaddr: 0,\n",
    tests: ["tests/guest_netns_test.ts"],
  },
  {
    name: "TFTP: a finished transfer keeps its place in the relay's flow bound",
    file: "src/stack/tftp_service.ts",
    from: "    t.file.close();\n    this.#stack.flowLimit.release();\n",
    to: "    t.file.close();\n",
    tests: ["tests/tftp_test.ts"],
  },
  {
    name: "port forwards: a forward that cannot bind fails without saying which",
    file: "src/relay/port_forward.ts",
    from:
      "    throw Object.assign(new Error(`port forward ${f.protocol}:${f.hostAddress}:${f.hostPort}: ${why}`), {\n",
    to: "    throw Object.assign(new Error(why), {\n",
    tests: ["tests/cli_serve_test.ts"],
  },
  {
    name: "traceroute: a datagram of TTL 1 beyond the gateway is forwarded (no first hop)",
    file: "src/stack/stack.ts",
    from:
      "    if (ip.ttl <= 1 && this.#ttlEndsHere(buf, ip, dstMac)) return this.icmp.timeExceeded(buf, ip);\n",
    to: "",
    tests: ["tests/traceroute_test.ts"],
  },
  {
    name: "traceroute: an IPv6 packet of hop limit 1 beyond the router is forwarded",
    file: "src/stack/ipv6_input.ts",
    from: "    if (ip.hopLimit <= 1 && this.#hopEndsHere(buf, ip)) return icmp6.timeExceeded(buf, ip);\n",
    to: "",
    tests: ["tests/traceroute_test.ts"],
  },
  {
    name: "traceroute: UDP probes leave with the host's default TTL, not the guest's",
    file: "src/stack/udp_nat.ts",
    from: "    if (ip.ttl - 1 !== f.hops) this.#setHops(f, ip.ttl - 1);\n",
    to: "",
    tests: ["tests/traceroute_test.ts"],
  },
  {
    name: "traceroute: a tenant sees routers its policy would not let it reach",
    file: "src/stack/icmp_service.ts",
    from: '    if (real === null || !s.policy.check("icmp", real, 0)) return -1;\n',
    to: "    if (real === null) return -1;\n",
    tests: ["tests/traceroute_test.ts"],
  },
  {
    name:
      "traceroute: a ping socket's ICMP errors are not told to the request's caller (ICMP probes past hop 1)",
    file: "src/host/icmp_socket.ts",
    from: "      if (!q.icmp || q.payloadLength < 8) continue;\n",
    to: "      continue;\n",
    tests: ["tests/traceroute_test.ts"],
  },
];

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: { "all-tests": { type: "boolean", default: false } },
  allowPositionals: true,
});
const root = new URL("..", import.meta.url).pathname;
const chosen = MUTANTS.filter((m) => positionals.length === 0 || positionals.some((w) => m.name.includes(w)));

async function run(cmd: string[], cwd: string): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stdout: "piped", stderr: "piped" })
    .output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}

/** The names of the tests `deno test` reported FAILED. */
function failedTests(out: string): string[] {
  const plain = out.replace(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "");
  return [...plain.matchAll(/^(.+?) \.\.\. .*FAILED/gm)].map((x) => x[1]);
}

const work = await Deno.makeTempDir({ prefix: "slirp-mutants-" });
let failures = 0;
try {
  // a copy of the tree as it is on disk (uncommitted changes included); node_modules shared
  for (const e of Deno.readDirSync(root)) {
    if (e.name === ".git" || e.name === "node_modules") continue;
    await run(["cp", "-a", `${root}${e.name}`, `${work}/`], root);
  }
  await Deno.symlink(`${root}node_modules`, `${work}/node_modules`);
  const deno = `${root}node_modules/deno/deno`;
  const testsOf = (m: Mutant) => values["all-tests"] ? ["tests/", "src/"] : m.tests;
  const baselineFiles = [...new Set(chosen.flatMap(testsOf))];
  const baseline = await run([deno, "test", "-A", "--parallel", "--no-check", ...baselineFiles], work);
  const failingUnbroken = new Set(failedTests(baseline.out));
  if (baseline.code !== 0) {
    console.log(
      `Without any breakage ${failingUnbroken.size} test(s) already fail; they catch nothing: ${
        [...failingUnbroken].join("; ") ||
        "(no test named: a file failed to load)\n" + baseline.out.slice(-2000)
      }\n`,
    );
  }
  console.log("| breakage | caught by | result |\n| --- | --- | --- |");
  for (const m of chosen) {
    const path = `${work}/${m.file}`;
    const original = await Deno.readTextFile(path);
    const at = original.indexOf(m.from);
    if (at < 0 || original.indexOf(m.from, at + 1) >= 0) {
      console.log(`| ${m.name} | ${m.file} | ✗ the breakage no longer applies (edit the mutant) |`);
      failures++;
      continue;
    }
    await Deno.writeTextFile(path, original.slice(0, at) + m.to + original.slice(at + m.from.length));
    const files = testsOf(m);
    const r = await run([deno, "test", "-A", "--parallel", "--no-check", ...files], work);
    await Deno.writeTextFile(path, original);
    const failed = failedTests(r.out).filter((t) => !failingUnbroken.has(t));
    // a non-zero exit with no test named failing is a file that no longer loads: the breakage did that
    const caught = r.code !== 0 && (failed.length > 0 || failedTests(r.out).length === 0);
    if (!caught) failures++;
    console.log(
      `| ${m.name} | ${files.join(", ")} | ${
        caught ? `caught (${failed.length} failing: ${failed.slice(0, 2).join("; ")})` : "✗ survived"
      } |`,
    );
  }
} finally {
  await Deno.remove(work, { recursive: true });
}
Deno.exit(failures === 0 ? 0 : 1);
