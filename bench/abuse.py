#!/usr/bin/env python3
"""Abuse experiments of issue 11, rows 1-4, against a running imgate.

Each scenario prints one JSON line of figures measured on the server
process (/proc/PID: RSS, CPU seconds, bytes written) and on the wire
(connections held, refused, latency). Run through bench/abuse.sh, which
starts a fresh gateway per scenario; standard library only.

  slowloris  N half-sent HTTP requests; are they closed, and can PB/MQTT/
             XMPP clients still connect while they are held?
  xmpp-attrs one pre-auth <auth> with 20,000 attributes: server CPU spent
  xmpp-elements one pre-auth <auth> with 62,000 empty children: the same
  mqtt-queue 300 QoS 1 publishes of 60 KB to one offline persistent
             session: bytes written, CPU, PUBACK latency
  retained   N retained messages of 64 KB: data dir growth, restart time
"""
import hashlib
import json
import os
import random
import socket
import struct
import sys
import time
import urllib.request


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    wbytes = 0
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    wbytes = int(line.split()[1])
    except OSError:
        pass
    return {"cpu_s": cpu, "rss_mb": rss / 2**20, "write_mb": wbytes / 2**20}


def admin_token(admin, secret, user, client):
    nonce = str(random.randrange(1 << 60))
    ts = str(int(time.time() * 1000))
    sign = hashlib.sha1(f"{nonce}|{secret}|{ts}".encode()).hexdigest()
    body = json.dumps({"userId": user, "clientId": client, "platform": 1}).encode()
    req = urllib.request.Request(
        f"http://{admin}/admin/user/get_token",
        data=body,
        headers={"nonce": nonce, "timestamp": ts, "sign": sign,
                 "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["result"]["token"]


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


# --- minimal MQTT 3.1.1 -----------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def mqtt_connect(sock, client, user, token, clean=True):
    flags = 0xC0 | (0x02 if clean else 0)
    body = mstr("MQTT") + bytes([4, flags]) + struct.pack(">H", 60)
    body += mstr(client) + mstr(user) + mstr(token)
    sock.sendall(packet(0x10, body))
    return read_packet(sock)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_packet(sock):
    first = read_exact(sock, 1)[0]
    n, mul = 0, 1
    while True:
        b = read_exact(sock, 1)[0]
        n += (b & 0x7F) * mul
        mul *= 128
        if not b & 0x80:
            break
    return first, read_exact(sock, n)


# Bystanders connect from another loopback address than the attacker, as
# clients on other machines would: per-IP caps apply to the attacker only.
BYSTANDER = ("127.0.0.2", 0)


def can_login_mqtt(mqtt, user, token, client, timeout=5.0):
    try:
        s = socket.create_connection(addr(mqtt), timeout=timeout, source_address=BYSTANDER)
        s.settimeout(timeout)
        first, body = mqtt_connect(s, client, user, token)
        s.close()
        return first == 0x20 and body[1] == 0
    except OSError:
        return False


def can_open_xmpp(xmpp, timeout=5.0):
    try:
        s = socket.create_connection(addr(xmpp), timeout=timeout, source_address=BYSTANDER)
        s.settimeout(timeout)
        s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' "
                  b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                  b"version='1.0'>")
        data = s.recv(4096)
        s.close()
        return b"stream:features" in data or b"<stream:stream" in data
    except OSError:
        return False


# --- scenarios --------------------------------------------------------------

def slowloris(a):
    n, rate = a["n"], a["rate"]
    before = proc_stat(a["pid"])
    held = []
    refused_open = 0
    start = time.time()
    for i in range(n):
        try:
            s = socket.create_connection(addr(a["http"]), timeout=5)
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(s)
        except OSError:
            refused_open += 1
        wait = start + (i + 1) / rate - time.time()
        if wait > 0:
            time.sleep(wait)
    opened_s = time.time() - start
    # Which are still open? A closed one reads EOF (or resets).
    def still_open(s):
        s.setblocking(False)
        try:
            return s.recv(1) == b"" and False
        except BlockingIOError:
            return True
        except OSError:
            return False
    alive_after_open = sum(1 for s in held if still_open(s))
    during = proc_stat(a["pid"])
    token = admin_token(a["admin"], a["secret"], "abuse-u", "abuse-d")
    mqtt_ok = can_login_mqtt(a["mqtt"], "abuse-u", token, "abuse-d")
    xmpp_ok = can_open_xmpp(a["xmpp"])
    time.sleep(a["hold"])
    alive_after_hold = sum(1 for s in held if still_open(s))
    for s in held:
        s.close()
    time.sleep(2)
    after = proc_stat(a["pid"])
    return {"scenario": "slowloris", "sent": n, "rate_per_s": rate,
            "open_s": round(opened_s, 1), "refused_at_open": refused_open,
            "held_after_open": alive_after_open,
            "held_after_hold": alive_after_hold, "hold_s": a["hold"],
            "mqtt_login_while_held": mqtt_ok, "xmpp_open_while_held": xmpp_ok,
            "rss_mb": [round(before["rss_mb"], 1), round(during["rss_mb"], 1),
                       round(after["rss_mb"], 1)]}


def xmpp_attrs(a):
    attrs = "".join(f" a{i}='x'" for i in range(20000))
    stanza = (f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'{attrs}>"
              "AGFsaWNlAHNlY3JldA==</auth>").encode()
    return xmpp_stanza_cost(a, "xmpp-attrs", stanza)


def xmpp_elements(a):
    # 250 KB of empty children (62,000 elements) inside one pre-auth stanza.
    stanza = ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
              + "<x/>" * 62000 + "</auth>").encode()
    return xmpp_stanza_cost(a, "xmpp-elements", stanza)


