package controller

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// describeBackups renders "Backed up source → backup (digest); …" for every image that was backed up, or ""
// for none.
func describeBackups(results []backupResult) string {
	var parts []string
	for _, res := range results {
		if res.err == nil && !res.Keep {
			parts = append(parts, fmt.Sprintf("%s → %s (%s)", res.Name, res.Mapping.PodImage(), res.digest))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "Backed up " + strings.Join(parts, "; ")
}

// describeIncomplete names the copies that lack some of their signatures, attestations or SBOMs, or "".
func describeIncomplete(results []backupResult) string {
	var parts []string
	for _, res := range results {
		if res.incomplete != nil {
			parts = append(parts, res.Name+": "+res.incomplete.Error())
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return eventNote("Pointed at copies without all their signatures and attestations (--referrers-optional), which a signature policy may reject: " + strings.Join(parts, "; "))
}

// describeFailures tells the user which images failed, in plain words where possible, and the registry's
// errors, within the Event note's size limit: when they do not all fit, each gets an equal share.
//
// unusedSecrets are pull secrets the workload names that could not be used; they are mentioned first, since they
// may be why access was denied.
func describeFailures(failed []backupResult, unusedSecrets []string) string {
	const sep = "; "
	prefix := ""
	if len(unusedSecrets) > 0 {
		prefix = cutNote("Pull secrets not used: "+strings.Join(unusedSecrets, ", "), maxEventNote/4) + ". "
	}
	notes := make([]string, len(failed))
	length := len(prefix) + len(sep)*(len(failed)-1)
	for i, res := range failed {
		notes[i] = describeFailure(res)
		length += len(notes[i])
	}
	if length > maxEventNote {
		share := (maxEventNote - len(prefix) - len(sep)*(len(failed)-1)) / len(failed)
		for i := range notes {
			notes[i] = cutNote(notes[i], share)
		}
	}
	return eventNote(prefix + strings.Join(notes, sep))
}

// describeFailure tells the user which image failed, in plain words where possible, and the registry's error.
func describeFailure(res backupResult) string {
	if hint := registry.Explain(res.err); hint != "" {
		return fmt.Sprintf("Cannot back up image %s: %s: %v", res.Name, hint, res.err)
	}
	return fmt.Sprintf("Cannot back up image %s: %v", res.Name, res.err)
}

// maxEventNote is the events.k8s.io/v1 limit of an Event's note.
const maxEventNote = 1024

// eventNote cuts a note to the events.k8s.io/v1 limit; the apiserver rejects longer notes, and the event
// would be lost.
func eventNote(note string) string { return cutNote(note, maxEventNote) }

// cutNote cuts note to at most limit bytes, ending in "..." when cut, without splitting a UTF-8 sequence.
func cutNote(note string, limit int) string {
	if len(note) <= limit {
		return note
	}
	cut := max(0, limit-len("..."))
	for cut > 0 && !utf8.RuneStart(note[cut]) {
		cut--
	}
	return note[:cut] + "..."
}
