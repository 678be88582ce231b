"""Two members join their group as a MUC room with slixmpp's
join_muc_wait (occupants, self-presence, history, subject) under nicks
of their own, talk, look at the room's disco, query the room's archive
(XEP-0313 to the room's JID), Alice changes her nick
and leaves with a status that Bob sees. Prints one JSON object.

usage: xmpp_muc.py HOST PORT DOMAIN A A_TOKEN B B_TOKEN GROUP"""

import asyncio

from xml.etree import ElementTree as ET

from xmpp_common import TIMEOUT, emit, event_future, make_client, on_every_message, run, start

PLUGINS = ("xep_0030", "xep_0045", "xep_0199")


async def main(host, port, domain, a, a_token, b, b_token, group):
    alice = make_client(f"{a}@{domain}", a_token, PLUGINS)
    bob = make_client(f"{b}@{domain}", b_token, PLUGINS)
    await start(alice, host, port)
    await start(bob, host, port)
    room = f"{group}@groups.{domain}"
    out = {}
    from slixmpp.exceptions import PresenceError

    try:
        await bob["xep_0045"].join_muc_wait(room, "bob-nick", maxstanzas=0, timeout=TIMEOUT)
        alice_seen = event_future(bob, f"muc::{room}::got_online")
        own, subject, occupants, history = await alice["xep_0045"].join_muc_wait(
            room, "alice-nick", maxstanzas=10, timeout=TIMEOUT
        )
    except PresenceError as exc:
        emit({"join_error": exc.presence["error"]["condition"]})
        await alice.disconnect()
        await bob.disconnect()
        return
    out["self_codes"] = sorted(own["muc"]["status_codes"])
    out["self_nick"] = own["from"].resource
    out["self_affiliation"] = own["muc"]["affiliation"]
    out["subject"] = subject["subject"]
    out["occupants"] = sorted(p["from"].resource for p in occupants)
    out["history"] = [h["body"] for h in history]
    seen = await asyncio.wait_for(alice_seen, TIMEOUT)
    out["bob_saw_join"] = seen["from"].resource

    got = event_future(bob, "groupchat_message")
    reflected = event_future(alice, "groupchat_message")
    m = alice.make_message(mto=room, mbody="hello room", mtype="groupchat")
    out["sent_id"] = m["id"]
    m.send()
    msg = await asyncio.wait_for(got, TIMEOUT)
    out["bob_got"] = {"from": str(msg["from"]), "body": msg["body"]}
    ref = await asyncio.wait_for(reflected, TIMEOUT)
    out["reflection_id"] = ref["id"]

    # The room's archive, newest page (XEP-0313 §4.1.3).
    mam, rsm = "urn:xmpp:mam:2", "http://jabber.org/protocol/rsm"
    archived = []

    def on_archived(msg):
        result = msg.xml.find(f"{{{mam}}}result")
        if result is None or result.get("queryid") != "room-q":
            return
        inner = result.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message")
        body = inner.find("{jabber:client}body") if inner is not None else None
        archived.append({"from": str(msg["from"]), "type": inner.get("type") if inner is not None else None,
                         "body": body.text if body is not None else None})

    on_every_message(alice, on_archived)
    iq = alice.make_iq_set(ito=room)
    iq.append(ET.fromstring(
        f"<query xmlns='{mam}' queryid='room-q'>"
        f"<set xmlns='{rsm}'><max>10</max><before/></set></query>"
    ))
    answer = await iq.send(timeout=TIMEOUT)
    out["archive_fin_from"] = str(answer["from"])
    out["archive"] = archived

    info = await alice["xep_0030"].get_info(jid=room, timeout=TIMEOUT)
    out["room_identities"] = [list(i)[:2] for i in info["disco_info"]["identities"]]
    out["room_has_muc"] = "http://jabber.org/protocol/muc" in info["disco_info"]["features"]

    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    renamed = asyncio.get_event_loop().create_future()

    def on_bob_presence(pres):
        if pres["type"] == "unavailable" and pres["from"] == f"{room}/alice-nick" and not renamed.done():
            renamed.set_result(pres)

    bob.register_handler(Callback("rename", MatchXPath("{jabber:client}presence"), on_bob_presence))
    nick = await alice["xep_0045"].set_self_nick(room, "alice-2", timeout=TIMEOUT)
    out["new_nick"] = nick
    gone = await asyncio.wait_for(renamed, TIMEOUT)
    out["rename_codes"] = sorted(gone["muc"]["status_codes"])
    out["rename_item_nick"] = gone["muc"]["item_nick"]

    # slixmpp forgets the room on leave_muc, before the answer comes.
    left = asyncio.get_event_loop().create_future()
    own_jid = f"{room}/alice-2"

    def on_presence(pres):
        if pres["type"] == "unavailable" and pres["from"] == own_jid and not left.done():
            left.set_result(pres)

    alice.register_handler(Callback("leave", MatchXPath("{jabber:client}presence"), on_presence))
    bob_saw_leave = event_future(bob, f"muc::{room}::got_offline")
    alice["xep_0045"].leave_muc(room, "alice-2", "bye now")
    gone = await asyncio.wait_for(left, TIMEOUT)
    out["left_from"] = str(gone["from"])
    out["left_codes"] = sorted(gone["muc"]["status_codes"])
    seen = await asyncio.wait_for(bob_saw_leave, TIMEOUT)
    out["bob_saw_leave"] = {"nick": seen["from"].resource, "status": seen["status"]}

    emit(out)
    await alice.disconnect()
    await bob.disconnect()


run(main)
