"""What clients keep on the server for their account: a XEP-0054 vCard,
XEP-0049 private XML (legacy bookmarks) and XEP-0163 PEP items (a
presence-access node like avatars, a whitelist node like XEP-0223
private data). Mode "write": A stores them; B (A's contact) gets the
PEP notification and reads A's vCard and nodes; C (not a contact) may
not read the presence-access node. Mode "read": A reads them back
(after a restart). Prints one JSON object.

usage: xmpp_account_data.py HOST PORT DOMAIN MODE A A_TOKEN [B B_TOKEN C C_TOKEN]"""

import asyncio

from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0048.stanza import Bookmarks
from slixmpp.plugins.xep_0060.stanza import Item
from slixmpp.plugins.xep_0060.stanza.pubsub_event import EventItem
from slixmpp.xmlstream import ElementBase, register_stanza_plugin
from xmpp_common import TIMEOUT, emit, event_future, make_client, run, start

PLUGINS = ("xep_0030", "xep_0048", "xep_0049", "xep_0054", "xep_0060", "xep_0163", "xep_0199")
OPEN_NODE = "urn:example:mood"
PRIVATE_NODE = "urn:example:secret"


class Note(ElementBase):
    namespace = "urn:example:note"
    name = "note"
    plugin_attrib = "note"
    interfaces = {"text"}


register_stanza_plugin(Item, Note)
register_stanza_plugin(EventItem, Note)


def note(text):
    n = Note()
    n["text"] = text
    return n


def whitelist_options(client):
    form = client["xep_0004"].stanza.Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
    form.add_field(var="pubsub#access_model", value="whitelist")
    return form


async def condition(coro):
    try:
        await coro
        return "answered"
    except IqError as exc:
        return exc.iq["error"]["condition"]


async def main(host, port, domain, mode, a, a_token, b=None, b_token=None, c=None, c_token=None):
    alice = make_client(f"{a}@{domain}", a_token, PLUGINS)
    await start(alice, host, port)
    a_jid = f"{a}@{domain}"
    out = {}
    if mode == "read":
        card = await alice["xep_0054"].get_vcard(a_jid, cached=False, timeout=TIMEOUT)
        out["title"] = card["vcard_temp"]["TITLE"]
        got = await alice["xep_0049"].retrieve("bookmarks", timeout=TIMEOUT)
        out["bookmarks"] = [str(c["jid"]) for c in got["private"]["bookmarks"]["conferences"]]
        item = await alice["xep_0060"].get_item(a_jid, OPEN_NODE, "current", timeout=TIMEOUT)
        out["open_item"] = item["pubsub"]["items"]["item"]["note"]["text"]
        emit(out)
        await alice.disconnect()
        return
    bob = make_client(f"{b}@{domain}", b_token, PLUGINS)
    carol = make_client(f"{c}@{domain}", c_token, PLUGINS)
    await start(bob, host, port)
    await start(carol, host, port)

    card = alice["xep_0054"].make_vcard()
    card["TITLE"] = "Chief tester"
    await alice["xep_0054"].publish_vcard(card, timeout=TIMEOUT)
    marks = Bookmarks()
    marks.add_conference("room@groups.example", "me")
    await alice["xep_0049"].store(marks, timeout=TIMEOUT)

    notified = event_future(bob, "pubsub_publish")
    own_notified = event_future(alice, "pubsub_publish")
    await alice["xep_0060"].publish(a_jid, OPEN_NODE, id="current", payload=note("happy"), timeout=TIMEOUT)
    msg = await asyncio.wait_for(notified, TIMEOUT)
    out["bob_notified"] = {
        "from": str(msg["from"]),
        "node": msg["pubsub_event"]["items"]["node"],
        "text": msg["pubsub_event"]["items"]["item"]["note"]["text"],
    }
    own = await asyncio.wait_for(own_notified, TIMEOUT)
    out["alice_notified"] = own["pubsub_event"]["items"]["node"]
    await alice["xep_0060"].publish(
        a_jid, PRIVATE_NODE, id="current", payload=note("hidden"),
        options=whitelist_options(alice), timeout=TIMEOUT,
    )

    theirs = await bob["xep_0054"].get_vcard(a_jid, cached=False, timeout=TIMEOUT)
    out["bob_reads_title"] = theirs["vcard_temp"]["TITLE"]
    item = await bob["xep_0060"].get_item(a_jid, OPEN_NODE, "current", timeout=TIMEOUT)
    out["bob_reads_open"] = item["pubsub"]["items"]["item"]["note"]["text"]
    out["bob_reads_private"] = await condition(
        bob["xep_0060"].get_item(a_jid, PRIVATE_NODE, "current", timeout=TIMEOUT)
    )
    out["carol_reads_open"] = await condition(
        carol["xep_0060"].get_item(a_jid, OPEN_NODE, "current", timeout=TIMEOUT)
    )
    out["bob_writes_vcard"] = await condition(
        bob["xep_0054"].publish_vcard(bob["xep_0054"].make_vcard(), jid=a_jid, timeout=TIMEOUT)
    )
    mine = await alice["xep_0060"].get_item(a_jid, PRIVATE_NODE, "current", timeout=TIMEOUT)
    out["alice_reads_private"] = mine["pubsub"]["items"]["item"]["note"]["text"]
    emit(out)
    for cl in (alice, bob, carol):
        await cl.disconnect()


run(main)
