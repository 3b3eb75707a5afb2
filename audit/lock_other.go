//go:build !unix

package audit

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir only creates dir/LOCK: no advisory locking on this platform.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: spool lock: %w", err)
	}
	return f, nil
}
