// Package policy parses, checks and compiles Portcullis policies (YAML written by
// people, every error with its file:line), and explains and diffs them. Compile turns
// a checked policy into model.Tables, exactly what the data plane holds; the model
// package judges packets by them, and the loader turns them into BPF maps.
package policy
