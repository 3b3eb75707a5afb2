package schema

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRegistryResponseBounded: a registry (or anything answering on
// its URL) that sends a huge body for GET /schemas/ids/{id} makes the
// gateway read and keep all of it: nothing bounds the response size, only
// the 5s timeout does. 48 MiB is used here; at loopback or LAN speeds the
// same 5s allow gigabytes.
func TestRegistryResponseBounded(t *testing.T) {
	const size = 48 << 20
	var written atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		fmt.Fprint(w, `{"schemaType":"JSON","schema":"`)
		chunk := []byte(strings.Repeat("a", 1<<20))
		for i := 0; i < size>>20; i++ {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
		fmt.Fprint(w, `"}`)
	}))
	defer srv.Close()
	cfg := DefaultConfig()
	cfg.URL = srv.URL
	cfg.Retries = 0
	reg, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := reg.SchemaByID(ctx, 1)
	const limit = 16 << 20 // the bound the authn package puts on a JWKS document
	if err == nil && len(s.Text) > limit {
		t.Fatalf("registry response of %d bytes read whole and cached as schema id 1 (%d bytes of schema text); no bound on the response size", written.Load(), len(s.Text))
	}
	if written.Load() > 2*limit {
		t.Fatalf("the client read %d bytes of one registry response (err %v)", written.Load(), err)
	}
}
