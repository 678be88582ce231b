"""XEP-0313 paging backwards through a conversation (RSM <before/>, then
<before>first id</before>) until the archive says complete, optionally
within start/end XEP-0082 times. Prints
{"pages": [[bodies of the newest page], [older], ...], "complete": bool}.

usage: xmpp_mam.py HOST PORT DOMAIN USER TOKEN WITH_JID PAGE_SIZE [START [END]]
(an empty START or END is left out of the query)"""

from xml.etree import ElementTree as ET

from xmpp_common import TIMEOUT, emit, make_client, on_every_message, run, start

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"


async def main(host, port, domain, user, token, with_jid, page_size, start_at="", end_at=""):
    client = make_client(f"{user}@{domain}", token)
    results = {}

    def on_message(msg):
        result = msg.xml.find(f"{{{MAM}}}result")
        if result is None:
            return
        inner = result.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message")
        body = inner.find("{jabber:client}body") if inner is not None else None
        results.setdefault(result.get("queryid"), []).append(body.text if body is not None else "")

    on_every_message(client, on_message)
    await start(client, host, port)
    times = "".join(
        f"<field var='{var}'><value>{value}</value></field>"
        for var, value in (("start", start_at), ("end", end_at))
        if value
    )
    pages, before, complete = [], "", False
    for n in range(20):
        qid = f"q{n}"
        iq = client.make_iq_set()
        iq.append(ET.fromstring(
            f"<query xmlns='{MAM}' queryid='{qid}'>"
            "<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
            f"<field var='with'><value>{with_jid}</value></field>{times}</x>"
            f"<set xmlns='{RSM}'><max>{page_size}</max><before>{before}</before></set></query>"
        ))
        answer = await iq.send(timeout=TIMEOUT)
        fin = answer.xml.find(f"{{{MAM}}}fin")
        pages.append(results.get(qid, []))
        if fin.get("complete") in ("true", "1"):
            complete = True
            break
        first = fin.find(f"{{{RSM}}}set/{{{RSM}}}first")
        if first is None:
            break
        before = first.text
    emit({"pages": pages, "complete": complete})
    await client.disconnect()


run(main)
