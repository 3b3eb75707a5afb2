package authn

import "time"

// SetNow replaces the provider's clock (tests only).
func SetNow(p *Provider, now func() time.Time) { p.now = now }
