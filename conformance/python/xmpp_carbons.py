"""XEP-0280 with two devices of one user: the second device enables
carbons, the first sends to PEER (the second sees a sent carbon), PEER
answers (both devices get it). Prints one JSON object.

usage: xmpp_carbons.py HOST PORT DOMAIN A PC_TOKEN PHONE_TOKEN B B_TOKEN"""

import asyncio

from xmpp_common import TIMEOUT, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0199", "xep_0280")


async def main(host, port, domain, a, pc_token, phone_token, b, b_token):
    pc = make_client(f"{a}@{domain}", pc_token, PLUGINS)
    phone = make_client(f"{a}@{domain}", phone_token, PLUGINS)
    bob = make_client(f"{b}@{domain}", b_token, PLUGINS)
    for c in (pc, phone, bob):
        await start(c, host, port)
    out = {}
    await phone["xep_0280"].enable(timeout=TIMEOUT)
    info = await phone["xep_0030"].get_info(jid=domain, timeout=TIMEOUT)
    out["server_carbons"] = "urn:xmpp:carbons:2" in info["disco_info"]["features"]

    carbon = event_future(phone, "carbon_sent")
    pc.send_message(mto=f"{b}@{domain}", mbody="from the pc", mtype="chat")
    c = await asyncio.wait_for(carbon, TIMEOUT)
    fwd = c["carbon_sent"]
    out["carbon_sent"] = {"body": fwd["body"], "to": str(fwd["to"])}

    on_pc = event_future(pc, "message")
    on_phone = event_future(phone, "message")
    bob.send_message(mto=f"{a}@{domain}", mbody="answer", mtype="chat")
    out["pc_got"] = (await asyncio.wait_for(on_pc, TIMEOUT))["body"]
    out["phone_got"] = (await asyncio.wait_for(on_phone, TIMEOUT))["body"]
    emit(out)
    for c in (pc, phone, bob):
        await c.disconnect()


run(main)
