package demo

import (
	"fmt"
	"io"
	"strings"
)

// table prints aligned columns ('l' or 'r' per column in align) with two spaces
// between them and no trailing blanks. A row without cells prints as an empty line.
type table struct {
	align string
	rows  [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer, indent string) {
	var width []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-len(c))
			if i < len(t.align) && t.align[i] == 'r' {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		line := strings.TrimRight(b.String(), " ")
		if line != "" {
			line = indent + line
		}
		fmt.Fprintln(w, line)
	}
}
