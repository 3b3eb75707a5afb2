#!/usr/bin/python3
"""confluent-kafka-python (librdkafka) driver for the Sluice end-to-end tests.

Subcommands (all take --bootstrap, and --sasl-mechanism/--user/--password,
--ca-file for SASL and TLS):

  produce  --topic T --count N [--prefix P]   values P-0 .. P-(N-1), keys k0..
  consume  --topic T --count N [--group G --commit]
           prints one JSON object per record on stdout
  metadata prints {"brokers": [...], "topics": [...]} as JSON

Errors go to stderr as one JSON object {"error", "name", "code"} (name is the
Kafka error name, e.g. TOPIC_AUTHORIZATION_FAILED) and the exit status is 1;
bad usage exits 2.

Run it with Debian's /usr/bin/python3, which has python3-confluent-kafka.
"""

import argparse
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


class DriverError(Exception):
    def __init__(self, message, name="", code=None):
        super().__init__(message)
        self.name = name
        self.code = code


def from_kafka_error(err, context):
    """DriverError from a confluent_kafka.KafkaError. librdkafka reports a
    refused SASL login as the local _AUTHENTICATION error; it is named as the
    broker's SASL_AUTHENTICATION_FAILED (58) so tests assert one name."""
    if err.code() == KafkaError._AUTHENTICATION:
        return DriverError("%s: %s" % (context, err.str()), "SASL_AUTHENTICATION_FAILED", 58)
    return DriverError("%s: %s" % (context, err.str()), err.name(), err.code())


def base_config(args):
    conf = {
        "bootstrap.servers": args.bootstrap,
        "client.id": "sluice-e2e-python",
        "broker.address.family": "v4",
    }
    password = args.password if args.password is not None else os.environ.get("SLUICE_TEST_PASSWORD")
    if args.sasl_mechanism:
        conf["sasl.mechanism"] = args.sasl_mechanism
        conf["sasl.username"] = args.user or ""
        conf["sasl.password"] = password or ""
    tls = bool(args.ca_file)
    if args.sasl_mechanism:
        conf["security.protocol"] = "SASL_SSL" if tls else "SASL_PLAINTEXT"
    elif tls:
        conf["security.protocol"] = "SSL"
    if tls:
        conf["ssl.ca.location"] = args.ca_file
        # Test certificates name 127.0.0.1 / localhost; keep verification on.
        conf["ssl.endpoint.identification.algorithm"] = "https"
    if args.debug:
        conf["debug"] = args.debug
    return conf


def record_error(errors):
    """error_cb that keeps fatal and authentication/authorization errors."""

    def cb(err):
        if err.fatal() or err.code() in (
            KafkaError._AUTHENTICATION,
            KafkaError.SASL_AUTHENTICATION_FAILED,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            KafkaError._SSL,
        ):
            errors.append(err)
        else:
            print(json.dumps({"warning": err.str(), "name": err.name(), "code": err.code()}), file=sys.stderr)

    return cb


