"""A makes a room by joining one that does not exist (XEP-0045 §10.1),
accepts it as an instant room (an empty submitted form), makes B a
member with the affiliation list, and B joins. Prints one JSON object
(or {"join_error": condition} when the server does not make rooms).

usage: xmpp_muc_create.py HOST PORT DOMAIN A A_TOKEN B B_TOKEN ROOM"""

from slixmpp.exceptions import PresenceError
from xmpp_common import TIMEOUT, emit, make_client, run, start

PLUGINS = ("xep_0030", "xep_0045", "xep_0199")


async def main(host, port, domain, a, a_token, b, b_token, group):
    alice = make_client(f"{a}@{domain}", a_token, PLUGINS)
    bob = make_client(f"{b}@{domain}", b_token, PLUGINS)
    await start(alice, host, port)
    await start(bob, host, port)
    room = f"{group}@groups.{domain}"
    out = {}
    try:
        own, _, _, _ = await alice["xep_0045"].join_muc_wait(room, "maker", maxstanzas=0, timeout=TIMEOUT)
    except PresenceError as exc:
        emit({"join_error": exc.presence["error"]["condition"]})
        await alice.disconnect()
        await bob.disconnect()
        return
    out["codes"] = sorted(own["muc"]["status_codes"])
    out["affiliation"] = own["muc"]["affiliation"]
    instant = alice["xep_0004"].make_form(ftype="submit")
    await alice["xep_0045"].set_room_config(room, instant, timeout=TIMEOUT)
    out["instant"] = "accepted"
    await alice["xep_0045"].send_affiliation_list(room, [(f"{b}@{domain}", "member")], timeout=TIMEOUT)
    joined, _, occupants, _ = await bob["xep_0045"].join_muc_wait(room, "guest", maxstanzas=0, timeout=TIMEOUT)
    out["bob_codes"] = sorted(joined["muc"]["status_codes"])
    out["bob_sees"] = sorted(p["from"].resource for p in occupants)
    emit(out)
    await alice.disconnect()
    await bob.disconnect()


run(main)
