"""Two slixmpp clients chat with XEP-0184 receipts: A sends N messages to
B, B's client acks each with a receipt, A collects the receipts. Prints
{"received": [...records], "sent_ids": [...], "receipt_ids": [...]}.

usage: xmpp_chat.py HOST PORT DOMAIN A A_TOKEN B B_TOKEN N"""

import asyncio

from xmpp_common import TIMEOUT, emit, make_client, message_record, run, start


async def main(host, port, domain, a, a_token, b, b_token, n):
    n = int(n)
    alice = make_client(f"{a}@{domain}", a_token)
    bob = make_client(f"{b}@{domain}", b_token)
    received, receipts = [], []
    all_received = asyncio.get_event_loop().create_future()
    all_receipts = asyncio.get_event_loop().create_future()

    def on_message(msg):
        if msg["body"]:
            received.append(message_record(msg))
            if len(received) == n and not all_received.done():
                all_received.set_result(True)

    def on_receipt(msg):
        receipts.append(msg["receipt"])
        if len(receipts) == n and not all_receipts.done():
            all_receipts.set_result(True)

    bob.add_event_handler("message", on_message)
    alice.add_event_handler("receipt_received", on_receipt)
    await start(alice, host, port)
    await start(bob, host, port)
    sent_ids = []
    for i in range(n):
        msg = alice.make_message(mto=f"{b}@{domain}", mbody=f"hello {i}", mtype="chat")
        msg["request_receipt"] = True
        sent_ids.append(msg["id"])
        msg.send()
    await asyncio.wait_for(all_received, TIMEOUT)
    await asyncio.wait_for(all_receipts, TIMEOUT)
    emit({"received": received, "sent_ids": sent_ids, "receipt_ids": receipts})
    await alice.disconnect()
    await bob.disconnect()


run(main)
