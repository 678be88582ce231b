"""Shared helpers of the XMPP conformance scripts (slixmpp clients of the
imgate gateway). Every script takes host, port, domain, then its own
arguments, prints JSON lines on stdout and exits within bounded time."""

import asyncio
import json
import os
import sys

import slixmpp

TIMEOUT = 20


def emit(obj):
    """One JSON line for the Rust test."""
    print(json.dumps(obj), flush=True)


def make_client(jid, token, plugins=("xep_0030", "xep_0184", "xep_0199")):
    """A slixmpp client that authenticates with SASL PLAIN: user id + token.
    Plain TCP by default; with IMGATE_XMPP_CAFILE set (a gateway with a
    certificate), STARTTLS is required and the server certificate is
    verified against that file; with IMGATE_XMPP_DIRECT_TLS too, TLS from
    the first byte (XEP-0368, the gateway's `xmpps` listener) instead."""
    client = slixmpp.ClientXMPP(jid, token)
    client.enable_direct_tls = False
    cafile = os.environ.get("IMGATE_XMPP_CAFILE")
    if cafile and os.environ.get("IMGATE_XMPP_DIRECT_TLS"):
        client.enable_direct_tls = True
        client.enable_starttls = False
        client.enable_plaintext = False
        client.ca_certs = cafile
    elif cafile:
        client.enable_starttls = True
        client.enable_plaintext = False
        client.ca_certs = cafile
    else:
        client.enable_starttls = False
        client.enable_plaintext = True
        client["feature_mechanisms"].unencrypted_plain = True
    for p in plugins:
        client.register_plugin(p)
    return client


def event_future(client, name):
    """A future resolved (once) by the next `name` event."""
    fut = asyncio.get_event_loop().create_future()

    def done(data=None):
        if not fut.done():
            fut.set_result(data)

    client.add_event_handler(name, done, disposable=True)
    return fut


async def start(client, host, port):
    """Connect and wait for the session (roster, initial presence); raises
    RuntimeError on failed authentication."""
    session = event_future(client, "session_start")
    failed = event_future(client, "failed_all_auth")
    client.connect(host, int(port))
    done, _ = await asyncio.wait(
        [session, failed], timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    if failed in done:
        raise RuntimeError("failed_auth")
    if session not in done:
        raise RuntimeError("timeout")
    client.send_presence()
    await client.get_roster()


async def durable(client):
    """Round-trip a ping: the gateway handles a connection's stanzas in
    order, so once it answers, every message sent before is stored."""
    await client["xep_0199"].ping(timeout=TIMEOUT)


def on_every_message(client, handler):
    """Call `handler` for every <message> stanza (slixmpp's "message" event
    only covers those with a <body>)."""
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    client.register_handler(
        Callback("every message", MatchXPath("{jabber:client}message"), handler)
    )


def message_record(msg):
    """What a test asserts about a received message."""
    payload = msg.xml.find("{urn:imgate:payload}payload")
    stanza_id = msg.xml.find("{urn:xmpp:sid:0}stanza-id")
    delay = msg.xml.find("{urn:xmpp:delay}delay")
    from xml.etree import ElementTree as ET

    return {
        "from": str(msg["from"]),
        "type": msg["type"],
        "id": msg["id"],
        "body": msg["body"],
        "stanza_id": stanza_id.get("id") if stanza_id is not None else None,
        "payload": ET.tostring(payload, encoding="unicode") if payload is not None else None,
        "delayed": delay is not None,
    }


def run(main):
    """Run `main(*argv)` with a global deadline; errors become JSON."""
    async def bounded():
        return await asyncio.wait_for(main(*sys.argv[1:]), timeout=TIMEOUT * 3)

    try:
        asyncio.run(bounded())
    except Exception as exc:  # reported, not raised: the test asserts it
        emit({"error": type(exc).__name__ + ": " + str(exc)})
        sys.exit(1)
