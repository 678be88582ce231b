#!/usr/bin/env python3
"""Generate a migration file for `imgate import` (bench/import.sh).

One JSON line per message in the "message" shape of DESIGN §5.5:
private messages between PAIRS pairs of users and group messages in
GROUPS groups (their `kind: "group"` lines come first, so the file
imports on its own), timestamps 10 ms apart from 2025-01-01, old ids
`PREFIX-<n>`. Usage: gen_import.py COUNT OUT [PREFIX] [GROUPS] [PAIRS]
"""
import json
import sys

count = int(sys.argv[1])
out = sys.argv[2]
prefix = sys.argv[3] if len(sys.argv) > 3 else "bench"
groups = int(sys.argv[4]) if len(sys.argv) > 4 else 10
pairs = int(sys.argv[5]) if len(sys.argv) > 5 else 100
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
members = 20

with open(out, "w") as f:
    for g in range(groups):
        us = [f"{prefix}-u{(g * 7 + k) % (pairs * 2)}" for k in range(members)]
        f.write(json.dumps({"kind": "group", "group": {"targetId": f"{prefix}-g{g}",
                "name": f"group {g}"}, "owner": us[0], "members": us}) + "\n")
    for n in range(count):
        if groups and n % 5 == 0:
            g = (n // 5) % groups
            sender = f"{prefix}-u{(g * 7 + (n % members)) % (pairs * 2)}"
            conv = {"type": 1, "target": f"{prefix}-g{g}", "line": 0}
        else:
            p = n % pairs
            a, b = f"{prefix}-u{2 * p}", f"{prefix}-u{2 * p + 1}"
            sender, target = (a, b) if n % 2 else (b, a)
            conv = {"type": 0, "target": target, "line": 0}
        f.write(json.dumps({
            "messageUid": f"{prefix}-{n}", "sender": sender, "conv": conv,
            "payload": {"type": 1, "searchableContent": f"message {n} from the old server",
                        "pushContent": "", "content": ""},
            "timestamp": T0 + n * 10,
        }, separators=(",", ":")) + "\n")
