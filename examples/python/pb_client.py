#!/usr/bin/env python3
"""A third-party client of imgate's private binary protocol (PB), in Python.

The protobuf classes are generated from codecs/proto/imgate.proto at start
with grpc_tools.protoc (pip install grpcio-tools protobuf), exactly as any
other language would generate them. The frame header is the contract of
DESIGN §5.2: 16 bytes, big-endian:

    length u32 (whole frame) | version u16 (=1) | flags u16 |
    service u16 | command u16 | seq u16 | reserved u16

Usage:
    pb_client.py HOST PORT USER TOKEN DEVICE PEER TEXT [--wait-deliver SECONDS]

Logs in, sends TEXT to PEER, prints the send result; with --wait-deliver it
then waits for one message delivered to USER, acks it, and prints it.
Output is one JSON object per line.
"""
import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

HEADER = struct.Struct(">IHHHHHH")
VERSION = 1
LOGIN_REQUEST, LOGIN_RESPONSE, KICK = 0x0101, 0x0102, 0x0103
SEND_REQUEST, SEND_RESPONSE, DELIVER, DELIVER_ACK = 0x0301, 0x0302, 0x0303, 0x0304
HEARTBEAT, ERROR = 0x0701, 0x0702

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "codecs", "proto")


def generate_classes():
    """Run protoc on imgate.proto and import the generated module."""
    out = tempfile.mkdtemp(prefix="imgate_pb_")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out}", "imgate.proto"],
        check=True,
    )
    sys.path.insert(0, out)
    import imgate_pb2  # noqa: E402  (generated just now)

    return imgate_pb2


class PbConnection:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.seq = 0

    def send(self, command, message, seq=None):
        if seq is None:
            self.seq = (self.seq + 1) & 0xFFFF or 1
            seq = self.seq
        body = message.SerializeToString()
        header = HEADER.pack(HEADER.size + len(body), VERSION, 0, command >> 8, command, seq, 0)
        self.sock.sendall(header + body)
        return seq

    def recv(self):
        """The next frame as (command, seq, body); raises on EOF or timeout."""
        while True:
            if len(self.buf) >= HEADER.size:
                length, version, _flags, _service, command, seq, _ = HEADER.unpack_from(self.buf)
                if version != VERSION or length < HEADER.size:
                    raise ValueError("bad frame header from server")
                if len(self.buf) >= length:
                    body = self.buf[HEADER.size:length]
                    self.buf = self.buf[length:]
                    return command, seq, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk


def main():
    ap = argparse.ArgumentParser()
    for name in ("host", "port", "user", "token", "device", "peer", "text"):
        ap.add_argument(name)
    ap.add_argument("--wait-deliver", type=float, default=0)
    args = ap.parse_args()
    pb = generate_classes()

    conn = PbConnection(args.host, int(args.port), timeout=max(args.wait_deliver, 20))
    conn.send(LOGIN_REQUEST, pb.LoginRequest(user_id=args.user, token=args.token, client_id=args.device, platform=7))
    command, _, body = conn.recv()
    if command != LOGIN_RESPONSE:
        print(json.dumps({"error": f"unexpected command {command:#06x}"}))
        return 1
    login = pb.LoginResponse.FromString(body)
    print(json.dumps({"login_code": login.code}), flush=True)
    if login.code != 0:
        return 1

    req = pb.SendRequest(
        client_msg_id=f"py-{os.getpid()}-{int(time.time() * 1000)}",
        conversation=pb.Conversation(type=0, target=args.peer, line=0),
        payload=pb.MessagePayload(type=1, searchable_content=args.text, persist_flag=3),
    )
    seq = conn.send(SEND_REQUEST, req)
    while True:
        command, rseq, body = conn.recv()
        if command == SEND_RESPONSE and rseq == seq:
            resp = pb.SendResponse.FromString(body)
            print(json.dumps({"send_code": resp.code, "message_id": str(resp.message_id)}), flush=True)
            break

    if args.wait_deliver:
        while True:
            command, _, body = conn.recv()
            if command == DELIVER:
                msg = pb.Deliver.FromString(body).message
                conn.send(DELIVER_ACK, pb.DeliverAck(message_id=msg.message_id))
                print(json.dumps({
                    "delivered": str(msg.message_id),
                    "sender": msg.sender,
                    "text": msg.payload.searchable_content,
                }), flush=True)
                break
            if command in (KICK, ERROR):
                print(json.dumps({"error": f"server sent {command:#06x}"}))
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
