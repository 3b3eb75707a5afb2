package schema

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Confluent wire format: byte 0 is the magic byte 0, bytes 1-4 the schema id
// (big endian), then the serialized body (Avro binary for Avro schemas).
const (
	// WireMagic is the first byte of a Confluent-framed value.
	WireMagic byte = 0
	// WireHeaderLen is the length of the magic byte and schema id.
	WireHeaderLen = 5
)

// ErrNotWireFormat is returned by ParseWire for values that do not start
// with the Confluent magic byte and a schema id.
var ErrNotWireFormat = errors.New("schema: value is not in confluent wire format")

// AppendWire appends the wire-format header for schema id to dst, followed
// by body.
func AppendWire(dst []byte, id int, body []byte) []byte {
	dst = AppendWireHeader(dst, id)
	return append(dst, body...)
}

// AppendWireHeader appends the magic byte and the 4-byte big-endian id.
func AppendWireHeader(dst []byte, id int) []byte {
	return binary.BigEndian.AppendUint32(append(dst, WireMagic), uint32(id))
}

// ParseWire splits a wire-format value into its schema id and body. The body
// aliases b.
func ParseWire(b []byte) (id int, body []byte, err error) {
	if len(b) < WireHeaderLen {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrNotWireFormat, len(b))
	}
	if b[0] != WireMagic {
		return 0, nil, fmt.Errorf("%w: magic byte %d", ErrNotWireFormat, b[0])
	}
	u := binary.BigEndian.Uint32(b[1:5])
	if u > 1<<31-1 {
		return 0, nil, fmt.Errorf("%w: schema id %d out of range", ErrNotWireFormat, u)
	}
	return int(u), b[5:], nil
}

// ValueSubject is the TopicNameStrategy subject of a topic's values.
func ValueSubject(topic string) string { return topic + "-value" }

// KeySubject is the TopicNameStrategy subject of a topic's keys.
func KeySubject(topic string) string { return topic + "-key" }
