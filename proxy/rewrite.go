package proxy

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// advertiser maps upstream node ids to the addresses clients must use: the
// per-broker listeners of one listener group.
type advertiser interface {
	// advertise returns the host and port clients use for node id.
	advertise(id int32) (string, int32)
}

// rewriteNeeded reports whether responses of key at version can carry
// broker addresses and so must be decoded and rewritten.
func rewriteNeeded(key, version int16) bool {
	switch key {
	case 3, 10, 60: // Metadata, FindCoordinator, DescribeCluster
		return true
	case 0, 1:
		// Produce and Fetch: KIP-951 NodeEndpoints (documented from
		// Produce v10 and Fetch v16) are tagged fields, and a tagged
		// field can be sent at any flexible version, so every
		// flexible version is checked.
		return version >= apis[key].flexibleFrom
	case 55: // DescribeQuorum: controller listeners (v2+)
		return version >= 2
	case 78, 79: // ShareFetch, ShareAcknowledge NodeEndpoints
		return true
	}
	return false
}

// rewriteAddresses replaces every broker address in resp with the gateway's
// address for the same node id, so that clients never learn an upstream
// address. It reports whether resp changed. Metadata responses are learned
// by cl first, so new brokers get listeners before clients are told of them.
func rewriteAddresses(resp kmsg.Response, adv advertiser, cl *cluster) bool {
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		if cl != nil {
			cl.learnMetadata(r)
		}
		for i := range r.Brokers {
			b := &r.Brokers[i]
			b.Host, b.Port = adv.advertise(b.NodeID)
		}
		return len(r.Brokers) > 0
	case *kmsg.FindCoordinatorResponse:
		changed := false
		if r.Version < 4 {
			if r.NodeID >= 0 && (r.Host != "" || r.Port != 0) {
				r.Host, r.Port = adv.advertise(r.NodeID)
				changed = true
			} else if r.NodeID < 0 && r.Host != "" {
				// No coordinator (an error): what a broker sends is
				// empty, and nothing of the upstream's may go out.
				r.Host, r.Port = "", -1
				changed = true
			}
		}
		for i := range r.Coordinators {
			c := &r.Coordinators[i]
			if c.NodeID >= 0 && (c.Host != "" || c.Port != 0) {
				c.Host, c.Port = adv.advertise(c.NodeID)
				changed = true
			} else if c.NodeID < 0 && c.Host != "" {
				c.Host, c.Port = "", -1
				changed = true
			}
		}
		return changed
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			b.Host, b.Port = adv.advertise(b.NodeID)
		}
		return len(r.Brokers) > 0
	case *kmsg.ProduceResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			b.Host, b.Port = adv.advertise(b.NodeID)
		}
		return len(r.Brokers) > 0
	case *kmsg.FetchResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			b.Host, b.Port = adv.advertise(b.NodeID)
		}
		return len(r.Brokers) > 0
	case *kmsg.ShareFetchResponse:
		for i := range r.NodeEndpoints {
			b := &r.NodeEndpoints[i]
			b.Host, b.Port = adv.advertise(b.NodeID)
		}
		return len(r.NodeEndpoints) > 0
	case *kmsg.ShareAcknowledgeResponse:
		for i := range r.NodeEndpoints {
			b := &r.NodeEndpoints[i]
			b.Host, b.Port = adv.advertise(b.NodeID)
		}
		return len(r.NodeEndpoints) > 0
	case *kmsg.DescribeQuorumResponse:
		// Controller endpoints are not served by the gateway; clients
		// must not learn them.
		changed := false
		for i := range r.Nodes {
			if len(r.Nodes[i].Listeners) > 0 {
				r.Nodes[i].Listeners = nil
				changed = true
			}
		}
		return changed
	}
	return false
}
