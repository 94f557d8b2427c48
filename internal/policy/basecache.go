package policy

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// dataDocs serves OPA's reads of base documents (data.bulwark.routes, ...)
// from the data a compiled policy was loaded with, read from its store once
// at load. OPA otherwise reads each document through a store transaction
// and caches it per evaluation, which costs every decision the same
// allocations again. It is correct because the Engine's store is never
// written after compile: a reload builds a new store and a new dataDocs.
//
// It is read-only (Put does nothing), so one value serves concurrent
// evaluations. A ref it cannot answer (not in data, a non-scalar key) is
// a miss: OPA then reads the store as before, with the same result.
type dataDocs struct{ root ast.Value }

var _ topdown.BaseCache = dataDocs{}

// newDataDocs reads the whole data document from store as AST (the store is
// created with OptReturnASTValuesOnRead, so this shares its values).
func newDataDocs(ctx context.Context, store storage.Store) (dataDocs, error) {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return dataDocs{}, fmt.Errorf("policy store: %w", err)
	}
	defer store.Abort(ctx, txn)
	v, err := store.Read(ctx, txn, storage.RootPath)
	if err != nil {
		return dataDocs{}, fmt.Errorf("policy store: %w", err)
	}
	root, ok := v.(ast.Value)
	if !ok {
		return dataDocs{}, fmt.Errorf("policy store: data is %T, not AST", v)
	}
	return dataDocs{root: root}, nil
}

// Get returns the document at ref (data.x.y...), or nil. The root itself
// (ref "data") is left to OPA, which removes the system document from it.
func (d dataDocs) Get(ref ast.Ref) ast.Value {
	if d.root == nil || len(ref) < 2 || !ref[0].Equal(ast.DefaultRootDocument) {
		return nil
	}
	v, err := d.root.Find(ref[1:])
	if err != nil {
		return nil
	}
	return v
}

// Put does nothing: the documents are all there from the start.
func (dataDocs) Put(ast.Ref, ast.Value) {}
