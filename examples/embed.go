// Package examples holds the example policy, embedded so that `portcullis demo` runs
// from any directory.
package examples

import _ "embed"

// Policy is examples/policy.yaml.
//
//go:embed policy.yaml
var Policy []byte

// PolicyName is how Policy is named in messages and error positions.
const PolicyName = "examples/policy.yaml"
