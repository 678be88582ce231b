"""What two real clients do besides chatting: IQs to each other's full JID
(XEP-0092 version, XEP-0030 disco, an absent resource), a XEP-0085 chat
state, XEP-0333 markers, XEP-0444 reactions and a XEP-0308 correction,
each arriving with the ids the receiving client knows. Prints one JSON
object with what each side saw.

usage: xmpp_routing.py HOST PORT DOMAIN A A_TOKEN B B_TOKEN B_DEVICE"""

import asyncio

from xmpp_common import TIMEOUT, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0085", "xep_0092", "xep_0199", "xep_0308", "xep_0333", "xep_0444")


async def main(host, port, domain, a, a_token, b, b_token, b_device):
    alice = make_client(f"{a}@{domain}", a_token, PLUGINS)
    bob = make_client(f"{b}@{domain}", b_token, PLUGINS)
    await start(alice, host, port)
    await start(bob, host, port)
    bob_full = f"{b}@{domain}/{b_device}"
    out = {}

    version = await alice["xep_0092"].get_version(bob_full, timeout=TIMEOUT)
    out["version_from"] = str(version["from"])
    out["version_name"] = version["software_version"]["name"]
    info = await alice["xep_0030"].get_info(jid=bob_full, timeout=TIMEOUT)
    out["disco_features"] = sorted(info["disco_info"]["features"])
    try:
        await alice["xep_0092"].get_version(f"{b}@{domain}/nowhere", timeout=TIMEOUT)
        out["absent"] = "answered"
    except Exception as exc:  # IqError
        out["absent"] = exc.iq["error"]["condition"] if hasattr(exc, "iq") else type(exc).__name__

    state = event_future(bob, "chatstate_composing")
    m = alice.make_message(mto=f"{b}@{domain}", mtype="chat")
    m["chat_state"] = "composing"
    m.send()
    got = await asyncio.wait_for(state, TIMEOUT)
    out["chat_state_from"] = str(got["from"])

    # Bob writes; Alice marks it displayed and reacts; Bob corrects it.
    arrived = event_future(alice, "message")
    sent = bob.make_message(mto=f"{a}@{domain}", mbody="first try", mtype="chat")
    sent["markable"] = True
    out["bob_sent_id"] = sent["id"]
    sent.send()
    msg = await asyncio.wait_for(arrived, TIMEOUT)
    out["alice_saw_id"] = msg["id"]

    displayed = event_future(bob, "marker_displayed")
    alice["xep_0333"].send_marker(msg["from"].bare, msg["id"], "displayed", mtype="chat")
    marker = await asyncio.wait_for(displayed, TIMEOUT)
    out["displayed_id"] = marker["displayed"]["id"]

    reacted = event_future(bob, "reactions")
    alice["xep_0444"].send_reactions(msg["from"].bare, msg["id"], ["👍"])
    reaction = await asyncio.wait_for(reacted, TIMEOUT)
    out["reaction_id"] = reaction["reactions"]["id"]
    out["reactions"] = sorted(reaction["reactions"]["values"])

    corrected = event_future(alice, "message_correction")
    fix = bob["xep_0308"].build_correction(sent["id"], f"{a}@{domain}", mbody="second try")
    fix.send()
    correction = await asyncio.wait_for(corrected, TIMEOUT)
    out["correction_body"] = correction["body"]
    out["correction_replaces"] = correction["replace"]["id"]

    emit(out)
    await alice.disconnect()
    await bob.disconnect()


run(main)
