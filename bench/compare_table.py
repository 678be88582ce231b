#!/usr/bin/env python3
"""The table of bench/compare.sh (or, with `--rows rabbit`, of
bench/compare_rabbit.sh), from its raw JSON lines.

Usage: compare_table.py [--rows rabbit] RESULTS.jsonl

Each line is {"workload", "server", "run", "report"} (a report of one
imgate-bench run), {"workload", "server", "run", "error"} (the run failed)
or {"server", "unavailable"} (the peer never started). A row compares one
figure of imgate with the same figure of a peer; with several runs the
figure is the median run's. Nothing here invents a number: a missing run
prints why it is missing.
"""

import json
import statistics
import sys

# (row title, imgate's workload, peer's workload, metric, peers; none =
# an imgate-only row).
# The peer's workload differs where imgate's path has no peer equivalent
# (the IM path: the peers' plain QoS 1 figure is the reference).
ROWS = [
    ("plain MQTT QoS 0 flood", "mqtt-qos0-flood", "mqtt-qos0-flood", "rate",
     ["mosquitto", "rabbitmq-mqtt"]),
    ("plain MQTT QoS 1 flood", "mqtt-qos1-flood", "mqtt-qos1-flood", "rate",
     ["mosquitto-lossless", "rabbitmq-mqtt"]),
    ("plain MQTT QoS 1 paced", "mqtt-qos1-paced", "mqtt-qos1-paced", "p99",
     ["mosquitto-lossless", "rabbitmq-mqtt"]),
    ("IM path QoS 1 flood (durable) vs plain QoS 1", "im-flood", "mqtt-qos1-flood", "rate",
     ["mosquitto-lossless", "rabbitmq-mqtt"]),
    ("IM path QoS 1 paced vs plain QoS 1 paced", "im-paced", "mqtt-qos1-paced", "p99",
     ["mosquitto-lossless", "rabbitmq-mqtt"]),
    ("XMPP -> XMPP flood", "xmpp-flood", "xmpp-flood", "rate", ["prosody"]),
    ("XMPP -> XMPP paced", "xmpp-paced", "xmpp-paced", "p99", ["prosody"]),
    ("XMPP -> MQTT flood vs IM MQTT -> MQTT", "xmpp-mqtt-flood", "im-flood", "rate",
     ["imgate"]),
    ("PB -> MQTT flood vs IM MQTT -> MQTT", "pb-mqtt-flood", "im-flood", "rate", ["imgate"]),
    ("idle MQTT connections, RSS each", "idle-mqtt", "idle-mqtt", "kb", ["mosquitto"]),
    ("idle PB connections, RSS each", "idle-pb", "idle-pb", "kb", []),
    ("idle XMPP connections, RSS each", "idle-xmpp", "idle-xmpp", "kb", []),
    ("CPU per delivered msg, plain QoS 1 flood", "mqtt-qos1-flood", "mqtt-qos1-flood", "cpu",
     ["mosquitto-lossless", "rabbitmq-mqtt"]),
    ("CPU per delivered msg, IM flood vs plain QoS 1", "im-flood", "mqtt-qos1-flood", "cpu",
     ["mosquitto-lossless"]),
    ("CPU per delivered msg, XMPP flood", "xmpp-flood", "xmpp-flood", "cpu", ["prosody"]),
]

# bench/compare_rabbit.sh: imgate on the RabbitMQ store against the
# broker's own MQTT plugin, and imgate-only figures of the store.
RABBIT_ROWS = [
    ("IM path on RabbitMQ, 1 node, vs plugin QoS 1 flood", "im-flood-1node",
     "mqtt-qos1-flood", "rate", ["rabbitmq-mqtt"]),
    ("IM path, senders node A -> receivers node B, vs 1 node", "im-flood-2nodes",
     "im-flood-1node", "rate", ["imgate"]),
    ("IM path p99 latency (flood), 1 node vs plugin", "im-flood-1node", "mqtt-qos1-flood",
     "p99", ["rabbitmq-mqtt"]),
    ("CPU per delivered msg (imgate node / beam)", "im-flood-1node", "mqtt-qos1-flood",
     "cpu", ["rabbitmq-mqtt"]),
    ("devices attached to one node: attach rate", "devices", None, "attach", []),
    ("devices attached to one node: RSS each", "devices", None, "rss_dev", []),
    ("devices: broker queues+channels, 10 -> N", "devices", None, "objects", []),
    ("fresh node indexing the log", "index-build", None, "index", []),
]

UNITS = {"rate": "msg/s", "p99": "ms p99", "kb": "KB/conn", "cpu": "us/msg",
         "attach": "devices/s", "rss_dev": "KB/device", "objects": "objects",
         "index": "msg/s of log"}


