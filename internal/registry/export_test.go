package registry

// ClassifyResponse is classify, which gives the errors of registry requests their class, for the specs.
var ClassifyResponse = classify
