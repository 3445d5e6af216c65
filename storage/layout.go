package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// The layout of the output bucket: every object genimg writes or reads
// there is named here, and nowhere else.
//
//	jobs/<id>/claim.json            a job's lease: owner, attempt, expiry, fingerprint
//	jobs/<id>/attempt-<n>.json      attempt n's draft record (written after its images)
//	jobs/<id>/result.json           the completion record; create-only, it decides
//	jobs/<id>/batch.json            the batch chunk that holds the job
//	jobs/<id>/inputs/<sha256>.ext   inline inputs staged by the HTTP path
//	<prefix><id>/a<n>-<k>.<ext>     attempt n's k-th image (prefix: GENIMG_OUTPUT_PREFIX or the job's)
//	batches/<chunk>.json            a batch chunk's state
//	batches/<chunk>/                a batch chunk's request and answer files
//	caches/<name>.json              a shared context's cache record
//	spend/<day>/<hour>/<instance>   an instance's spend ledger for one hour
//	control/paused                  the kill switch
//	webhooks/<sha256(id)>           a signed request's webhook id, seen
//	held/<id>                       a held job, for the sweeper that resumes it
//
// The deployment gives each prefix a lifecycle rule (terraform/storage.tf).
const (
	// JobsPrefix holds every job's state.
	JobsPrefix = "jobs/"
	// BatchesPrefix holds the batch lane's chunks.
	BatchesPrefix = "batches/"
	// CachesPrefix holds shared contexts' cache records.
	CachesPrefix = "caches/"
	// SpendPrefix holds the spend guard's ledgers.
	SpendPrefix = "spend/"
	// PauseObject is the kill switch: while it exists, no model call starts.
	PauseObject = "control/paused"
	// WebhooksPrefix holds the webhook ids of signed requests.
	WebhooksPrefix = "webhooks/"
	// HeldPrefix marks the jobs genimg holds (job.Held).
	HeldPrefix = "held/"
)

const (
	claimFile  = "claim.json"
	resultFile = "result.json"
	batchFile  = "batch.json"
)

// jobObject names a file of a job's state; id must be valid (jobDir).
func jobObject(id, file string) string { return JobsPrefix + id + "/" + file }

// RecordObject is where a job's completion record lives.
func RecordObject(id string) string { return jobObject(id, resultFile) }

// BatchMarkerObject is where the batch lane notes which chunk holds a job.
func BatchMarkerObject(id string) string { return jobObject(id, batchFile) }

// BatchStateObject is a batch chunk's state.
func BatchStateObject(chunk string) string { return BatchesPrefix + chunk + ".json" }

// BatchDir is the folder of a batch chunk's files.
func BatchDir(chunk string) string { return BatchesPrefix + chunk + "/" }

// CacheObject is a shared context's cache record.
func CacheObject(name string) string { return CachesPrefix + name + ".json" }

// LedgerDay is the folder of one day's spend ledgers (day: 2006-01-02).
func LedgerDay(day string) string { return SpendPrefix + day + "/" }

// LedgerObject is one instance's spend ledger for an hour (hour:
// 2006-01-02/15).
func LedgerObject(hour, instance string) string { return SpendPrefix + hour + "/" + instance }

// WebhookObject is where a webhook id is recorded: hashed, so that no
// caller-chosen text becomes an object name.
func WebhookObject(id string) string {
	sum := sha256.Sum256([]byte(id))
	return WebhooksPrefix + hex.EncodeToString(sum[:])
}

func draftObject(id string, attempt int) string {
	return jobObject(id, "attempt-"+strconv.Itoa(attempt)+".json")
}
