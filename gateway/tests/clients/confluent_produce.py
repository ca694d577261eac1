"""Produces records through the gateway with confluent-kafka (librdkafka 2.16) and prints one
JSON line: {"delivered": n, "errors": [...], "offsets": [[partition, offset], ...]}.

Argument: a JSON object with bootstrap, mechanism, username, password, topic, records
([{"value": str, "key": str|null, "headers": {name: value}, "partition": int|null,
"timestamp": ms|null}]), and
optional "config" (extra librdkafka properties) and "interval" (seconds between records, waiting
for each acknowledgement: a slow producer that outlives a SASL session). "@path" instead of the
JSON reads it from that file."""
import json
import sys
import time

from confluent_kafka import Producer

# "@path": the argument is in that file (too large for the command line).
raw = sys.argv[1]
if raw.startswith("@"):
    with open(raw[1:], encoding="utf-8") as f:
        raw = f.read()
args = json.loads(raw)
config = {
    "bootstrap.servers": args["bootstrap"],
    "security.protocol": args.get("security_protocol", "SASL_PLAINTEXT"),
    "sasl.mechanism": args["mechanism"],
    "sasl.username": args["username"],
    "sasl.password": args["password"],
    "acks": "all",
    "message.timeout.ms": 20000,
}
config.update(args.get("config", {}))
errors, offsets = [], []


def delivered(error, message):
    if error is not None:
        errors.append(error.name())
    else:
        offsets.append([message.partition(), message.offset()])


auth_errors = []
config["error_cb"] = lambda error: auth_errors.append(error.name())
producer = Producer(config)
for record in args["records"]:
    kwargs = {}
    if record.get("partition") is not None:
        kwargs["partition"] = record["partition"]
    if record.get("timestamp") is not None:
        kwargs["timestamp"] = record["timestamp"]
    producer.produce(
        args["topic"],
        value=None if record.get("value") is None else record["value"].encode(),
        key=None if record.get("key") is None else record["key"].encode(),
        headers=[(k, v.encode()) for k, v in record.get("headers", {}).items()],
        on_delivery=delivered,
        **kwargs,
    )
    if args.get("interval"):
        producer.flush(30)
        time.sleep(args["interval"])
left = producer.flush(30)
print(json.dumps({"delivered": len(offsets), "errors": errors, "client_errors": sorted(set(auth_errors)),
                  "undelivered": left, "offsets": offsets}))
