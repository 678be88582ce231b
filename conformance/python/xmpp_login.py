"""Log in with a token: prints {"ok": true, "jid": bound JID} or
{"ok": false, "error": ...}.

usage: xmpp_login.py HOST PORT DOMAIN USER TOKEN"""

from xmpp_common import emit, make_client, run, start


async def main(host, port, domain, user, token):
    client = make_client(f"{user}@{domain}/requested-resource", token)
    try:
        await start(client, host, port)
    except RuntimeError as exc:
        emit({"ok": False, "reason": str(exc)})
        client.disconnect()
        return
    emit({"ok": True, "jid": str(client.boundjid)})
    await client.disconnect()


run(main)
