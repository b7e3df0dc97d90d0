//go:build nunciotest

package nuncio

import "context"

// TestIDs returns the stream's id and its last hook's id, for tests that
// call the ABI directly (sdk/go/internal/testfilters, built with
// -tags nunciotest). Not part of the SDK.
func TestIDs(ctx context.Context) (stream uint64, hook uint32) {
	s := streamOf(ctx)
	if s == nil {
		return 0, 0
	}
	return s.id, s.lastHook.Load()
}
