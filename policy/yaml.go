package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	yamlparser "github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
	yamlv3 "go.yaml.in/yaml/v3"
)

// The YAML layer: a syntax tree reduced to what the checker reads, from one of two
// libraries, because each misreads some valid YAML a policy holds:
//   - go.yaml.in/yaml/v3 rejects a plain scalar starting with "::" in a flow list
//     (cidrs: [0.0.0.0/0, ::/0]), and its syntax errors name only a line, often the
//     start of the enclosing block;
//   - github.com/goccy/go-yaml (v1.19.2) reads an IPv6 prefix in a flow list inside a
//     flow mapping ({name: x, cidrs: [2001:db8::/32]}) as a mapping.
// yaml.v3 builds the tree, the reading every earlier policy was checked with, in one
// linear pass (a second document with content is refused at its start). Where it finds
// a syntax error, goccy tries: its tokens are checked (one document, bounded depth),
// then its parser gives its tree if it reads the file, else its error, which names the
// offending token's line and column.

type nodeKind uint8

const (
	noNode nodeKind = iota // nothing the checker can use
	scalarNode
	mappingNode
	sequenceNode
	aliasNode
)

// node is one YAML node: a scalar's text and tag (!!str, !!int, !!null, !!bool, !!float,
// or an explicit tag), a mapping's keys and values (key, value, key, value...), or a
// sequence's elements, with the node's position (1-based).
type node struct {
	kind      nodeKind
	tag       string
	value     string
	line, col int
	content   []*node
}

// maxDepth bounds nesting (a policy needs four levels). goccy's parser has no limit of
// its own and takes time quadratic in the depth: a file of 100,000 "[" takes 30 s.
const maxDepth = 64

// errEmpty is parseYAML's answer for a file with no content (or only comments).
var errEmpty = errors.New("empty document")

// parseYAML parses data, which must hold one YAML document. A leading "---", a closing
// "..." and empty documents (nothing, or only comments) around it are accepted; content
// in a second document is an error at that document's start.
//
// Documents are told apart on the token stream, before goccy's parser sees them: goccy
// (v1.19.2) silently drops everything after two "---" in a row.
func parseYAML(file string, data []byte) (*node, error) {
	// yaml.v3 first: one linear pass, the reading every earlier policy was checked with.
	if n, second, err := parseV3(data); err == nil {
		if second != 0 {
			lines := strings.Split(string(data), "\n")
			return nil, secondDocument(Pos{file, docStart(lines, second), 1}, docStart(lines, n.line))
		}
		return n, nil
	} else if errors.Is(err, errEmpty) {
		return nil, errEmpty
	}
	// yaml.v3 found a syntax error: goccy, from its tokens.
	toks := lexer.Tokenize(string(data))
	if tk := toks.InvalidToken(); tk != nil {
		return nil, syntaxError(file, tk, tk.Error)
	}
	if tk := tooDeep(toks); tk != nil {
		return nil, syntaxError(file, tk, fmt.Sprintf("nested more than %d levels deep", maxDepth))
	}
	lo, hi, second, firstLine := oneDocument(toks)
	if second != nil {
		return nil, secondDocument(tokenPos(file, second), firstLine)
	}
	if lo == hi {
		return nil, errEmpty
	}
	f, err := yamlparser.Parse(toks[lo:hi], 0, yamlparser.AllowDuplicateMapKey())
	if err != nil {
		var ye interface {
			GetToken() *token.Token
			GetMessage() string
		}
		if errors.As(err, &ye) {
			return nil, syntaxError(file, ye.GetToken(), ye.GetMessage())
		}
		return nil, Error{Pos{file, 1, 1}, "YAML syntax: " + err.Error()}
	}
	for _, d := range f.Docs {
		if d == nil {
			continue
		}
		if n := convert(d.Body); n != nil {
			return n, nil
		}
	}
	return nil, errEmpty
}

// secondDocument is the error for a second document with content, starting at pos.
func secondDocument(pos Pos, firstLine int) Error {
	return Error{pos, fmt.Sprintf("a second YAML document starts here (the first starts at line %d); a policy file holds one document: merge the two or remove this one", firstLine)}
}

// docStart is the line where the document whose content starts at line starts: the
// "---" right before it (only blank and comment lines between), else line itself.
func docStart(lines []string, line int) int {
	for i := line - 2; i >= 0 && i < len(lines); i-- {
		l := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(l, "---"):
			return i + 1
		case l == "" || strings.HasPrefix(l, "#"):
			continue
		}
		break
	}
	return line
}

