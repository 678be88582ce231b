"""The roster: USER's contacts are the users it has conversations with.
PEER logs in first; USER logs in, reads its roster and sees PEER's
presence (the server answers USER's initial presence with its contacts'
presences). Prints {"roster": {jid: subscription}, "peer_online": [...]}.

usage: xmpp_roster.py HOST PORT DOMAIN USER TOKEN PEER PEER_TOKEN"""

import asyncio

from xmpp_common import TIMEOUT, emit, make_client, run, start


async def main(host, port, domain, user, token, peer, peer_token):
    other = make_client(f"{peer}@{domain}", peer_token)
    await start(other, host, port)
    me = make_client(f"{user}@{domain}", token)
    online = asyncio.get_event_loop().create_future()

    def on_available(pres):
        if pres["from"].bare == f"{peer}@{domain}" and not online.done():
            online.set_result(str(pres["from"]))

    me.add_event_handler("presence_available", on_available)
    await start(me, host, port)
    roster = {str(j): me.client_roster[j]["subscription"] for j in me.client_roster}
    seen = await asyncio.wait_for(online, TIMEOUT)
    emit({"roster": roster, "peer_online": seen})
    await me.disconnect()
    await other.disconnect()


run(main)
