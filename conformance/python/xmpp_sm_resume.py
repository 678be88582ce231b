"""XEP-0198 resumption loses nothing: B (stream management on) gets m1..m3
from A, then B's TCP connection is cut without closing the stream; A sends
m4..m6 meanwhile; B reconnects and resumes. Prints {"resumed": bool,
"received": [...records]} with everything B got, across both connections.

usage: xmpp_sm_resume.py HOST PORT DOMAIN A A_TOKEN B B_TOKEN"""

import asyncio

from xmpp_common import TIMEOUT, durable, emit, event_future, make_client, message_record, run, start


async def main(host, port, domain, a, a_token, b, b_token):
    alice = make_client(f"{a}@{domain}", a_token)
    bob = make_client(f"{b}@{domain}", b_token, plugins=("xep_0030", "xep_0184", "xep_0199", "xep_0198"))
    received = []
    waiters = []

    def on_message(msg):
        if msg["body"]:
            received.append(message_record(msg))
            for count, fut in waiters:
                if len({r["body"] for r in received}) >= count and not fut.done():
                    fut.set_result(True)

    def bodies_reach(count):
        fut = asyncio.get_event_loop().create_future()
        waiters.append((count, fut))
        on_message_check = len({r["body"] for r in received}) >= count
        if on_message_check:
            fut.set_result(True)
        return fut

    bob.add_event_handler("message", on_message)
    enabled = event_future(bob, "sm_enabled")
    await start(alice, host, port)
    await start(bob, host, port)
    await asyncio.wait_for(enabled, TIMEOUT)

    for i in (1, 2, 3):
        alice.send_message(mto=f"{b}@{domain}", mbody=f"m{i}", mtype="chat")
    await asyncio.wait_for(bodies_reach(3), TIMEOUT)

    # Cut the link: no </stream:stream>, the session stays resumable.
    killed = event_future(bob, "disconnected")
    bob.abort()
    await asyncio.wait_for(killed, TIMEOUT)
    for i in (4, 5, 6):
        alice.send_message(mto=f"{b}@{domain}", mbody=f"m{i}", mtype="chat")
    await durable(alice)

    resumed = event_future(bob, "session_resumed")
    bob.connect(host, int(port))
    was_resumed = True
    try:
        await asyncio.wait_for(resumed, TIMEOUT)
    except asyncio.TimeoutError:
        was_resumed = False
    if was_resumed:
        await asyncio.wait_for(bodies_reach(6), TIMEOUT)
    emit({"resumed": was_resumed, "received": received})
    await alice.disconnect()
    await bob.disconnect()


run(main)
