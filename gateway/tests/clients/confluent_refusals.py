"""Attempts one thing the produce-only gateway refuses, with confluent-kafka (librdkafka), and prints
one JSON line saying what the client reported. Kafka error codes are given by librdkafka's names
(KafkaError.name(): "GROUP_AUTHORIZATION_FAILED", "_AUTHENTICATION", ...); each error is
reported as [name, code, text].

Argument: a JSON object with bootstrap, mechanism, username, password, topic(s) and "action":
- "produce": produce one record to "topic" and wait for its delivery report or an error_cb
  error; {"delivered": n, "delivery_errors": [error], "client_errors": [error]}.
- "subscribe": a Consumer in group "group" subscribes to "topic" and polls until an error named
  "until" arrives (by default: any error) or the timeout;
  {"message_errors": [error], "client_errors": [error], "messages": n}.
- "assign": a Consumer assign()s partition 0 of "topic" at "offset" (default: the beginning,
  which needs ListOffsets; a number goes straight to Fetch) and polls; answered as "subscribe".
- "create_topics" / "delete_topics": AdminClient on "topics";
  {"results": {topic: error | "ok"}}.
- "transactions": a Producer with "transactional_id" calls init_transactions();
  {"exception": error | null, "fatal": bool, "retriable": bool}.
Optional "config": extra librdkafka properties; "timeout": seconds to wait (default 20)."""
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

args = json.loads(sys.argv[1])
timeout = args.get("timeout", 20)
base = {
    "bootstrap.servers": args["bootstrap"],
    "security.protocol": args.get("security_protocol", "SASL_PLAINTEXT"),
    "sasl.mechanism": args["mechanism"],
    "sasl.username": args["username"],
    "sasl.password": args["password"],
}
base.update(args.get("config", {}))
client_errors = []


def on_error(error):
    client_errors.append(error_pair(error))


def error_pair(error):
    return [error.name(), error.code(), error.str()]


def produce():
    delivery_errors, delivered = [], []

    def on_delivery(error, message):
        if error is not None:
            delivery_errors.append(error_pair(error))
        else:
            delivered.append(message.offset())

    producer = Producer({**base, "acks": "all", "message.timeout.ms": timeout * 1000,
                         "error_cb": on_error})
    producer.produce(args["topic"], value=b'{"refused": true}', on_delivery=on_delivery)
    deadline = time.monotonic() + timeout + 5
    # An authentication failure is reported through error_cb long before the message times out.
    while time.monotonic() < deadline and not delivered and not delivery_errors:
        producer.poll(0.2)
        if any(error[0] == "_AUTHENTICATION" for error in client_errors):
            break
    return {"delivered": len(delivered), "delivery_errors": delivery_errors,
            "client_errors": client_errors, "undelivered": len(producer)}


def subscribe():
    consumer = Consumer({**base, "group.id": args.get("group", "refused-group"),
                         "auto.offset.reset": "earliest", "error_cb": on_error})
    consumer.subscribe([args["topic"]])
    return poll(consumer)


def poll(consumer):
    """Polls until an error named "until" (by default: any error) or the timeout."""
    until = args.get("until")
    message_errors, messages = [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            message_errors.append(error_pair(message.error()))
            if until is None or message.error().name() == until:
                break
        else:
            messages += 1
    consumer.close()
    return {"message_errors": message_errors, "client_errors": client_errors,
            "messages": messages}


def assign():
    consumer = Consumer({**base, "group.id": "never-joined", "enable.auto.commit": False,
                         "error_cb": on_error})
    offset = args.get("offset", OFFSET_BEGINNING)
    consumer.assign([TopicPartition(args["topic"], 0, offset)])
    return poll(consumer)


def admin(create):
    client = AdminClient({**base, "error_cb": on_error})
    if create:
        futures = client.create_topics([NewTopic(t, 1, 1) for t in args["topics"]],
                                       request_timeout=timeout)
    else:
        futures = client.delete_topics(args["topics"], request_timeout=timeout)
    results = {}
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout + 5)
            results[topic] = "ok"
        except KafkaException as exception:
            results[topic] = error_pair(exception.args[0])
    return {"results": results, "client_errors": client_errors}


def transactions():
    producer = Producer({**base, "transactional.id": args["transactional_id"],
                         "error_cb": on_error})
    try:
        producer.init_transactions(timeout)
    except KafkaException as exception:
        error = exception.args[0]
        return {"exception": error_pair(error), "fatal": error.fatal(),
                "retriable": error.retriable(), "client_errors": client_errors}
    return {"exception": None, "client_errors": client_errors}


action = args["action"]
answer = {
    "produce": produce,
    "subscribe": subscribe,
    "assign": assign,
    "create_topics": lambda: admin(True),
    "delete_topics": lambda: admin(False),
    "transactions": transactions,
}[action]()
print(json.dumps(answer))
