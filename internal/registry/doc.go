// Package registry moves images between registries: it resolves sources (through mirrors when configured),
// copies whole images byte for byte into the backup registry and verifies the copy before reporting success.
// Reconcilers use it through one call, Copier.Copy with a CopyRequest, and never build HTTP clients themselves.
//
// # What a Copy trusts
//
// Nothing this process remembers skips the backup registry: every Copy asks it (one manifest HEAD) whether it
// holds the digest now, so a copy that was deleted since (lost storage, garbage collection, a lifecycle policy)
// is made and verified again before the caller points anything at it. The tag cache (Options.TagCacheTTL) may
// skip only the request to the source registry.
//
// # Retries
//
// Retries have one owner per time scale, so that their costs add up to something known:
//
//   - Within one Copy, retryTransport repeats a request that failed in a way worth repeating — 408, 429, 500,
//     502, 503, 504, or a connection that broke before an answer — after a short backoff (250 ms, 500 ms,
//     1 s, at most maxInlineWait), or after the registry's Retry-After when that is as short. The Copy has one
//     budget of copyRetries (3) retries for all its requests, so a registry that fails everything costs at
//     most 4 requests before the Copy returns a Transient error. Requests whose body cannot be sent again (a
//     blob streaming from the source into an upload) are not repeated: the Copy fails, and its next attempt
//     uploads only what the backup does not hold yet.
//   - Longer waits belong to the caller's work queue, never to a worker: a Retry-After longer than
//     maxInlineWait (2 s) ends the Copy at once with Error.RetryAfter set, and the controller requeues the
//     workload after that long; other Transient errors are retried with the queue's backoff.
//   - go-containerregistry's own retries are switched off wherever it would add them (see neverRetry), so
//     nothing multiplies these numbers.
//
// Options.CopyTimeout bounds a whole Copy, resolving and checking the backup included.
//
// # Errors
//
// Every error of Copy is an *Error with a Class (Transient, Permanent, AccessDenied, TooLarge, Invalid),
// decided where the failure is understood; callers choose retries and wording by the class (see Explain).
package registry
