"""The group's owner runs its room with slixmpp's XEP-0045 calls: the
configuration form (get, submit with a new room name), the affiliation
list (make CAROL a member), a kick of BOB (role none: 307), BOB's
XEP-0410 self-ping after it, BOB joining again, a nick BOB may not take,
and BOB (not the owner) trying to kick. Prints one JSON object.

usage: xmpp_muc_owner.py HOST PORT DOMAIN A A_TOKEN B B_TOKEN GROUP CAROL"""

import asyncio

from slixmpp.exceptions import IqError, PresenceError
from xmpp_common import TIMEOUT, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0045", "xep_0199")


async def main(host, port, domain, a, a_token, b, b_token, group, carol):
    alice = make_client(f"{a}@{domain}", a_token, PLUGINS)
    bob = make_client(f"{b}@{domain}", b_token, PLUGINS)
    await start(alice, host, port)
    await start(bob, host, port)
    room = f"{group}@groups.{domain}"
    muc_a, muc_b = alice["xep_0045"], bob["xep_0045"]
    out = {}
    own, _, _, _ = await muc_a.join_muc_wait(room, "boss", maxstanzas=0, timeout=TIMEOUT)
    out["owner_affiliation"] = own["muc"]["affiliation"]
    out["owner_role"] = own["muc"]["role"]

    form = await muc_a.get_room_config(room, timeout=TIMEOUT)
    values = form.get_values()
    out["form_fields"] = sorted(values)
    values["muc#roomconfig_roomname"] = "Renamed room"
    values["muc#roomconfig_persistentroom"] = False
    form["values"] = values
    form.reply()
    await muc_a.set_room_config(room, form, timeout=TIMEOUT)
    await muc_a.send_affiliation_list(room, [(f"{carol}@{domain}", "member")], timeout=TIMEOUT)

    await muc_b.join_muc_wait(room, "worker", maxstanzas=0, timeout=TIMEOUT)
    try:
        await bob["xep_0045"].get_room_config(room, timeout=TIMEOUT)
        out["member_config"] = "answered"
    except IqError as exc:
        out["member_config"] = exc.iq["error"]["condition"]

    kicked = event_future(bob, f"muc::{room}::got_offline")
    seen = event_future(alice, f"muc::{room}::got_offline")
    await muc_a.set_role(room, "worker", "none", timeout=TIMEOUT)
    pres = await asyncio.wait_for(kicked, TIMEOUT)
    out["kicked_codes"] = sorted(pres["muc"]["status_codes"])
    pres = await asyncio.wait_for(seen, TIMEOUT)
    out["owner_saw"] = {"nick": pres["from"].resource, "codes": sorted(pres["muc"]["status_codes"])}
    try:
        await bob.plugin["xep_0199"].ping(f"{room}/worker", timeout=TIMEOUT)
        out["self_ping_after_kick"] = "answered"
    except IqError as exc:
        out["self_ping_after_kick"] = exc.iq["error"]["condition"]

    try:
        await muc_b.join_muc_wait(room, "boss", maxstanzas=0, timeout=TIMEOUT)
        out["taken_nick"] = "joined"
    except PresenceError as exc:
        out["taken_nick"] = exc.presence["error"]["condition"]
    again, _, _, _ = await muc_b.join_muc_wait(room, "worker", maxstanzas=0, timeout=TIMEOUT)
    out["rejoined_codes"] = sorted(again["muc"]["status_codes"])
    await bob.plugin["xep_0199"].ping(f"{room}/worker", timeout=TIMEOUT)
    out["self_ping_after_rejoin"] = "answered"
    try:
        await muc_b.set_role(room, "boss", "none", timeout=TIMEOUT)
        out["member_kick"] = "answered"
    except IqError as exc:
        out["member_kick"] = exc.iq["error"]["condition"]

    emit(out)
    await alice.disconnect()
    await bob.disconnect()


run(main)
