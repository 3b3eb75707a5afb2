// Package configs holds the example configuration, Rego policies, data
// documents and demo credentials. They are embedded so that `sluice dev`
// runs the same policy the repository ships, from any directory.
package configs

import "embed"

// FS holds policies/, data/ and credentials/.
//
//go:embed policies data credentials
var FS embed.FS
