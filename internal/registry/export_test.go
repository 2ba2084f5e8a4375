package registry

// ClassifyResponse is classify, which gives the errors of registry requests their class, for the specs.
var ClassifyResponse = classify

// CopiesTotal and CopiedBytesTotal are the copier's counters, for the specs to read with prometheus/testutil.
var (
	CopiesTotal      = copiesTotal
	CopiedBytesTotal = copiedBytes
)
