package trigger_test

import (
	"fmt"
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/trigger"
)

// An uploaded image under an upload rule's prefix becomes an edit job,
// under an id derived from the object and its generation, so that a
// redelivered event maps to the same job.
func ExampleFromObject() {
	uploads := config.Uploads{
		Buckets: []string{"in"},
		Rules: []config.Rule{{Bucket: "in", Prefix: "watercolor/", Name: "watercolor/",
			Prompt: "Turn this photo into a watercolor painting", AspectRatio: "1:1"}},
	}
	o := trigger.Object{Bucket: "in", Name: "watercolor/cat.png", Generation: 7, ContentType: "image/png", MetadataKnown: true}
	d := trigger.FromObject(o, time.Now(), uploads)
	fmt.Println(d.Job.Prompt, d.Job.AspectRatio, d.Job.Images[0].URI, d.Job.Images[0].Generation)
	fmt.Println(d.ID == trigger.FromObject(o, time.Now(), uploads).ID)

	o.Name = "notes/readme.txt"
	fmt.Println(trigger.FromObject(o, time.Now(), uploads).Ignore)
	// Output:
	// Turn this photo into a watercolor painting 1:1 gs://in/watercolor/cat.png 7
	// true
	// not a job file, no prompt metadata and no upload rule matches
}
