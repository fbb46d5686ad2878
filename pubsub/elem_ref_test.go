package pubsub

import (
	"encoding/xml"
	"io"
	"strings"
)

// The encoding/xml reading of a stanza (xmppstream's reference reader, as
// a test helper): the parser of the test stanzas and the golden files.

// readElem reads the element that start opened, up to its end.
func readElem(d *xml.Decoder, start xml.StartElement) (*elem, error) {
	root := &elem{XMLName: start.Name, Attrs: copyAttrs(start.Attr)}
	stack := []*elem{root}
	for len(stack) > 0 {
		t, err := d.Token()
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, err
		}
		top := stack[len(stack)-1]
		switch t := t.(type) {
		case xml.StartElement:
			top.Nodes = append(top.Nodes, elem{XMLName: t.Name, Attrs: copyAttrs(t.Attr)})
			stack = append(stack, &top.Nodes[len(top.Nodes)-1])
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			top.Content += string(t)
		}
	}
	return root, nil
}

// copyAttrs keeps the attributes but the namespace declarations.
func copyAttrs(in []xml.Attr) []xml.Attr {
	var out []xml.Attr
	for _, a := range in {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// parseElem parses a whole document (for tests and golden files).
func parseElem(s string) (*elem, error) {
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		t, err := d.Token()
		if err != nil {
			return nil, err
		}
		if se, ok := t.(xml.StartElement); ok {
			return readElem(d, se)
		}
	}
}
