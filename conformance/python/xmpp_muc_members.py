"""USER joins GROUP's room and watches the admin API's membership
changes arrive as room presence: prints {"event": "joined"}, then
{"event": "online", "nick"} for the next member who appears, then
{"offline": nick, "codes": [...]} for the next who leaves.

usage: xmpp_muc_members.py HOST PORT DOMAIN USER TOKEN GROUP"""

from xmpp_common import TIMEOUT, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0045", "xep_0199")


async def main(host, port, domain, user, token, group):
    client = make_client(f"{user}@{domain}", token, PLUGINS)
    await start(client, host, port)
    room = f"{group}@groups.{domain}"
    await client.plugin["xep_0045"].join_muc_wait(room, user, maxstanzas=0, timeout=TIMEOUT)
    online = event_future(client, f"muc::{room}::got_online")
    offline = event_future(client, f"muc::{room}::got_offline")
    emit({"event": "joined"})
    pres = await asyncio_wait(online)
    emit({"event": "online", "nick": pres["from"].resource})
    gone = await asyncio_wait(offline)
    emit({"offline": gone["from"].resource, "codes": sorted(gone["muc"]["status_codes"])})
    await client.disconnect()


async def asyncio_wait(fut):
    import asyncio

    return await asyncio.wait_for(fut, TIMEOUT)


run(main)
