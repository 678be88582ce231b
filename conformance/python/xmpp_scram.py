"""Log in with only the SASL mechanisms given (comma-separated, e.g.
SCRAM-SHA-256): prints {"ok": true, "jid", "mech"} once the session is
up (slixmpp checks the server's SCRAM signature: mutual authentication),
or {"ok": false, "reason"}.

usage: xmpp_scram.py HOST PORT DOMAIN USER PASSWORD MECHS"""

from xmpp_common import emit, make_client, run, start


async def main(host, port, domain, user, password, mechs):
    client = make_client(f"{user}@{domain}", password)
    client["feature_mechanisms"].use_mechs = set(mechs.split(","))
    # The test gateway has no certificate; SCRAM never sends the password.
    client["feature_mechanisms"].unencrypted_scram = True
    try:
        await start(client, host, port)
    except RuntimeError as exc:
        emit({"ok": False, "reason": str(exc)})
        return
    emit({"ok": True, "jid": str(client.boundjid), "mech": client["feature_mechanisms"].mech.name})
    await client.disconnect()


run(main)
