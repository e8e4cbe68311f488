package export

import (
	"strings"
	"time"

	"timestore/internal/catalog"
	"timestore/internal/storage"
)

// ManifestFormat identifies the layout of _manifest.json; it changes only
// if a field changes meaning.
const ManifestFormat = "timestore-export/1"

// Manifest is the content of a window's _manifest.json, written after the
// window's data files and describing exactly the files of the current
// version. Readers that need a consistent view of a window read the files
// it lists rather than every part-*.parquet under the window's prefix.
type Manifest struct {
	// Format is ManifestFormat.
	Format  string `json:"format"`
	Dataset string `json:"dataset"`
	// Window is "day" or "month"; the window is [WindowStart, WindowEnd)
	// and WindowLabel is its label in keys (window=LABEL).
	Window      string    `json:"window"`
	WindowLabel string    `json:"window_label"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// ExportVersion is the window's export version (from 1); a version
	// keeps every file of the previous one and may add files.
	ExportVersion int `json:"export_version"`
	// PreviousVersion is the version this one supersedes (0: none).
	PreviousVersion int `json:"previous_version"`
	// ExportID is the id of the version's record in timestore's catalog
	// (`timestore exports list`).
	ExportID int64 `json:"export_id"`
	// ManifestVersion is the timestore manifest version the export read.
	ManifestVersion int64 `json:"manifest_version"`
	// CreatedAt is when the version was written.
	CreatedAt time.Time `json:"created_at"`
	// TimeColumn is the column the files are sorted by.
	TimeColumn string `json:"time_column"`
	// Schema lists the columns in file order.
	Schema []ManifestColumn `json:"schema"`
	// Parquet describes how the files are encoded.
	Parquet ManifestParquet `json:"parquet"`
	// Files are the data files, in order.
	Files []ManifestFile `json:"files"`
	// Rows and Bytes sum the files; TimeMin and TimeMax are the range of
	// the time column over them (absent when there is no row).
	Rows    int64      `json:"rows"`
	Bytes   int64      `json:"bytes"`
	TimeMin *time.Time `json:"time_min,omitempty"`
	TimeMax *time.Time `json:"time_max,omitempty"`
	// Partitions are the ids of the timestore partitions whose rows in the
	// window the files hold (for audits; cumulative over versions).
	Partitions []int64 `json:"partitions"`
}

// ManifestColumn is one column of the files.
type ManifestColumn struct {
	Name string `json:"name"`
	// Type is the timestore type (timestamp, timestamptz, bigint, integer,
	// double, varchar, boolean).
	Type string `json:"type"`
	// Parquet is the column's Parquet physical and logical type.
	Parquet string `json:"parquet"`
}

// ManifestParquet describes the encoding of the files.
type ManifestParquet struct {
	FormatVersion string `json:"format_version"`
	Compression   string `json:"compression"`
	SortedBy      string `json:"sorted_by"`
	// MaxFileBytes is the size files are kept at or under (a file holding a
	// single row may exceed it).
	MaxFileBytes int64 `json:"max_file_bytes"`
}

// ManifestFile is one data file.
type ManifestFile struct {
	// Key is the object's key; Name its name within the window's directory.
	Key  string `json:"key"`
	Name string `json:"name"`
	Rows int64  `json:"rows"`
	// Bytes is the object's size; SHA256 the hex SHA-256 of its bytes.
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// TimeMin and TimeMax are the range of the time column in the file.
	TimeMin time.Time `json:"time_min"`
	TimeMax time.Time `json:"time_max"`
	// ExportVersion is the version that wrote the file.
	ExportVersion int `json:"export_version"`
}

// parquetTypes are the Parquet types DuckDB writes for timestore's column
// types.
var parquetTypes = map[string]string{
	catalog.TypeTimestamp:   "INT64 TIMESTAMP(MICROS, isAdjustedToUTC=false)",
	catalog.TypeTimestampTZ: "INT64 TIMESTAMP(MICROS, isAdjustedToUTC=true)",
	catalog.TypeBigint:      "INT64",
	catalog.TypeInteger:     "INT32",
	catalog.TypeDouble:      "DOUBLE",
	catalog.TypeVarchar:     "BYTE_ARRAY STRING",
	catalog.TypeBoolean:     "BOOLEAN",
}

// newManifest describes the version of a window of ds that rec records, holding files.
func newManifest(ds catalog.Dataset, rec catalog.Export, prevVersion int, files []catalog.ExportFile, maxFileBytes int64, created time.Time) Manifest {
	m := Manifest{
		Format: ManifestFormat, Dataset: ds.Name,
		Window: rec.Window, WindowLabel: rec.WindowLabel, WindowStart: rec.WindowStart, WindowEnd: rec.WindowEnd,
		ExportVersion: rec.Version, PreviousVersion: prevVersion, ExportID: rec.ID, ManifestVersion: rec.ManifestVersion,
		CreatedAt: created.UTC(), TimeColumn: ds.TimeColumn,
		Parquet:    ManifestParquet{FormatVersion: "1.0", Compression: "zstd", SortedBy: ds.TimeColumn, MaxFileBytes: maxFileBytes},
		Files:      make([]ManifestFile, len(files)),
		Partitions: rec.PartitionIDs,
	}
	for _, c := range ds.Columns {
		m.Schema = append(m.Schema, ManifestColumn{Name: c.Name, Type: c.Type, Parquet: parquetTypes[c.Type]})
	}
	for i, f := range files {
		m.Files[i] = ManifestFile{
			Key: f.Key, Name: f.Key[strings.LastIndexByte(f.Key, '/')+1:], Rows: f.Rows, Bytes: f.Bytes,
			SHA256: strings.TrimPrefix(f.Checksum, storage.ChecksumPrefix), TimeMin: f.TimeMin, TimeMax: f.TimeMax,
			ExportVersion: f.Version,
		}
		m.Rows += f.Rows
		m.Bytes += f.Bytes
		if m.TimeMin == nil || f.TimeMin.Before(*m.TimeMin) {
			t := f.TimeMin
			m.TimeMin = &t
		}
		if m.TimeMax == nil || f.TimeMax.After(*m.TimeMax) {
			t := f.TimeMax
			m.TimeMax = &t
		}
	}
	return m
}
