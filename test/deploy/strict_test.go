package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"go.yaml.in/yaml/v3"
)

// typeMeta is the part of every Kubernetes-style document that says what it is.
type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

func (m typeMeta) gvk() string { return m.APIVersion + " " + m.Kind }

// document is one decoded YAML document of a manifest file.
type document struct {
	typeMeta
	obj any // a pointer to the kind's struct below
}

// decodeStrict decodes raw into v, rejecting fields v does not declare, so a
// misspelt field name (readOnlyRootFileSystem, failopen) fails the test
// instead of being silently ignored the way a lax decoder (and, for some
// fields, the cluster) would ignore it.
func decodeStrict(raw []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("more than one YAML document")
	}
	return nil
}

// splitDocs returns each non-empty document of a multi-document YAML stream.
func splitDocs(raw []byte) ([][]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var out [][]byte
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue // a document holding only comments
		}
		b, err := yaml.Marshal(&n)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
}

// decodeManifests reads every document of the given data, picks the Go
// type for its apiVersion and kind from kinds, and decodes it strictly. An
// unknown apiVersion/kind is an error too: a new kind needs its struct here.
func decodeManifests(name string, raw []byte, kinds map[string]func() any) ([]document, error) {
	docs, err := splitDocs(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no documents", name)
	}
	var out []document
	for i, d := range docs {
		var tm typeMeta
		if err := yaml.Unmarshal(d, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		mk, ok := kinds[tm.gvk()]
		if !ok {
			return nil, fmt.Errorf("%s: document %d: unexpected apiVersion/kind %q", name, i, tm.gvk())
		}
		obj := mk()
		if err := decodeStrict(d, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", name, i, tm.Kind, err)
		}
		out = append(out, document{typeMeta: tm, obj: obj})
	}
	return out, nil
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// only returns the single object of type T among docs.
func only[T any](t *testing.T, docs []document, what string) *T {
	t.Helper()
	var found []*T
	for _, d := range docs {
		if v, ok := d.obj.(*T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, found %d", what, len(found))
	}
	return found[0]
}

// all returns every object of type T among docs.
func all[T any](docs []document) []*T {
	var found []*T
	for _, d := range docs {
		if v, ok := d.obj.(*T); ok {
			found = append(found, v)
		}
	}
	return found
}

// subset reports whether every label of sel is in labels (an empty selector
// selects nothing here: every selector in these manifests must say what it
// selects).
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
