"""Receive N messages (offline ones first, then live): prints
{"event": "ready"} once the session is up, then {"received": [...]}.

usage: xmpp_recv.py HOST PORT DOMAIN USER TOKEN N"""

import asyncio

from xmpp_common import TIMEOUT, emit, make_client, message_record, on_every_message, run, start


async def main(host, port, domain, user, token, n):
    n = int(n)
    client = make_client(f"{user}@{domain}", token)
    received = []
    done = asyncio.get_event_loop().create_future()

    def on_message(msg):
        if msg["type"] != "error" and msg["body"] or msg.xml.find("{urn:imgate:payload}payload") is not None:
            received.append(message_record(msg))
            if len(received) >= n and not done.done():
                done.set_result(True)

    on_every_message(client, on_message)
    await start(client, host, port)
    emit({"event": "ready"})
    if n > 0:
        await asyncio.wait_for(done, TIMEOUT)
    emit({"received": received})
    await client.disconnect()


run(main)