// oneDocument finds the document with content: toks[lo:hi] (its "---" and "..."
// included), and the line of its first token. When a second document has content,
// second is its "---" (or its first token when it has none).
func oneDocument(toks token.Tokens) (lo, hi int, second *token.Token, firstLine int) {
	start := 0     // where the current document starts
	inDoc := false // the current document has content
	found := false // some document has content
	directiveLine := -1
	for i, tk := range toks {
		if tk.Position != nil && tk.Position.Line == directiveLine {
			continue // a directive's arguments (%YAML 1.2)
		}
		switch tk.Type {
		case token.DocumentHeaderType:
			if inDoc {
				hi, inDoc = i, false
			}
			start = i
			continue
		case token.DocumentEndType:
			if inDoc {
				hi, inDoc = i+1, false
			}
			start = i + 1
			continue
		case token.CommentType:
			continue
		case token.DirectiveType:
			if tk.Position != nil {
				directiveLine = tk.Position.Line
			}
			start = i + 1
			continue
		}
		if inDoc {
			continue
		}
		if found {
			if toks[start].Type == token.DocumentHeaderType {
				return 0, 0, toks[start], firstLine
			}
			return 0, 0, tk, firstLine
		}
		found, inDoc = true, true
		lo, hi = start, len(toks)
		firstLine = tokenPos("", toks[start]).Line
	}
	return lo, hi, nil, firstLine
}

func tokenPos(file string, tk *token.Token) Pos {
	pos := Pos{file, 1, 1}
	if tk != nil && tk.Position != nil {
		pos.Line, pos.Col = max(tk.Position.Line, 1), max(tk.Position.Column, 1)
	}
	return pos
}

func syntaxError(file string, tk *token.Token, msg string) Error {
	pos := tokenPos(file, tk)
	if strings.Contains(msg, "'\t'") || tk != nil && strings.HasPrefix(tk.Origin, "\t") {
		return Error{pos, "YAML syntax: a tab character here; YAML indents with spaces only"}
	}
	if tk != nil && strings.HasPrefix(strings.TrimSpace(tk.Origin), ":") {
		// Neither library reads ::/0 in a flow list inside a flow mapping.
		return Error{pos, "YAML syntax: " + msg + ` (an IPv6 prefix that starts with "::" inside { } must be quoted: "::/0")`}
	}
	return Error{pos, "YAML syntax: " + msg + " (check indentation and quoting)"}
}

// tooDeep returns the first token nested more than maxDepth levels deep: flow
// collections by their brackets, block collections by the columns of their keys and
// "-" entries.
func tooDeep(toks token.Tokens) *token.Token {
	flow := 0
	var cols []int // columns of the open block collections, innermost last
	for _, tk := range toks {
		if tk.Position == nil {
			continue
		}
		switch tk.Type {
		case token.DocumentHeaderType, token.DocumentEndType:
			flow, cols = 0, cols[:0]
		case token.SequenceStartType, token.MappingStartType:
			flow++
		case token.SequenceEndType, token.MappingEndType:
			flow = max(flow-1, 0)
		case token.SequenceEntryType, token.MappingValueType:
			if flow > 0 {
				continue
			}
			col := tk.Position.Column
			if tk.Type == token.MappingValueType && tk.Prev != nil && tk.Prev.Position != nil {
				col = tk.Prev.Position.Column // the key's column
			}
			for len(cols) > 0 && cols[len(cols)-1] >= col {
				cols = cols[:len(cols)-1]
			}
			cols = append(cols, col)
		default:
			continue
		}
		if flow+len(cols) > maxDepth {
			return tk
		}
	}
	return nil
}