def load(path):
    runs, errors, unavailable = {}, {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "unavailable" in r:
                unavailable[r["server"]] = r["unavailable"]
            elif "error" in r:
                errors.setdefault((r["workload"], r["server"]), []).append(r["error"])
            elif isinstance(r.get("report"), dict):
                report = dict(r["report"], _run=r.get("run", 0))
                runs.setdefault((r["workload"], r["server"]), []).append(report)
    return runs, errors, unavailable


def value(report, metric):
    """The metric's number in one report, or None."""
    try:
        if metric == "rate":
            return float(report["delivered_msgs_per_sec"])
        if metric == "p99":
            return float(report["latency"]["p99_ms"])
        if metric == "kb":
            v = report.get("kb_per_connection")
            return None if v is None else float(v)
        if metric == "cpu":
            v = (report.get("server") or {}).get("cpu_us_per_delivered")
            return None if v is None else float(v)
        if metric == "attach":
            return float(report["attaches_per_sec"])
        if metric == "rss_dev":
            return float(report["rss_kb_per_device"])
        if metric == "index":
            return float(report["index_build_msgs_per_sec"])
        if metric == "objects":
            return float(report["queues_n"] + report["channels_n"])
    except (KeyError, TypeError, ValueError):
        return None
    return None


def notes(report, metric):
    """What a reader must know next to the number: losses, not sustained."""
    out = []
    lost, dup = report.get("lost"), report.get("duplicated")
    if lost:
        out.append(f"lost {lost}")
    if dup:
        out.append(f"dup {dup}")
    if metric == "p99" and report.get("sustained") is False:
        out.append(f"NOT sustained: {fmt_rate(report.get('delivered_msgs_per_sec'))} msg/s")
    if metric == "kb" and report.get("all_connected") is False:
        out.append(f"only {report.get('alive_at_measurement')} connected")
    if report.get("errors"):
        out.append(f"{report['errors']} errors")
    if metric == "objects":
        out.append(f"{report.get('queues_10')}+{report.get('channels_10')} with 10 devices, "
                   f"{report.get('queues_n')}+{report.get('channels_n')} with {report.get('devices')}")
    if metric == "index":
        out.append(f"{report.get('messages')} msgs in {report.get('index_build_seconds')} s")
    if metric == "attach":
        out.append(f"{report.get('devices')} devices")
    return out


def short(text, limit=48):
    """A reason short enough for a table cell (the JSON has all of it)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt_rate(v):
    if v is None:
        return "?"
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def fmt_ratio(r):
    """Two decimals, or two significant digits for tiny ratios (not 0.00)."""
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def fmt(v, metric):
    if metric in ("rate", "attach", "index"):
        return fmt_rate(v)
    if metric == "kb":
        return f"{v:.2f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def figure(runs, errors, unavailable, workload, server, metric):
    """(text, number) of the median run, or (why-missing, None)."""
    reports = [r for r in runs.get((workload, server), []) if value(r, metric) is not None]
    if not reports:
        if server in unavailable:
            return f"not run: {short(unavailable[server])}", None
        if (workload, server) in errors:
            return f"failed: {short(errors[(workload, server)][-1])}", None
        if runs.get((workload, server)):
            return "no figure in report", None
        return "not run", None
    reports.sort(key=lambda r: value(r, metric))
    median = reports[(len(reports) - 1) // 2]
    v = value(median, metric)
    text = f"{fmt(v, metric)} {UNITS[metric]}"
    extra = notes(median, metric)
    if len(reports) > 1:
        extra.append(f"median of {len(reports)}")
    if extra:
        text += " (" + ", ".join(extra) + ")"
    return text, v


def rss_row(runs):
    reports = sorted(runs.get(("im-flood", "imgate"), []), key=lambda r: r["_run"])
    rss = [(r.get("server") or {}).get("rss_kb_after") for r in reports]
    rss = [v for v in rss if v]
    if not rss:
        return None
    first, last = rss[0] / 1024, rss[-1] / 1024
    return ("imgate RSS after IM floods (first -> last)", "imgate, first run",
            f"{first:.1f} MB", f"{last:.1f} MB after {len(rss)} runs",
            f"{last / first:.2f}" if first else "-")


def main():
    args = sys.argv[1:]
    rows = ROWS
    if args[:2] == ["--rows", "rabbit"]:
        rows, args = RABBIT_ROWS, args[2:]
    path = args[0]
    runs, errors, unavailable = load(path)
    table = []
    for title, im_workload, peer_workload, metric, peers in rows:
        im_text, im_v = figure(runs, errors, unavailable, im_workload, "imgate", metric)
        if not peers:  # imgate only: no peer speaks this protocol
            table.append((title, "-", "no peer", im_text, "-"))
        for peer in peers:
            peer_text, peer_v = figure(runs, errors, unavailable, peer_workload, peer, metric)
            label = peer if peer != "imgate" else "imgate MQTT->MQTT"
            ratio = fmt_ratio(im_v / peer_v) if im_v is not None and peer_v else "-"
            table.append((title, label, peer_text, im_text, ratio))
    rss = rss_row(runs) if rows is ROWS else None
    if rss:
        table.append(rss)
    header = ("workload", "peer", "peer figure", "imgate figure", "imgate/peer")
    widths = [max(len(str(row[i])) for row in table + [header]) for i in range(5)]
    line = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print(line(row))
    print()
    print("ratio = imgate figure / peer figure: above 1 is better for msg/s;")
    print("below 1 is better for ms, KB/conn, us/msg and RSS growth.")


if __name__ == "__main__":
    main()
