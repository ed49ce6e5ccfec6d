package edxml

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"path"
	"strings"
)

// mediaTypes are the types Write declares for file extensions: a fixed
// table, so that output does not depend on the machine's MIME database.
var mediaTypes = map[string]string{
	".pdf":  "application/pdf",
	".doc":  "application/msword",
	".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".xls":  "application/vnd.ms-excel",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".ppt":  "application/vnd.ms-powerpoint",
	".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
	".odt":  "application/vnd.oasis.opendocument.text",
	".ods":  "application/vnd.oasis.opendocument.spreadsheet",
	".odp":  "application/vnd.oasis.opendocument.presentation",
	".rtf":  "application/rtf",
	".txt":  "text/plain",
	".csv":  "text/csv",
	".xml":  "application/xml",
	".json": "application/json",
	".html": "text/html",
	".htm":  "text/html",
	".zip":  "application/zip",
	".rar":  "application/vnd.rar",
	".7z":   "application/x-7z-compressed",
	".jpg":  "image/jpeg",
	".jpeg": "image/jpeg",
	".png":  "image/png",
	".gif":  "image/gif",
	".tif":  "image/tiff",
	".tiff": "image/tiff",
	".p7s":  "application/pkcs7-signature",
	".sig":  "application/pkcs7-signature",
}

// mediaTypeOf returns the type for a file name's extension.
func mediaTypeOf(name string) string {
	if t, ok := mediaTypes[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return "application/octet-stream"
}

// zipFormats are file formats that are ZIP archives themselves.
var zipFormats = map[string]bool{
	".docx": true, ".xlsx": true, ".pptx": true, ".odt": true, ".ods": true, ".odp": true,
	".zip": true, ".jar": true, ".epub": true, ".xps": true, ".oxps": true, ".ofd": true,
}

// sniff returns the media type of an attachment's first bytes, and whether
// the sender zipped it: a ZIP archive in place of a file that is not itself
// a ZIP format, or a ZIP format file whose archive holds the file by name.
func sniff(head []byte, name, declared string) (detected string, zipped bool) {
	ext := strings.ToLower(path.Ext(name))
	switch {
	case bytes.HasPrefix(head, []byte("%PDF-")):
		return "application/pdf", false
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		first := zipFirstName(head)
		if zipFormats[ext] && (first == "" || !strings.EqualFold(path.Ext(first), ext)) {
			return mediaTypeOf(name), false
		}
		return "application/zip", ext != ".zip"
	case bytes.HasPrefix(head, []byte("\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")):
		switch ext {
		case ".doc", ".xls", ".ppt":
			return mediaTypeOf(name), false
		}
		return "application/x-ole-storage", false
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png", false
	case bytes.HasPrefix(head, []byte("\xFF\xD8\xFF")):
		return "image/jpeg", false
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return "image/gif", false
	case bytes.HasPrefix(head, []byte("II*\x00")), bytes.HasPrefix(head, []byte("MM\x00*")):
		return "image/tiff", false
	case bytes.HasPrefix(head, []byte("Rar!\x1a\x07")):
		return "application/vnd.rar", false
	case bytes.HasPrefix(head, []byte("7z\xBC\xAF\x27\x1C")):
		return "application/x-7z-compressed", false
	case bytes.HasPrefix(head, []byte("{\\rtf")):
		return "application/rtf", false
	case bytes.HasPrefix(head, []byte("<?xml")):
		return "application/xml", false
	case len(head) == 0:
		return "application/octet-stream", false
	}
	t := http.DetectContentType(head)
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = t[:i]
	}
	return t, false
}

// zipFirstName returns the name of a ZIP archive's first entry, from its
// local file header.
func zipFirstName(b []byte) string {
	if len(b) < 30 || !bytes.HasPrefix(b, []byte("PK\x03\x04")) {
		return ""
	}
	n := int(binary.LittleEndian.Uint16(b[26:28]))
	if 30+n > len(b) {
		return ""
	}
	return string(b[30 : 30+n])
}
