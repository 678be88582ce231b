"""A scriptable paho-mqtt client for the conformance tests.

Reads one JSON command per line on stdin, prints one JSON event per line
on stdout. The Rust side (`imgate_conformance::mqtt::MqttAgent`) drives it
and waits for events with bounded timeouts. The network loop runs in a
thread with `client.loop()` (never auto-reconnects). Every blocking step
has its own timeout; the whole process exits after `--max-seconds`.

Once connected, every client call runs on the network thread: paho's
WebSocket transport is not safe for writes from two threads at once (its
frame buffer is shared, so a PUBACK written by the loop while a PUBLISH is
written from the command thread can go out twice or cut, which a server
rightly refuses as a malformed packet).

Commands: connect, subscribe, unsubscribe, publish, ack, disconnect, crash.
Events: connack, suback, unsuback, published, message, disconnected, error.
"""

import json
import os
import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT = sys.argv[1], int(sys.argv[2])
MAX_SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
LOCK = threading.Lock()


def emit(**event):
    with LOCK:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def rc_value(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


def props_json(props):
    if props is None:
        return {}
    out = {}
    for name in ("ContentType", "PayloadFormatIndicator", "MessageExpiryInterval",
                 "SubscriptionIdentifier", "UserProperty", "TopicAlias",
                 "ReceiveMaximum", "TopicAliasMaximum", "AssignedClientIdentifier",
                 "ResponseTopic", "ReasonString", "SessionExpiryInterval"):
        if hasattr(props, name):
            value = getattr(props, name)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            out[name] = value
    return out


def make_props(packet_type, spec):
    if not spec:
        return None
    props = Properties(packet_type)
    for key, value in spec.items():
        if key == "UserProperty":
            value = [tuple(kv) for kv in value]
        setattr(props, key, value)
    return props


class Agent:
    def __init__(self):
        self.client = None
        self.running = False
        self.thread = None
        # Commands for the network thread (see the module docstring).
        self.commands = queue.SimpleQueue()

    def run_queued(self):
        while True:
            try:
                c = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                self.execute(c)
            except Exception as e:
                emit(event="error", error=repr(e))

    def loop(self):
        while self.running:
            self.run_queued()
            try:
                rc = self.client.loop(timeout=0.02)
            except Exception as e:  # socket gone
                emit(event="error", error=str(e))
                rc = 1
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.running = False
        # Commands that arrived as the loop stopped still run (in order).
        self.run_queued()

    def connect(self, c):
        version = mqtt.MQTTv5 if c.get("version", 5) == 5 else mqtt.MQTTv311
        kwargs = dict(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                      client_id=c.get("client_id", ""), protocol=version)
        if version == mqtt.MQTTv311:
            kwargs["clean_session"] = c.get("clean", True)
        # "transport": "websockets" speaks MQTT over WebSocket (the
        # gateway's `ws` listener, path "/mqtt", subprotocol "mqtt").
        transport = c.get("transport", "tcp")
        cl = mqtt.Client(**kwargs, transport=transport)
        if transport == "websockets":
            cl.ws_set_options(path=c.get("ws_path", "/mqtt"))
        cl.manual_ack_set(c.get("manual_ack", False))
        if c.get("user") is not None:
            cl.username_pw_set(c["user"], c.get("token"))
        if c.get("will"):
            w = c["will"]
            cl.will_set(w["topic"], w.get("payload", ""), w.get("qos", 0), w.get("retain", False),
                        properties=make_props(PacketTypes.WILLMESSAGE, w.get("props")))

        def on_connect(client, userdata, flags, rc, props):
            emit(event="connack", rc=rc_value(rc), session_present=bool(flags.session_present),
                 props=props_json(props))

        def on_subscribe(client, userdata, mid, rcs, props):
            emit(event="suback", mid=mid, rcs=[rc_value(r) for r in rcs])

        def on_unsubscribe(client, userdata, mid, rcs, props):
            emit(event="unsuback", mid=mid, rcs=[rc_value(r) for r in rcs])

        def on_publish(client, userdata, mid, rc, props):
            emit(event="published", mid=mid, rc=rc_value(rc))

        def on_message(client, userdata, msg):
            emit(event="message", topic=msg.topic, payload=msg.payload.decode("utf-8", "replace"),
                 qos=msg.qos, retain=bool(msg.retain), dup=bool(msg.dup), mid=msg.mid,
                 props=props_json(getattr(msg, "properties", None)))

        def on_disconnect(client, userdata, flags, rc, props):
            emit(event="disconnected", rc=rc_value(rc))

        cl.on_connect = on_connect
        cl.on_subscribe = on_subscribe
        cl.on_unsubscribe = on_unsubscribe
        cl.on_publish = on_publish
        cl.on_message = on_message
        cl.on_disconnect = on_disconnect
        self.client = cl
        conn_props = None
        clean_start = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if version == mqtt.MQTTv5:
            conn_props = make_props(PacketTypes.CONNECT, c.get("props"))
            clean_start = c.get("clean", True)
        try:
            if version == mqtt.MQTTv5:
                cl.connect(HOST, PORT, keepalive=c.get("keepalive", 30), clean_start=clean_start,
                           properties=conn_props)
            else:
                cl.connect(HOST, PORT, keepalive=c.get("keepalive", 30))
        except Exception as e:
            emit(event="error", error=str(e))
            return
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def run(self, c):
        op = c["op"]
        if op == "connect":
            self.connect(c)
        elif op == "crash":
            # Close the socket without DISCONNECT (the will must fire).
            os._exit(0)
        elif op == "exit":
            os._exit(0)
        elif self.running:
            self.commands.put(c)
        else:
            self.execute(c)

    def execute(self, c):
        op = c["op"]
        if op == "subscribe":
            opts = SubscribeOptions(qos=c.get("qos", 1), noLocal=c.get("no_local", False),
                                    retainAsPublished=c.get("rap", False),
                                    retainHandling=c.get("retain_handling", 0))
            if self.client._protocol == mqtt.MQTTv5:
                props = make_props(PacketTypes.SUBSCRIBE, c.get("props"))
                _, mid = self.client.subscribe(c["topic"], options=opts, properties=props)
            else:
                _, mid = self.client.subscribe(c["topic"], qos=c.get("qos", 1))
            emit(event="subscribe_sent", mid=mid)
        elif op == "unsubscribe":
            self.client.unsubscribe(c["topic"])
        elif op == "publish":
            payload = c.get("payload", "")
            if c.get("payload_hex") is not None:
                payload = bytes.fromhex(c["payload_hex"])
            props = None
            if self.client._protocol == mqtt.MQTTv5:
                props = make_props(PacketTypes.PUBLISH, c.get("props"))
            info = self.client.publish(c["topic"], payload, qos=c.get("qos", 0),
                                       retain=c.get("retain", False), properties=props)
            emit(event="publish_sent", mid=info.mid)
        elif op == "ack":
            self.client.ack(c["mid"], c.get("qos", 1))
        elif op == "disconnect":
            props = None
            if self.client._protocol == mqtt.MQTTv5 and c.get("props"):
                props = make_props(PacketTypes.DISCONNECT, c["props"])
            self.client.disconnect(reasoncode=None, properties=props)


def main():
    agent = Agent()
    deadline = time.time() + MAX_SECONDS
    threading.Timer(MAX_SECONDS, lambda: os._exit(3)).start()
    for line in sys.stdin:
        if time.time() > deadline:
            break
        line = line.strip()
        if not line:
            continue
        try:
            agent.run(json.loads(line))
        except Exception as e:
            emit(event="error", error=repr(e))
    os._exit(0)


if __name__ == "__main__":
    main()
