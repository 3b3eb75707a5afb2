package proxy

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// versionRange is an inclusive range of versions an API key is served at;
// max < 0 means the key is not served.
type versionRange struct{ min, max int16 }

// versionTable is what a client connection may use: the intersection of
// the upstream broker's ranges and what the gateway can decode.
type versionTable []versionRange

// gatewayLocalKeys are answered by the gateway itself, never forwarded.
const (
	keySaslHandshake    int16 = 17
	keyApiVersions      int16 = 18
	keySaslAuthenticate int16 = 36
)

// gatewayLocal reports whether key is one the gateway answers itself: the
// only requests allowed before authentication, never cut through, and
// bounded by max_sasl_frame_bytes.
func gatewayLocal(key int16) bool {
	return key == keyApiVersions || key == keySaslHandshake || key == keySaslAuthenticate
}

// intersectVersions computes the table for a connection from the upstream's
// ApiVersions response. Keys the gateway does not know are dropped. SASL keys
// are served by the gateway when saslEnabled, whatever the upstream says.
func intersectVersions(up *kmsg.ApiVersionsResponse, saslEnabled bool, refuses func(int16) bool) versionTable {
	t := make(versionTable, maxKey)
	for i := range t {
		t[i] = versionRange{0, -1}
	}
	for _, k := range up.ApiKeys {
		a := apiFor(k.ApiKey)
		if a == nil {
			continue // vendor or future keys: never offered
		}
		if refuses != nil && refuses(k.ApiKey) {
			continue
		}
		lo, hi := k.MinVersion, k.MaxVersion
		if lo < 0 {
			lo = 0
		}
		if hi > a.maxVersion {
			hi = a.maxVersion
		}
		if lo > hi {
			continue
		}
		t[k.ApiKey] = versionRange{lo, hi}
	}
	// The gateway answers ApiVersions itself, at every version it knows.
	t[keyApiVersions] = versionRange{0, apis[keyApiVersions].maxVersion}
	if saslEnabled {
		t[keySaslHandshake] = versionRange{0, 1}
		t[keySaslAuthenticate] = versionRange{0, 2}
	} else {
		t[keySaslHandshake] = versionRange{0, -1}
		t[keySaslAuthenticate] = versionRange{0, -1}
	}
	return t
}

// supports reports whether the table serves key at version.
func (t versionTable) supports(key, version int16) bool {
	if key < 0 || int(key) >= len(t) {
		return false
	}
	r := t[key]
	return r.max >= 0 && version >= r.min && version <= r.max
}

// apiVersionsResponse answers a client's ApiVersions request at version v
// from the table, copying feature information from the upstream response.
// A version newer than the gateway knows gets a v0 UNSUPPORTED_VERSION
// answer listing the supported ApiVersions range, so the client can retry
// lower (KIP-511).
func (t versionTable) apiVersionsResponse(v int16, up *kmsg.ApiVersionsResponse) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	if v > apis[keyApiVersions].maxVersion || v < 0 {
		resp.SetVersion(0)
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: keyApiVersions, MinVersion: 0, MaxVersion: apis[keyApiVersions].maxVersion}}
		return resp
	}
	resp.SetVersion(v)
	for k, r := range t {
		if r.max < 0 {
			continue
		}
		resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: int16(k), MinVersion: r.min, MaxVersion: r.max})
	}
	if up != nil {
		resp.SupportedFeatures = up.SupportedFeatures
		resp.FinalizedFeaturesEpoch = up.FinalizedFeaturesEpoch
		resp.FinalizedFeatures = up.FinalizedFeatures
	}
	return resp
}
