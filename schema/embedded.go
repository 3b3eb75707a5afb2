package schema

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// Embedded is an in-memory schema registry serving the Confluent REST API
// (franz-go's srfake) on a local listener, for `sluice dev` and tests.
type Embedded struct {
	// Registry is the in-memory registry, for seeding without HTTP.
	Registry *srfake.Registry
	srv      *http.Server
	ln       net.Listener
	done     chan error
}

// StartEmbedded listens on addr ("127.0.0.1:0" picks a free port) and serves
// an empty registry until Close.
func StartEmbedded(addr string) (*Embedded, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("schema: embedded registry: %w", err)
	}
	reg := srfake.NewRegistry()
	e := &Embedded{
		Registry: reg,
		srv:      &http.Server{Handler: reg.Handler(), ReadHeaderTimeout: 5 * time.Second},
		ln:       ln,
		done:     make(chan error, 1),
	}
	go func() { e.done <- e.srv.Serve(ln) }()
	return e, nil
}

// URL is the registry's base URL.
func (e *Embedded) URL() string { return "http://" + e.ln.Addr().String() }

// Addr is the listener's address.
func (e *Embedded) Addr() net.Addr { return e.ln.Addr() }

// Close stops serving.
func (e *Embedded) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := e.srv.Shutdown(ctx)
	if serr := <-e.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
