#!/usr/bin/python3
"""confluent-kafka-python (librdkafka) driver for the Sluice end-to-end tests.

Subcommands (all take --bootstrap, and --sasl-mechanism/--user/--password,
--ca-file for SASL and TLS):

  produce  --topic T --count N [--prefix P]   values P-0 .. P-(N-1), keys k0..
           [--value-hex H]  every value is the bytes H instead
  consume  --topic T --count N [--group G --commit]
           [--isolation read_committed|read_uncommitted]
           [--avro-registry URL]  also decode Confluent wire-format Avro
           prints one JSON object per record on stdout
  metadata [--topic T]  prints {"brokers": [...], "topics": [...]} as JSON:
           every topic, or only T (a topic answered with an error, e.g.
           TOPIC_AUTHORIZATION_FAILED, is reported as a failure)

Errors go to stderr as one JSON object {"error", "name", "code"} (name is the
Kafka error name, e.g. TOPIC_AUTHORIZATION_FAILED) and the exit status is 1;
bad usage exits 2.

Run it with Debian's /usr/bin/python3, which has python3-confluent-kafka.
"""

import argparse
import base64
import datetime
import decimal
import io
import json
import os
import sys
import time
import urllib.request
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
    fixed = bytes.fromhex(args.value_hex) if args.value_hex is not None else None
    for i in range(args.count):
        value = fixed if fixed is not None else ("%s-%d" % (args.prefix, i)).encode()
        while True:
            try:
                p.produce(args.topic, key=b"k%d" % i, value=value, on_delivery=on_delivery)
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


class AvroDecoder:
    """Decodes Confluent wire-format values (magic 0, 4-byte big-endian
    schema id, Avro binary) with Apache Avro's Python library, fetching each
    writer schema once from the registry (GET /schemas/ids/{id})."""

    def __init__(self, url):
        import avro.io
        import avro.schema

        self.avro_io = avro.io
        self.avro_schema = avro.schema
        self.url = url.rstrip("/")
        self.schemas = {}

    def schema(self, sid):
        if sid not in self.schemas:
            with urllib.request.urlopen("%s/schemas/ids/%d" % (self.url, sid), timeout=10) as r:
                doc = json.load(r)
            self.schemas[sid] = self.avro_schema.parse(doc["schema"])
        return self.schemas[sid]

    def decode(self, value):
        """Returns (schema id, decoded value as JSON-able data)."""
        if len(value) < 5 or value[0] != 0:
            raise ValueError("not in confluent wire format: %d bytes, first %r" % (len(value), value[:1]))
        sid = int.from_bytes(value[1:5], "big")
        buf = io.BytesIO(value[5:])
        datum = self.avro_io.DatumReader(self.schema(sid)).read(self.avro_io.BinaryDecoder(buf))
        rest = len(value) - 5 - buf.tell()
        if rest:
            raise ValueError("%d bytes left after the record (schema id %d)" % (rest, sid))
        return sid, plain(datum)


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(v):
    """JSON-able form of a decoded Avro value, the same as the kafkajs
    driver's: decimal as its decimal text, timestamp-millis as epoch
    milliseconds, date as days since the epoch, bytes and fixed as hex."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(v, datetime.date):
        return (v - datetime.date(1970, 1, 1)).days
    if isinstance(v, datetime.time):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return str(v)
    return v


def emit(msg, avro_decoder=None):
    key = msg.key()
    value = msg.value()
    rec = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "value": value.decode("utf-8", "replace") if value is not None else None,
    }
    if avro_decoder is not None:
        rec["value_b64"] = base64.b64encode(value).decode() if value is not None else None
        rec["headers"] = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in (msg.headers() or [])}
        rec["avro"] = None
        if value is not None:
            try:
                rec["schema_id"], rec["avro"] = avro_decoder.decode(value)
            except Exception as e:  # reported per record; the test decides
                rec["avro_error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(rec), flush=True)


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
    if args.isolation:
        conf["isolation.level"] = args.isolation
    avro_decoder = AvroDecoder(args.avro_registry) if args.avro_registry else None
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
            emit(msg, avro_decoder)
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
            md = admin.list_topics(topic=args.topic, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
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
    p.add_argument("--value-hex", help="produce these bytes (hex) as every value instead of P-i")
    c = sub.add_parser("consume", parents=[common])
    c.add_argument("--topic", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--group")
    c.add_argument("--commit", action="store_true")
    c.add_argument("--isolation", choices=["read_committed", "read_uncommitted"], help="default: librdkafka's (read_committed)")
    c.add_argument("--avro-registry", help="schema registry URL: decode values as Confluent wire-format Avro")
    m = sub.add_parser("metadata", parents=[common])
    m.add_argument("--topic", help="describe only this topic")
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