def cmd_produce(args):
    errors = []
    conf = base_config(args)
    conf.update({"acks": "all", "error_cb": record_error(errors), "linger.ms": 5})
    p = Producer(conf)
    failures = []
    delivered = [0]

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)
        else:
            delivered[0] += 1

    deadline = time.monotonic() + args.timeout
    for i in range(args.count):
        while True:
            try:
                p.produce(args.topic, key=b"k%d" % i, value=("%s-%d" % (args.prefix, i)).encode(), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
        if errors:
            raise from_kafka_error(errors[0], "produce")
    while len(p) > 0 and time.monotonic() < deadline and not errors:
        p.flush(0.5)
    if errors:
        raise from_kafka_error(errors[0], "produce")
    if failures:
        raise from_kafka_error(failures[0], "delivery")
    if len(p) > 0:
        raise DriverError("produce: %d records not delivered within %ss" % (len(p), args.timeout), "_TIMED_OUT")
    print(json.dumps({"produced": delivered[0], "topic": args.topic}))


def emit(msg):
    key = msg.key()
    value = msg.value()
    print(
        json.dumps(
            {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": key.decode("utf-8", "replace") if key is not None else None,
                "value": value.decode("utf-8", "replace") if value is not None else None,
            }
        ),
        flush=True,
    )


def cmd_consume(args):
    errors = []
    conf = base_config(args)
    grouped = bool(args.group)
    conf.update(
        {
            "group.id": args.group or "sluice-e2e-assign-%s" % uuid.uuid4().hex,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "session.timeout.ms": 10000,
            "error_cb": record_error(errors),
        }
    )
    c = Consumer(conf)
    try:
        if grouped:
            c.subscribe([args.topic])
        else:
            md = c.list_topics(args.topic, timeout=args.timeout)
            tmd = md.topics.get(args.topic)
            if tmd is None:
                raise DriverError("consume: topic %s not in metadata" % args.topic, "UNKNOWN_TOPIC_OR_PART", 3)
            if tmd.error is not None:
                raise from_kafka_error(tmd.error, "consume metadata")
            c.assign([TopicPartition(args.topic, p, -2) for p in sorted(tmd.partitions)])  # -2: OFFSET_BEGINNING

        got = 0
        positions = {}
        deadline = time.monotonic() + args.timeout
        while got < args.count:
            if errors:
                raise from_kafka_error(errors[0], "consume")
            if time.monotonic() > deadline:
                raise DriverError("consume: got %d of %d records within %ss" % (got, args.count, args.timeout), "_TIMED_OUT")
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise from_kafka_error(msg.error(), "consume")
            emit(msg)
            positions[msg.partition()] = msg.offset() + 1
            got += 1
        if grouped and args.commit:
            offsets = [TopicPartition(args.topic, p, o) for p, o in sorted(positions.items())]
            for tp in c.commit(offsets=offsets, asynchronous=False) or []:
                if tp.error is not None:
                    raise from_kafka_error(tp.error, "commit")
    finally:
        c.close()


def cmd_metadata(args):
    errors = []
    conf = base_config(args)
    conf["error_cb"] = record_error(errors)
    admin = AdminClient(conf)
    deadline = time.monotonic() + args.timeout
    md = None
    while md is None:
        if errors:
            raise from_kafka_error(errors[0], "metadata")
        try:
            md = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as e:
            if time.monotonic() >= deadline:
                raise
            admin.poll(0.1)
    out = {
        "cluster_id": md.cluster_id,
        "controller_id": md.controller_id,
        "brokers": [{"id": b.id, "host": b.host, "port": b.port} for _, b in sorted(md.brokers.items())],
        "topics": [],
    }
    for name, t in sorted(md.topics.items()):
        if t.error is not None:
            raise from_kafka_error(t.error, "metadata topic %s" % name)
        out["topics"].append(
            {
                "name": name,
                "partitions": [
                    {"id": p.id, "leader": p.leader, "replicas": list(p.replicas)} for _, p in sorted(t.partitions.items())
                ],
            }
        )
    print(json.dumps(out))


def parse(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap", required=True, help="host:port[,host:port]")
    common.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    common.add_argument("--user")
    common.add_argument("--password", help="default: $SLUICE_TEST_PASSWORD")
    common.add_argument("--ca-file", help="enables TLS, verifying the server against this CA")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds")
    common.add_argument("--debug", help="librdkafka debug contexts, e.g. broker,protocol")

    ap = argparse.ArgumentParser(prog="confluent_driver.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce", parents=[common])
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefix", default="msg")
    c = sub.add_parser("consume", parents=[common])
    c.add_argument("--topic", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--group")
    c.add_argument("--commit", action="store_true")
    sub.add_parser("metadata", parents=[common])
    args = ap.parse_args(argv)
    if getattr(args, "commit", False) and not args.group:
        ap.error("--commit needs --group")
    if getattr(args, "count", 1) < 0:
        ap.error("--count must not be negative")
    return args


def main(argv):
    args = parse(argv)
    try:
        {"produce": cmd_produce, "consume": cmd_consume, "metadata": cmd_metadata}[args.cmd](args)
    except DriverError as e:
        print(json.dumps({"error": str(e), "name": e.name, "code": e.code}), file=sys.stderr)
        return 1
    except KafkaException as e:
        err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
        if err is not None:
            print(json.dumps({"error": err.str(), "name": err.name(), "code": err.code()}), file=sys.stderr)
        else:
            print(json.dumps({"error": str(e), "name": "", "code": None}), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
