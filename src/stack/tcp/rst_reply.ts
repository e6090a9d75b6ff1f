/**
 * The reset that answers a segment, as a pure function of the segment (RFC 9293 §3.10.7.1, as smoltcp's
 * `rst_reply`): a segment with ACK gets <SEQ=SEG.ACK><CTL=RST>; one without gets
 * <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, where SYN and FIN count in SEG.LEN. A RST is never answered.
 *
 * @module
 */
import { TCP_ACK_FLAG, TCP_FIN, TCP_RST, TCP_SYN } from "../../wire/tcp.ts";

/** Sequence, acknowledgment and flags of the reply. */
export interface RstReply {
  seq: number;
  ack: number;
  flags: number;
}

/**
 * Fills `out` with the reset answering a segment of `flags`, `seq`, `ack` and `dataLen` payload bytes, and
 * returns true; returns false (and leaves `out`) when the segment is itself a reset.
 */
export function rstReply(seq: number, ack: number, flags: number, dataLen: number, out: RstReply): boolean {
  if (flags & TCP_RST) return false;
  if (flags & TCP_ACK_FLAG) {
    out.seq = ack;
    out.ack = 0;
    out.flags = TCP_RST;
  } else {
    out.seq = 0;
    out.ack = (seq + dataLen + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0)) >>> 0;
    out.flags = TCP_RST | TCP_ACK_FLAG;
  }
  return true;
}
