package e2e

import (
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-gw/sluice/audit"
)

// TestAuditRefusedRequests: requests the gateway refuses by closing the
// connection before any filter sees them (an inter-broker key the policy
// refuses outright, and an API key no Kafka knows) are deny decisions in
// the audit topic, with the principal, the API and the reason.
func TestAuditRefusedRequests(t *testing.T) {
	t.Parallel()
	e := startAuditEnv(t, map[string]any{"fold_window": "0s"})
	for _, tc := range []struct {
		key, version int16
	}{
		{int16(kmsg.LeaderAndISR), 4}, // inter-broker: refused by the policy table
		{9999, 0},                     // unknown to Kafka
	} {
		rc := dialRaw(t, e.gw.Bootstrap)
		if ar := rc.saslLogin(t, "PLAIN", 1, []byte("\x00"+audAcme+"\x00"+audPassword(audAcme))); ar.ErrorCode != 0 {
			t.Fatalf("sasl authenticate as %s: %+v", audAcme, ar)
		}
		frame := binary.BigEndian.AppendUint32(nil, 0)
		frame = binary.BigEndian.AppendUint16(frame, uint16(tc.key))
		frame = binary.BigEndian.AppendUint16(frame, uint16(tc.version))
		frame = binary.BigEndian.AppendUint32(frame, 77)
		frame = append(frame, 0xff, 0xff, 0) // null client id, no tags
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
		if _, err := rc.conn.Write(frame); err != nil {
			t.Fatal(err)
		}
		_ = rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := rc.conn.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("key %d: the gateway answered (%d bytes, %v) instead of closing", tc.key, n, err)
		}
	}
	e.settle(t)
	e.stop(t)
	found := map[int16]bool{}
	for _, x := range e.events(t) {
		d := x.ev.Data
		if d.Kind != audit.KindDecision || d.API == nil || (d.API.Key != int16(kmsg.LeaderAndISR) && d.API.Key != 9999) {
			continue
		}
		if d.Decision != "deny" || d.Reason == "" || d.Principal == nil || d.Principal.ID != audAcme || d.ResourceType != "cluster" {
			t.Errorf("refused key %d recorded as %+v", d.API.Key, d)
		}
		found[d.API.Key] = true
	}
	if !found[int16(kmsg.LeaderAndISR)] || !found[9999] {
		t.Fatalf("refused requests in the audit topic: %v, want LeaderAndIsr and key 9999", found)
	}
}
