"""Produces keyed records with headers through the gateway with kafka-python (3.x, idempotent by
default) and prints one JSON line: {"delivered": n, "errors": [class name], "offsets":
[[partition, offset], ...], "idempotent": bool}. A failure before any record is sent is reported
as {"delivered": 0, "exception": class name, "message": text}.

Argument: a JSON object with bootstrap, mechanism, username, password, topic, records
([{"value": str, "key": str|null, "headers": {name: value}}]), and optional "config" (extra
KafkaProducer keyword arguments, e.g. {"compression_type": "lz4"})."""
import json
import sys

from kafka import KafkaProducer

args = json.loads(sys.argv[1])
config = {
    "bootstrap_servers": args["bootstrap"],
    "security_protocol": args.get("security_protocol", "SASL_PLAINTEXT"),
    "sasl_mechanism": args["mechanism"],
    "sasl_plain_username": args["username"],
    "sasl_plain_password": args["password"],
    "acks": "all",
    "request_timeout_ms": 20000,
    "max_block_ms": 20000,
}
config.update(args.get("config", {}))
try:
    producer = KafkaProducer(**config)
except Exception as error:  # noqa: BLE001 - the class name is the answer
    print(json.dumps({"delivered": 0, "exception": type(error).__name__, "message": str(error)}))
    sys.exit(0)

futures = []
for record in args["records"]:
    try:
        futures.append(
            producer.send(
                args["topic"],
                value=None if record.get("value") is None else record["value"].encode(),
                key=None if record.get("key") is None else record["key"].encode(),
                headers=[(k, v.encode()) for k, v in record.get("headers", {}).items()],
            )
        )
    except Exception as error:  # noqa: BLE001
        futures.append(error)
producer.flush(30)
errors, offsets = [], []
for future in futures:
    if isinstance(future, Exception):
        errors.append(type(future).__name__)
        continue
    try:
        metadata = future.get(timeout=30)
        offsets.append([metadata.partition, metadata.offset])
    except Exception as error:  # noqa: BLE001
        errors.append(type(error).__name__)
# kafka-python turns idempotence off (with a warning) when other settings conflict with it.
idempotent = bool(producer.config["enable_idempotence"])
producer.close(10)
print(json.dumps({"delivered": len(offsets), "errors": errors, "offsets": offsets,
                  "idempotent": idempotent}))