// convert turns a goccy node into a node; nil for nothing (comments, an empty body).
func convert(n ast.Node) *node {
	switch n := n.(type) {
	case nil:
		return nil
	case *ast.MappingNode:
		out := at(&node{kind: mappingNode}, n.Start)
		if !n.IsFlowStyle && len(n.Values) > 0 {
			if k := convert(n.Values[0].Key); k != nil {
				out.line, out.col = k.line, k.col
			}
		}
		for _, kv := range n.Values {
			out.content = append(out.content, pair(kv)...)
		}
		return out
	case *ast.MappingValueNode: // a lone key: value
		out := &node{kind: mappingNode, content: pair(n)}
		out.line, out.col = out.content[0].line, out.content[0].col
		return out
	case *ast.SequenceNode:
		out := at(&node{kind: sequenceNode}, n.Start)
		for i, v := range n.Values {
			e := convert(v)
			if e == nil {
				e = &node{kind: scalarNode, tag: "!!null"}
			}
			if e.line == 0 { // "-" with nothing after it: just after the "-"
				at(e, n.Start)
				if i < len(n.Entries) && n.Entries[i].Start != nil && n.Entries[i].Start.Position != nil {
					e.line, e.col = n.Entries[i].Start.Position.Line, n.Entries[i].Start.Position.Column+1
				}
			}
			out.content = append(out.content, e)
		}
		return out
	case *ast.MappingKeyNode: // ? key
		return convert(n.Value)
	case *ast.AnchorNode:
		return convert(n.Value)
	case *ast.AliasNode:
		return at(&node{kind: aliasNode}, n.Start)
	case *ast.TagNode:
		v := convert(n.Value)
		if v == nil {
			v = at(&node{kind: scalarNode, tag: "!!null"}, n.Start)
		}
		if v.kind == scalarNode && n.Start != nil {
			v.tag = n.Start.Value
		}
		return v
	case *ast.StringNode:
		return at(&node{kind: scalarNode, tag: "!!str", value: n.Value}, n.Token)
	case *ast.LiteralNode:
		s := ""
		if n.Value != nil {
			s = n.Value.Value
		}
		return at(&node{kind: scalarNode, tag: "!!str", value: s}, n.Start)
	case *ast.IntegerNode:
		return scalar(n.Token, "!!int")
	case *ast.FloatNode:
		return scalar(n.Token, "!!float")
	case *ast.InfinityNode:
		return scalar(n.Token, "!!float")
	case *ast.NanNode:
		return scalar(n.Token, "!!float")
	case *ast.BoolNode:
		return scalar(n.Token, "!!bool")
	case *ast.NullNode:
		if n.Token != nil && n.Token.Type == token.ImplicitNullType {
			return &node{kind: scalarNode, tag: "!!null"} // placed by pair
		}
		return scalar(n.Token, "!!null")
	case *ast.MergeKeyNode:
		return scalar(n.Token, "!!merge")
	}
	return nil
}

// pair converts one key: value; an empty value becomes a null just after the colon.
func pair(kv *ast.MappingValueNode) []*node {
	k := convert(kv.Key)
	if k == nil {
		k = at(&node{kind: scalarNode, tag: "!!null"}, kv.Start)
	}
	v := convert(kv.Value)
	if v == nil {
		v = &node{kind: scalarNode, tag: "!!null"}
	}
	if v.line == 0 {
		v.line, v.col = k.line, k.col
		if kv.Start != nil && kv.Start.Position != nil {
			v.line, v.col = kv.Start.Position.Line, kv.Start.Position.Column+1
		}
	}
	return []*node{k, v}
}

func scalar(tk *token.Token, tag string) *node {
	n := &node{kind: scalarNode, tag: tag}
	if tk != nil {
		n.value = tk.Value
	}
	return at(n, tk)
}

// at sets n's position from tk.
func at(n *node, tk *token.Token) *node {
	if tk != nil && tk.Position != nil {
		n.line, n.col = tk.Position.Line, tk.Position.Column
	}
	return n
}

// parseV3 reads data with yaml.v3: the root of its one document with content, and the
// line where a second document's content starts (0 if there is none). errEmpty if no
// document has content; yaml.v3's error if it fails.
func parseV3(data []byte) (*node, int, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var first *node
	for {
		var doc yamlv3.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			if first == nil {
				return nil, 0, errEmpty
			}
			return first, 0, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yamlv3.ScalarNode && root.ShortTag() == "!!null" && root.Value == "" {
			continue // an empty document around the one with content
		}
		if first != nil {
			return first, root.Line, nil
		}
		if first = convertV3(root); first == nil {
			return nil, 0, errEmpty
		}
	}
}

// convertV3 turns a yaml.v3 node into a node.
func convertV3(n *yamlv3.Node) *node {
	if n.Kind == yamlv3.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return convertV3(n.Content[0])
	}
	out := new(node)
	if !fillV3(out, n) {
		return nil
	}
	return out
}

// fillV3 sets out to n, converted, and reports whether n is a node the checker can
// use. A mapping's or sequence's children are allocated together, one slice of
// nodes (a list of a million prefixes is one allocation, not a million).
func fillV3(out *node, n *yamlv3.Node) bool {
	out.line, out.col = n.Line, n.Column
	switch n.Kind {
	case yamlv3.MappingNode:
		out.kind = mappingNode
	case yamlv3.SequenceNode:
		out.kind = sequenceNode
	case yamlv3.AliasNode:
		out.kind = aliasNode
		return true
	case yamlv3.ScalarNode:
		out.kind, out.tag, out.value = scalarNode, n.ShortTag(), n.Value
		return true
	default:
		return false
	}
	kids := make([]node, len(n.Content))
	for i, c := range n.Content {
		if c.Kind == yamlv3.DocumentNode {
			if e := convertV3(c); e != nil {
				out.content = append(out.content, e)
			}
			continue
		}
		if fillV3(&kids[i], c) {
			if out.content == nil {
				out.content = make([]*node, 0, len(n.Content)-i)
			}
			out.content = append(out.content, &kids[i])
		}
	}
	return true
}
