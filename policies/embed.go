// Package policies holds Bulwark's default Rego policies and their data,
// compiled into the binary so `bulwark serve` runs anywhere with nothing else.
// Operators copy this directory, edit it and point --policy-dir at the copy.
package policies

import "embed"

// FS is the embedded policy tree: bulwark/*.rego (package bulwark, rule
// decision) and bulwark/data.yaml (mounted at data.bulwark). Test files are
// embedded too so `go test` and `opa test` see the same tree; the engine skips
// them when serving.
//
//go:embed bulwark
var FS embed.FS
