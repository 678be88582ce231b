"""XEP-0424 both ways. mode "send": USER sends "to be retracted" to PEER,
prints {"event": "sent", "id"} once it is stored, then retracts it and
prints {"retracted": id} once the retraction is handled. mode "recv":
prints {"event": "ready"}, then {"event": "got", "id"} for the first
message with a body, then waits for a retraction and prints
{"retract_id": ...}.

usage: xmpp_retract.py HOST PORT DOMAIN USER TOKEN MODE PEER"""

import asyncio

from xmpp_common import TIMEOUT, durable, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0199", "xep_0424")


async def main(host, port, domain, user, token, mode, peer):
    client = make_client(f"{user}@{domain}", token, PLUGINS)
    await start(client, host, port)
    if mode == "send":
        m = client.make_message(mto=f"{peer}@{domain}", mbody="to be retracted", mtype="chat")
        m.send()
        await durable(client)
        emit({"event": "sent", "id": m["id"]})
        errors = []
        client.add_event_handler("message_error", lambda e: errors.append(e["error"]["text"]))
        client["xep_0424"].send_retraction(f"{peer}@{domain}", m["id"])
        await durable(client)
        emit({"retracted": m["id"], "errors": errors})
    else:
        got = event_future(client, "message")
        retract = event_future(client, "message_retract")
        emit({"event": "ready"})
        msg = await asyncio.wait_for(got, TIMEOUT)
        emit({"event": "got", "id": msg["id"]})
        r = await asyncio.wait_for(retract, TIMEOUT)
        emit({"retract_id": r["retract"]["id"], "from": str(r["from"])})
    await client.disconnect()


run(main)