def xmpp_stanza_cost(a, scenario, stanza):
    before = proc_stat(a["pid"])
    s = socket.create_connection(addr(a["xmpp"]), timeout=30)
    s.settimeout(30)
    s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' "
              b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
              b"version='1.0'>")
    got = b""
    while b"</stream:features>" not in got:
        got += s.recv(65536)
    t0 = time.time()
    s.sendall(stanza)
    reply = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            reply += d
            if b"</stream:stream>" in reply or b"failure" in reply or b"success" in reply:
                break
            if b"stream:error" in reply and b"</stream:error>" in reply:
                break
    except OSError:
        pass
    elapsed = time.time() - t0
    s.close()
    time.sleep(0.5)
    after = proc_stat(a["pid"])
    return {"scenario": scenario, "stanza_bytes": len(stanza),
            "server_cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
            "reply_s": round(elapsed, 3), "reply": reply[:120].decode("utf-8", "replace")}


def mqtt_queue(a):
    user = "abuse-q"
    tok_sub = admin_token(a["admin"], a["secret"], user, "q-sub")
    tok_pub = admin_token(a["admin"], a["secret"], user, "q-pub")
    # A persistent session subscribes at QoS 1 and goes offline.
    s = socket.create_connection(addr(a["mqtt"]), timeout=10)
    first, body = mqtt_connect(s, "q-sub", user, tok_sub, clean=False)
    assert first == 0x20 and body[1] == 0, (first, body)
    s.sendall(packet(0x82, struct.pack(">H", 1) + mstr("abuse/q") + bytes([1])))
    read_packet(s)
    s.sendall(packet(0xE0, b""))
    s.close()
    time.sleep(0.5)
    before = proc_stat(a["pid"])
    p = socket.create_connection(addr(a["mqtt"]), timeout=30)
    p.settimeout(30)
    first, body = mqtt_connect(p, "q-pub", user, tok_pub)
    assert first == 0x20 and body[1] == 0, (first, body)
    payload = os.urandom(60 * 1024)
    lat = []
    for i in range(a["n"]):
        pid = i + 1
        t0 = time.time()
        p.sendall(packet(0x32, mstr("abuse/q") + struct.pack(">H", pid) + payload))
        while True:
            f, b = read_packet(p)
            if f == 0x40:
                break
        lat.append(time.time() - t0)
    p.close()
    time.sleep(1)
    after = proc_stat(a["pid"])
    lat.sort()
    return {"scenario": "mqtt-queue", "publishes": a["n"], "payload_kb": 60,
            "server_write_mb": round(after["write_mb"] - before["write_mb"], 1),
            "server_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
            "puback_ms_p50": round(lat[len(lat) // 2] * 1000, 1),
            "puback_ms_max": round(lat[-1] * 1000, 1)}


def retained(a):
    user = "abuse-r"
    tok = admin_token(a["admin"], a["secret"], user, "r-pub")
    p = socket.create_connection(addr(a["mqtt"]), timeout=30)
    p.settimeout(30)
    first, body = mqtt_connect(p, "r-pub", user, tok)
    assert first == 0x20 and body[1] == 0, (first, body)
    payload = os.urandom(64 * 1024)
    accepted = 0
    for i in range(a["n"]):
        try:
            p.sendall(packet(0x33, mstr(f"abuse/r/{i}") + struct.pack(">H", (i % 65535) + 1) + payload))
            f, b = read_packet(p)
            if f == 0x40:
                accepted += 1
        except OSError:
            break
    p.close()
    time.sleep(1)
    return {"scenario": "retained", "published": a["n"], "pubacked": accepted,
            "payload_kb": 64}


def main():
    a = json.loads(sys.argv[2])
    out = {"slowloris": slowloris, "xmpp-attrs": xmpp_attrs,
           "mqtt-queue": mqtt_queue, "retained": retained,
           "xmpp-elements": xmpp_elements}[sys.argv[1]](a)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
