package pipeline

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/genimg/genimg/internal/render"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// maxRenderPixels bounds the output image a rendition is made from: the
// largest output of the image models is 6336×2688 (Gemini 3 Pro Image,
// 21:9 at 4K), 17 M pixels; a decoded image costs 4 bytes a pixel.
const maxRenderPixels = 40 << 20

// renditions makes the job's renditions of each stored output image and
// writes them beside it (contract 9.4). It runs once per attempt, after the
// images are written and before the draft, from both lanes.
//
// Each image is read back from Cloud Storage and decoded once; its
// renditions are made from that one decoded image, which is dropped before
// the next image is read: at most one decoded image per job at a time. The
// image stream itself was written to Cloud Storage as it arrived, so
// reading it back (one more read in the same region) is what keeps the
// model's answer from being held in memory.
//
// Renditions never cost a model call: the model's answer is kept already,
// and a job is paid again only when its answer could not be kept (contract
// 9.1). So an image whose renditions cannot be made or written (past the
// client's retries) keeps its place in the record with a renditionError
// saying why, and the job goes on to its record.
func (s *Service) renditions(ctx context.Context, c *storage.Claim, specs []job.Rendition, outs []job.StoredImage, meta storage.ImageMeta) {
	if len(specs) == 0 {
		return
	}
	for i := range outs {
		if err := s.renderImage(ctx, c, specs, &outs[i], meta); err != nil {
			outs[i].Renditions, outs[i].RenditionError = nil, fmt.Sprintf("no renditions: %v", err)
			slog.WarnContext(ctx, "output image not rendered", "uri", outs[i].URI, "error", err)
		}
	}
}

func (s *Service) renderImage(ctx context.Context, c *storage.Claim, specs []job.Rendition, out *job.StoredImage, meta storage.ImageMeta) error {
	r, err := s.store.OpenOutput(ctx, *out)
	if err != nil {
		return err
	}
	img, err := render.Decode(r, maxRenderPixels)
	r.Close()
	if err != nil {
		return err
	}
	out.Renditions = make([]job.StoredImage, 0, len(specs))
	for _, spec := range specs {
		res, err := render.Make(img, spec)
		if err != nil {
			return err
		}
		st, err := s.store.WriteRendition(ctx, c, *out, spec.MaxSize, render.Extension(spec.Format), res.MIMEType,
			res.Width, res.Height, res.Data, meta)
		if err != nil {
			return err
		}
		out.Renditions = append(out.Renditions, st)
	}
	return nil
}
