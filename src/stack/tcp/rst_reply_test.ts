import assert from "node:assert/strict";
import { type RstReply, rstReply } from "./rst_reply.ts";
import { TCP_ACK_FLAG, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from "../../wire/tcp.ts";

Deno.test("rstReply: RFC 9293 §3.10.7.1 for each kind of segment", () => {
  const r: RstReply = { seq: -1, ack: -1, flags: -1 };
  // with ACK: the reset takes its sequence number from the segment's acknowledgment
  assert.ok(rstReply(100, 5000, TCP_ACK_FLAG | TCP_PSH, 10, r));
  assert.deepEqual(r, { seq: 5000, ack: 0, flags: TCP_RST });
  // a bare SYN: acknowledges the SYN (it counts one)
  assert.ok(rstReply(0xffffffff, 0, TCP_SYN, 0, r));
  assert.deepEqual(r, { seq: 0, ack: 0, flags: TCP_RST | TCP_ACK_FLAG }, "wraps modulo 2^32");
  // data and FIN without ACK: both count
  assert.ok(rstReply(1000, 0, TCP_FIN, 20, r));
  assert.deepEqual(r, { seq: 0, ack: 1021, flags: TCP_RST | TCP_ACK_FLAG });
  // a reset is never answered, whatever else it carries
  const before = { ...r };
  assert.equal(rstReply(1, 2, TCP_RST | TCP_ACK_FLAG, 0, r), false);
  assert.deepEqual(r, before);
});
