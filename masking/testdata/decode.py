#!/usr/bin/python3
"""Decode Avro binary bodies with Apache Avro's Python library.

Usage: decode.py SCHEMA_FILE < bodies
Input: one hex-encoded Avro body (no wire-format header) per line.
Output: one JSON document per line, keys sorted; bytes as hex, decimals,
dates and timestamps as strings (Python's logical-type conversions).
"""
import io
import json
import sys

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
    return str(v)


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
