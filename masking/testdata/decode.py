#!/usr/bin/python3
"""Decode Avro binary bodies with Apache Avro's Python library.

Usage: decode.py SCHEMA_FILE < bodies
Input: one hex-encoded Avro body (no wire-format header) per line.
Output: one JSON document per line, keys sorted; bytes and fixed as hex;
Python's logical-type values as text: decimals in plain notation
("-123.45"), dates and timestamps in ISO 8601 ("2024-02-29",
"2023-11-14T22:13:20.123000+00:00"), uuids in their canonical form.
"""
import datetime
import decimal
import io
import json
import sys
import uuid

import avro.io
import avro.schema


def norm(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    raise SystemExit("unexpected decoded type %s: %r" % (type(v).__name__, v))


def main():
    with open(sys.argv[1]) as f:
        schema = avro.schema.parse(f.read())
    reader = avro.io.DatumReader(schema)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        buf = io.BytesIO(bytes.fromhex(line))
        rec = reader.read(avro.io.BinaryDecoder(buf))
        if buf.tell() != len(buf.getvalue()):
            raise SystemExit("trailing bytes after record")
        print(json.dumps(norm(rec), sort_keys=True))


if __name__ == "__main__":
    main()
