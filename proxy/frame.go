package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxKey is one past the largest API key kmsg knows.
var maxKey = func() int16 {
	var k int16
	for i := int16(0); i < 1000; i++ {
		if kmsg.RequestForKey(i) != nil {
			k = i
		}
	}
	return k + 1
}()

// apiInfo is what the gateway knows of one API key, computed once from kmsg.
type apiInfo struct {
	known        bool
	name         string
	maxVersion   int16
	flexibleFrom int16 // first flexible version; MaxInt16 if never
}

var apis = func() []apiInfo {
	out := make([]apiInfo, maxKey)
	for k := int16(0); k < maxKey; k++ {
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		info := apiInfo{known: true, name: kmsg.NameForKey(k), maxVersion: req.MaxVersion(), flexibleFrom: math.MaxInt16}
		for v := int16(0); v <= info.maxVersion; v++ {
			req.SetVersion(v)
			if req.IsFlexible() {
				info.flexibleFrom = v
				break
			}
		}
		out[k] = info
	}
	return out
}()

func apiFor(key int16) *apiInfo {
	if key < 0 || key >= maxKey || !apis[key].known {
		return nil
	}
	return &apis[key]
}

// apiName returns a bounded label for a key.
func apiName(key int16) string {
	if a := apiFor(key); a != nil {
		return a.name
	}
	return "Unknown"
}

// requestHeader is a parsed request header.
type requestHeader struct {
	Key           int16
	Version       int16
	CorrelationID int32
	// clientID aliases the frame; nil for a null client id. ClientID()
	// copies it, only when a filter needs it.
	clientID   []byte
	Flexible   bool
	BodyOffset int // offset of the request body within the frame (after the size)
}

var (
	errShortHeader = errors.New("proxy: request header truncated")
	errUnknownKey  = errors.New("proxy: unknown api key")
)

// parseRequestHeader parses the header of a request frame (without its
// 4-byte size prefix). Header v1 is key, version, correlation id and a
// nullable client id; v2 (flexible versions) adds tagged fields. The key must
// be known to kmsg to tell the two apart; for an unknown key the error is
// errUnknownKey and the key, version and correlation id are still filled.
func parseRequestHeader(frame []byte) (requestHeader, error) {
	var h requestHeader
	if len(frame) < 8 {
		return h, errShortHeader
	}
	h.Key = int16(binary.BigEndian.Uint16(frame[0:]))
	h.Version = int16(binary.BigEndian.Uint16(frame[2:]))
	h.CorrelationID = int32(binary.BigEndian.Uint32(frame[4:]))
	a := apiFor(h.Key)
	if a == nil {
		return h, errUnknownKey
	}
	off := 8
	if h.Key == 7 && h.Version == 0 { // ControlledShutdown v0: header v0
		h.BodyOffset = off
		return h, nil
	}
	if len(frame) < off+2 {
		return h, errShortHeader
	}
	n := int(int16(binary.BigEndian.Uint16(frame[off:])))
	off += 2
	if n >= 0 {
		if len(frame) < off+n {
			return h, errShortHeader
		}
		h.clientID = frame[off : off+n : off+n]
		off += n
	} else if n != -1 {
		return h, fmt.Errorf("proxy: invalid client id length %d", n)
	}
	h.Flexible = h.Version >= a.flexibleFrom
	if h.Key == keyApiVersions && h.Version > a.maxVersion {
		// A client newer than the gateway: the body is not read, and
		// the header's tag section is not needed to answer (KIP-511).
		h.BodyOffset = off
		return h, nil
	}
	if h.Flexible {
		// ApiVersions v3+ uses header v2 like every flexible request.
		var err error
		off, err = skipTags(frame, off)
		if err != nil {
			return h, err
		}
	}
	h.BodyOffset = off
	return h, nil
}

// ClientID returns a copy of the header's client id, nil if null.
func (h *requestHeader) ClientID() *string {
	if h.clientID == nil {
		return nil
	}
	s := string(h.clientID)
	return &s
}

// uvarint reads an unsigned varint at off.
func uvarint(b []byte, off int) (uint64, int, error) {
	v, n := binary.Uvarint(b[off:])
	if n <= 0 {
		return 0, off, errShortHeader
	}
	return v, off + n, nil
}

// skipTags skips a tagged-field section at off.
func skipTags(b []byte, off int) (int, error) {
	num, off, err := uvarint(b, off)
	if err != nil {
		return off, err
	}
	if num > uint64(len(b)) {
		return off, errShortHeader
	}
	for i := uint64(0); i < num; i++ {
		if _, off, err = uvarint(b, off); err != nil { // tag
			return off, err
		}
		var size uint64
		if size, off, err = uvarint(b, off); err != nil {
			return off, err
		}
		if size > uint64(len(b)-off) {
			return off, errShortHeader
		}
		off += int(size)
	}
	return off, nil
}

// responseHeaderFlexible reports whether the response to a request of key at
// version uses response header v1 (a tagged-field byte after the
// correlation id). ApiVersions responses always use header v0.
func responseHeaderFlexible(key, version int16) bool {
	if key == 18 {
		return false
	}
	a := apiFor(key)
	return a != nil && version >= a.flexibleFrom
}

// appendResponseFrame appends a complete response frame (size, header,
// body) for resp to dst.
func appendResponseFrame(dst []byte, corr int32, key, version int16, resp kmsg.Response) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	if responseHeaderFlexible(key, version) {
		dst = append(dst, 0)
	}
	dst = resp.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// responseBodyOffset returns where the body of a response frame (without
// the size prefix) starts.
func responseBodyOffset(frame []byte, key, version int16) (int, error) {
	if len(frame) < 4 {
		return 0, errShortHeader
	}
	if !responseHeaderFlexible(key, version) {
		return 4, nil
	}
	return skipTags(frame, 4)
}

// produceAcks peeks at a Produce request body's acks without decoding it.
func produceAcks(body []byte, version int16, flexible bool) (int16, bool) {
	off := 0
	if version >= 3 { // transactional_id, nullable string
		if flexible {
			n, next, err := uvarint(body, 0)
			if err != nil || n > uint64(len(body)) { // a length past the body, or one that would overflow off
				return 0, false
			}
			off = next
			if n > 0 {
				off += int(n - 1)
			}
		} else {
			if len(body) < 2 {
				return 0, false
			}
			n := int(int16(binary.BigEndian.Uint16(body)))
			off = 2
			if n > 0 {
				off += n
			}
		}
	}
	if off < 0 || off > len(body)-2 {
		return 0, false
	}
	return int16(binary.BigEndian.Uint16(body[off:])), true
}
