"""XEP-0191: USER blocks PEER (and a JID of another server), reads the
block list, PEER's message to USER is refused, USER unblocks both.
Prints {"blocked": [...], "refused": error text, "after": [...]}.

usage: xmpp_blocking.py HOST PORT DOMAIN USER TOKEN PEER PEER_TOKEN"""

import asyncio

from xmpp_common import TIMEOUT, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0191", "xep_0199")


async def main(host, port, domain, user, token, peer, peer_token):
    me = make_client(f"{user}@{domain}", token, PLUGINS)
    other = make_client(f"{peer}@{domain}", peer_token, PLUGINS)
    await start(me, host, port)
    await start(other, host, port)
    await me.plugin["xep_0191"].block([f"{peer}@{domain}", "toto@example.com"], timeout=TIMEOUT)
    blocked = sorted(str(j) for j in await me.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT))
    refused = event_future(other, "message_error")
    other.send_message(mto=f"{user}@{domain}", mbody="let me in", mtype="chat")
    err = await asyncio.wait_for(refused, TIMEOUT)
    await me.plugin["xep_0191"].unblock([f"{peer}@{domain}", "toto@example.com"], timeout=TIMEOUT)
    after = sorted(str(j) for j in await me.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT))
    emit({"blocked": blocked, "refused": err["error"]["text"], "after": after})
    await me.disconnect()
    await other.disconnect()


run(main)
