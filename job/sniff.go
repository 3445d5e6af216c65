package job

import (
	"bytes"
	"net/http"
)

// Sniff names an image's type from its first bytes: image/png, image/jpeg,
// image/webp, image/gif, image/heic, or "" when it is not an image genimg
// recognises. A declared content type is only ever a hint; this decides.
func Sniff(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png"
	case bytes.HasPrefix(head, []byte("\xff\xd8\xff")):
		return "image/jpeg"
	case len(head) >= 12 && bytes.Equal(head[:4], []byte("RIFF")) && bytes.Equal(head[8:12], []byte("WEBP")):
		return "image/webp"
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return "image/gif"
	case len(head) >= 12 && bytes.Equal(head[4:8], []byte("ftyp")) &&
		(bytes.Equal(head[8:12], []byte("heic")) || bytes.Equal(head[8:12], []byte("heix")) || bytes.Equal(head[8:12], []byte("mif1"))):
		return "image/heic"
	}
	if t := http.DetectContentType(head); len(t) > 6 && t[:6] == "image/" {
		return t
	}
	return ""
}
