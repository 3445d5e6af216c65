package geminitest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// file is one file of the Files API (files/ID): uploaded batch input, or a
// batch's responses.
type file struct {
	Name        string
	DisplayName string
	MIMEType    string
	Data        []byte
	Created     time.Time
}

func (f *file) resource(base string) map[string]any {
	sum := sha256.Sum256(f.Data)
	t := f.Created.UTC().Format(time.RFC3339Nano)
	return map[string]any{
		"name": f.Name, "displayName": f.DisplayName, "mimeType": f.MIMEType,
		"sizeBytes": strconv.Itoa(len(f.Data)), "createTime": t, "updateTime": t,
		"expirationTime": f.Created.Add(48 * time.Hour).UTC().Format(time.RFC3339Nano),
		"sha256Hash":     base64.StdEncoding.EncodeToString(sum[:]),
		"uri":            base + "/v1beta/" + f.Name, "downloadUri": base + "/v1beta/" + f.Name + ":download?alt=media",
		"state": "ACTIVE", "source": "UPLOADED",
	}
}

// upload answers the resumable upload protocol the SDK speaks: a start
// command (JSON metadata) answered with X-Goog-Upload-Url, then chunks sent
// there with "upload" and, last, "upload, finalize", answered with the file.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request, body []byte) {
	base := "http://" + r.Host
	cmd := r.Header.Get("X-Goog-Upload-Command")
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	if id := r.URL.Query().Get("upload_id"); id != "" {
		f, ok := h.res.uploads[id]
		if !ok {
			newAPIError(404, "Upload session not found.").write(w)
			return
		}
		if off, err := strconv.Atoi(r.Header.Get("X-Goog-Upload-Offset")); err != nil || off != len(f.Data) {
			badRequest("X-Goog-Upload-Offset does not match the bytes received.").write(w)
			return
		}
		f.Data = append(f.Data, body...)
		if !strings.Contains(cmd, "finalize") {
			w.Header().Set("X-Goog-Upload-Status", "active")
			writeJSON(w, map[string]any{})
			return
		}
		delete(h.res.uploads, id)
		h.res.files[f.Name] = f
		w.Header().Set("X-Goog-Upload-Status", "final")
		writeJSON(w, map[string]any{"file": f.resource(base)})
		return
	}
	if cmd != "start" || r.Header.Get("X-Goog-Upload-Protocol") != "resumable" {
		badRequest("Expected a resumable upload start command.").write(w)
		return
	}
	var req struct {
		File struct {
			Name        string `json:"name"`
			DisplayName string `json:"displayName"`
			MIMEType    string `json:"mimeType"`
		} `json:"file"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		badRequest("Invalid JSON payload received. " + err.Error()).write(w)
		return
	}
	f := &file{Name: req.File.Name, DisplayName: req.File.DisplayName, MIMEType: req.File.MIMEType, Created: h.res.now()}
	if f.MIMEType == "" {
		f.MIMEType = r.Header.Get("X-Goog-Upload-Header-Content-Type")
	}
	if f.Name == "" {
		f.Name = "files/" + h.res.id("file")
	}
	id := h.res.id("upload")
	h.res.uploads[id] = f
	w.Header().Set("X-Goog-Upload-Url", base+"/upload/v1beta/files?upload_id="+id)
	w.Header().Set("X-Goog-Upload-Status", "active")
	writeJSON(w, map[string]any{})
}

func (h *Handler) getFile(w http.ResponseWriter, name string, download bool) {
	h.res.mu.Lock()
	f, ok := h.res.files[name]
	h.res.mu.Unlock()
	if !ok {
		newAPIError(404, "File "+name+" not found.").write(w)
		return
	}
	if download {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(f.Data)
		return
	}
	writeJSON(w, f.resource("http://"+w.Header().Get("Host")))
}

// Files lists the stored files' names, sorted.
func (h *Handler) Files() []string {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	var names []string
	for n := range h.res.files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// File returns a stored file's bytes.
func (h *Handler) File(name string) ([]byte, bool) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	f, ok := h.res.files[name]
	if !ok {
		return nil, false
	}
	return f.Data, true
}
