"""USER joins GROUP's room and watches the room: prints {"event":
"joined"}, then {"event": "online", "nick"} for the next occupant who
joins, then {"offline": nick, "codes": [...]} for the next who leaves.
With MODE "stay" it only joins, prints {"event": "joined"} and waits
until it is itself out of the room, then prints {"out": [codes]}.

usage: xmpp_muc_members.py HOST PORT DOMAIN USER TOKEN GROUP [MODE]"""

import asyncio

from xmpp_common import TIMEOUT, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0045", "xep_0199")


async def main(host, port, domain, user, token, group, mode="watch"):
    client = make_client(f"{user}@{domain}", token, PLUGINS)
    await start(client, host, port)
    room = f"{group}@groups.{domain}"
    online = event_future(client, f"muc::{room}::got_online")
    offline = event_future(client, f"muc::{room}::got_offline")
    await client.plugin["xep_0045"].join_muc_wait(room, user, maxstanzas=0, timeout=TIMEOUT)
    emit({"event": "joined"})
    if mode == "stay":
        gone = await asyncio.wait_for(offline, 60)
        emit({"out": sorted(gone["muc"]["status_codes"])})
        await client.disconnect()
        return
    online = event_future(client, f"muc::{room}::got_online")
    offline = event_future(client, f"muc::{room}::got_offline")
    pres = await asyncio.wait_for(online, TIMEOUT)
    emit({"event": "online", "nick": pres["from"].resource})
    gone = await asyncio.wait_for(offline, TIMEOUT)
    emit({"offline": gone["from"].resource, "codes": sorted(gone["muc"]["status_codes"])})
    await client.disconnect()


run(main)
