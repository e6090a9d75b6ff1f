/**
 * What the main thread (`front.ts`) and a data-plane worker (`src/data_plane_worker.ts`) say to each other
 * with `postMessage`: the worker's start, and calls from the front — an admin request, a WebSocket
 * admission, a WebSocket guest's rings, a stop — each answered by a reply with the same id. Frames never
 * pass here: they go through {@linkcode FrameRing}s.
 *
 * @module
 */
import type { LogLevel } from "./log.ts";
import type { RelayOptions } from "./relay.ts";
import type { HostForwardConfig } from "../stack/config.ts";
import type { WebSocketFramingKind } from "../transport/websocket_framing.ts";

/** A Request as data (a Request cannot cross threads). */
export interface SerializedRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: string | null;
}

export interface SerializedResponse {
  status: number;
  headers: [string, string][];
  body: string;
}

/** The worker's options: the relay's, less what is code (the worker makes its own logger and parser). */
export type WorkerRelayOptions = Omit<RelayOptions, "log" | "parseForward" | "ownedLoop">;

export interface WorkerInit {
  type: "init";
  index: number;
  options: WorkerRelayOptions;
  logLevel: LogLevel;
  /** Int32 the worker bumps and notifies when rings toward the main thread have frames. */
  bell: SharedArrayBuffer;
  /** Int32 the main thread sets before it wakes the worker for a message (not for frames). */
  mail: SharedArrayBuffer;
}

export type FrontCall =
  & { type: "call"; id: number }
  & (
    | { op: "admin"; request: SerializedRequest }
    | { op: "wsAdmit"; request: SerializedRequest; listenHost: string }
    | {
      op: "wsOpen";
      tenant: string;
      remote: string;
      framing: WebSocketFramingKind;
      wispVersion?: 1 | 2;
      toWorker: SharedArrayBuffer;
      toMain: SharedArrayBuffer;
    }
    | { op: "wsAbandon"; tenant: string }
    | { op: "drain" }
    | { op: "stop" }
  );

/** A WebSocket request admitted to a tenant: the subprotocol to answer with, how frames ride messages. */
export interface WsAdmitted {
  tenant: string;
  protocol?: string;
  framing: WebSocketFramingKind;
  wispVersion?: 1 | 2;
  expiresAt: number;
}

/** A WebSocket request answered by the worker, or admitted to a tenant. */
export type WsAdmitReply = { response: SerializedResponse } | WsAdmitted;

export type WorkerMessage =
  /** The worker's module has loaded and listens: only now may `init` be sent (Bun drops earlier messages). */
  | { type: "loaded" }
  | { type: "ready"; wakeFd: number; urls: string[]; forwards: HostForwardConfig[]; flowLimit: number }
  | { type: "failed"; error: string }
  | { type: "reply"; id: number; value?: unknown; error?: string };

export async function serializeRequest(req: Request): Promise<SerializedRequest> {
  const body = req.method === "GET" || req.method === "HEAD" ? null : await req.text();
  return { method: req.method, url: req.url, headers: [...req.headers], body };
}

export function requestFrom(r: SerializedRequest): Request {
  return new Request(r.url, { method: r.method, headers: r.headers, body: r.body });
}

export async function serializeResponse(res: Response): Promise<SerializedResponse> {
  return { status: res.status, headers: [...res.headers], body: await res.text() };
}

export function responseFrom(r: SerializedResponse): Response {
  // 204/304 carry no body
  const body = r.status === 204 || r.status === 304 ? null : r.body;
  return new Response(body, { status: r.status, headers: r.headers });
}
