"""Send messages and wait until the gateway stored them (a ping round trip
after the messages). A message is BODY, or BODY|PAYLOAD_XML to add an
imgate payload element. Recipients on groups.DOMAIN get type groupchat.
Prints {"sent_ids": [...]} or {"errors": [...]} for rejected messages.

usage: xmpp_send.py HOST PORT DOMAIN USER TOKEN TO MESSAGE..."""

import asyncio
from xml.etree import ElementTree as ET

from xmpp_common import durable, emit, make_client, on_every_message, run, start


async def main(host, port, domain, user, token, to, *messages):
    client = make_client(f"{user}@{domain}", token)
    errors = []

    def on_message(msg):
        if msg["type"] == "error":
            errors.append({"id": msg["id"], "condition": msg["error"]["condition"], "text": msg["error"]["text"]})

    on_every_message(client, on_message)
    await start(client, host, port)
    mtype = "groupchat" if f"@groups.{domain}" in to else "chat"
    sent_ids = []
    for m in messages:
        body, _, payload = m.partition("|")
        msg = client.make_message(mto=to, mbody=body or None, mtype=mtype)
        if payload:
            msg.append(ET.fromstring(payload))
        sent_ids.append(msg["id"])
        msg.send()
    await durable(client)
    await asyncio.sleep(0)
    emit({"sent_ids": sent_ids, "errors": errors})
    await client.disconnect()


run(main)
