// Package bpf holds the Portcullis XDP program (C) and its bpf2go bindings.
//
// The bindings (portcullis_bpfel.go, portcullis_bpfel.o) are generated and committed so
// that `go build` needs no clang; `make generate` rebuilds them.
package bpf

//go:generate go tool bpf2go -cc ${BPF_CLANG} -strip ${BPF_STRIP} -cflags ${BPF_CFLAGS} -target bpfel -type pc_verdict -type pc_outcome -type pc_family -type pc_reason -type pc_key -type pc_entry -type pc_v6_key -type pc_v6_val -type pc_v6_lens -type pc_table -type pc_scope_key -type pc_config_flag -type pc_relay_flag -type pc_config -type pc_counter -type pc_src -type pc_sketch_row -type pc_offender -type pc_offender_bucket -type pc_offender_period -type pc_label -type pc_label_age -type pc_meta -type pc_dir_bits -type pc_dir_chunk Portcullis portcullis.c
